"""``spingpu train``: train N MTJ-pair networks on a dataset and summarise their accuracy."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, check_range, count_text
from ..signals import raise_if_stopped
from .options import MODEL_HELP, add_spread_options, integer, named_as_options, params_dict, run_model_file_option

YIELD_THRESHOLD = 0.9


def add_parser(sub):
    from ..devices import Readout
    from ..training import PairNeuron, TrainConfig

    N, R, C = PairNeuron, Readout, TrainConfig  # defaults shown in --help are the classes' own
    p = sub.add_parser("train", help="train many MTJ-pair networks at once",
                       description="Train N networks of one architecture, each with its own junctions and "
                                   "weights, and summarise the spread of their test accuracy.")
    p.add_argument("--dataset", default="iris", help="iris, digits, mnist or csv:PATH (default iris)")
    p.add_argument("--data-dir", help="folder holding MNIST (IDX files or mnist.npz); default $SPINGPU_DATA")
    p.add_argument("--hidden", type=integer, action="append", metavar="W", help="hidden layer width (repeat per layer; default 8)")
    p.add_argument("--networks", type=integer, default=100, help="networks to train (default 100)")
    p.add_argument("--epochs", type=integer, default=100, help="epochs (default 100)")
    p.add_argument("--batch-size", type=integer, help="mini-batch size (default: full batch)")
    p.add_argument("--grad", default="fd_forward", metavar="MODE",
                   help="fd_forward, fd_single, fd_symmetric, model, oracle, tanh, relu or sigmoid (default fd_forward)")
    p.add_argument("--delta-i", type=float, help=f"finite-difference step dI in A (default {N.delta_i:g})")
    p.add_argument("--i-bias", type=float, help=f"bias current in A (default {N.i_bias:g})")
    p.add_argument("--i-gain", type=float,
                   help=f"current per unit of pre-activation in A, I = i_bias + i_gain z (default {N.i_gain:g})")
    p.add_argument("--readout",
                   help=f"direct (V) or bridge (V - r_ref I) (default {N.readout})")
    p.add_argument("--r-ref", type=float, help=f"bridge reference resistance in ohm (default {N.r_ref:g})")
    p.add_argument("--v-scale", type=float,
                   help=f"activation per volt read, in 1/V (default {N.v_scale:g})")
    add_spread_options(p, default=None)  # None: not given (CONDITIONAL_OPTIONS)
    p.add_argument("--noise-model",
                   help=f"gaussian (std --read-noise) or johnson_shot (thermal and shot noise of the junction and "
                        f"bridge at --noise-temperature over --noise-bandwidth) (default {R.noise_model})")
    p.add_argument("--read-noise", type=float, help="gaussian read noise std in V (default 0)")
    p.add_argument("--noise-temperature", type=float,
                   help=f"temperature of the johnson_shot noise in K (default {R.temperature:g})")
    p.add_argument("--noise-bandwidth", type=float,
                   help=f"bandwidth of the johnson_shot noise in Hz (default {R.bandwidth:g})")
    p.add_argument("--adc-bits", type=integer, help="ADC bits over --adc-range (default 0: ideal)")
    p.add_argument("--adc-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="ADC input range in V, within +-1000 (default {:g} {:g})".format(*R.adc_range))
    p.add_argument("--dac-bits", type=integer,
                   help="bits of the DAC that sets each pair's current I, over --dac-range (default 0: ideal)")
    p.add_argument("--dac-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="DAC output range in A, within +-1 (default {:g} {:g})".format(*R.dac_range))
    p.add_argument("--optimizer", default="adam", help="sgd, momentum or adam (default adam)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--lr-schedule", default="constant", help="constant, step:EVERY:GAMMA, exp:GAMMA or cosine (default constant)")
    p.add_argument("--momentum", type=float,
                   help=f"momentum coefficient of --optimizer momentum (default {C.momentum:g})")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (default 0)")
    p.add_argument("--dtype", default=C.dtype,
                   help=f"float32 or float64 weights and activations of the batched and numpy engines; the fused "
                        f"engines (layers up to 64 wide) train in float64 whatever it says (default {C.dtype})")
    p.add_argument("--device-model", help=MODEL_HELP)
    p.add_argument("--model-file", metavar="FILE.py",
                   help="a Python file whose spingpu.register_model calls make models --device-model may name")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="nominal device parameter in SI units (repeatable; vectors as x,y,z)")
    p.add_argument("--iv-csv", metavar="FILE", help="measured curve for the tabulated model")
    p.add_argument("--backend", default="auto", help="auto, cpu, numpy or cuda (default auto)")
    p.add_argument("--seed", type=integer, default=0, help="random seed of the junctions, initial weights, batches "
                                                          "and noise, and of the data split unless --split-seed "
                                                          "(default 0)")
    p.add_argument("--split-seed", type=integer, help="seed of the data split (default: --seed), to keep one split "
                                                      "while drawing other chips")
    p.add_argument("--out", metavar="FILE.nc", help="write the results (xarray Dataset) as netCDF")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(run=run)


def build(args):
    """Dataset, TrainConfig, model and backend from parsed arguments (validated, nothing run)."""
    with named_as_options():
        return _build(args)


def _build(args):
    from ..backends import get_backend
    from ..datasets import load_dataset
    from ..devices import Readout, Variability, get_model
    from ..training import PairNeuron, Schedule, TrainConfig
    from ..training.config import DIGITAL_MODES, unmet_needs

    check_range("networks", args.networks, 1, 10**9, integer=True)
    if args.data_dir is not None and args.dataset.strip().lower() != "mnist":
        raise ConfigError("data-dir", f"only mnist reads --data-dir, and this run trains on {args.dataset!r}; "
                                      "remove --data-dir")
    if args.overwrite and args.out is None:
        raise ConfigError("overwrite", "has no effect without --out FILE.nc; give --out, or remove --overwrite")
    if args.grad in DIGITAL_MODES:  # before the model is built: its own errors would say less
        for option in (o for o, key in CONDITIONAL_OPTIONS.items() if key is None):
            if getattr(args, option.replace("-", "_")) is not None:
                raise _need_in_options("mtj", args, option)
    run_model_file_option(args.model_file, args.device_model or "stt_compact", "device-model")
    model = get_model(args.device_model or "stt_compact", iv_csv=args.iv_csv, **params_dict(args.param))
    readout = _given(args, noise_model="noise_model", read_noise="read_noise", temperature="noise_temperature",
                     bandwidth="noise_bandwidth", adc_bits="adc_bits", adc_range="adc_range", dac_bits="dac_bits",
                     dac_range="dac_range")
    for name in ("adc_range", "dac_range"):
        if name in readout:
            readout[name] = tuple(readout[name])
    config = TrainConfig(
        hidden=tuple(args.hidden or (8,)),
        grad_mode=args.grad,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        lr_schedule=Schedule.parse(args.lr_schedule),
        weight_decay=args.weight_decay,
        **_given(args, momentum="momentum"),
        neuron=PairNeuron(**_given(args, i_bias="i_bias", i_gain="i_gain", readout="readout", r_ref="r_ref",
                                   v_scale="v_scale", delta_i="delta_i")),
        variability=Variability(**_given(args, sigma_chip="sigma_chip", sigma_d2d="sigma_d2d",
                                         sigma_pair="sigma_pair")),
        readout=Readout(**readout),
        seed=args.seed,
        dtype=args.dtype,
    )
    for option, key in CONDITIONAL_OPTIONS.items():  # the rules are training.config's, worded for options
        unmet = unmet_needs(config, key) if key is not None else ()
        if getattr(args, option.replace("-", "_")) is not None and unmet:
            raise _need_in_options(unmet[0], args, option)
    backend = get_backend(args.backend)
    split_seed = args.seed if args.split_seed is None else args.split_seed
    try:
        dataset = load_dataset(args.dataset, seed=split_seed, data_dir=args.data_dir)
    except ConfigError as err:
        if err.field == "seed" and args.split_seed is not None:
            raise ConfigError("split-seed", err.problem) from None
        raise
    return dataset, config, model, backend


def _given(args, **option_of_field):
    """{field: value} of the options given (not None), keyed by the field each sets."""
    return {field: getattr(args, dest) for field, dest in option_of_field.items() if getattr(args, dest) is not None}


# Options that act only in some configurations (default None: given or not): those of the junctions,
# their drive and readout, and momentum, by the setting of training.config.CONDITIONAL_SETTINGS each
# sets; None for the device model's, which need junctions (an MTJ --grad)
CONDITIONAL_OPTIONS = {
    "delta-i": "neuron.delta_i", "i-bias": "neuron.i_bias", "i-gain": "neuron.i_gain", "readout": "neuron.readout",
    "r-ref": "neuron.r_ref", "v-scale": "neuron.v_scale", "sigma-d2d": "variability.sigma_d2d",
    "sigma-pair": "variability.sigma_pair", "sigma-chip": "variability.sigma_chip",
    "noise-model": "readout.noise_model", "read-noise": "readout.read_noise",
    "noise-temperature": "readout.temperature", "noise-bandwidth": "readout.bandwidth",
    "adc-bits": "readout.adc_bits", "adc-range": "readout.adc_range", "dac-bits": "readout.dac_bits",
    "dac-range": "readout.dac_range", "momentum": "training.momentum",
    "device-model": None, "model-file": None, "param": None, "iv-csv": None,
}


def _need_in_options(need, args, option):
    """``has no effect ...`` error of ``--option`` whose need (training.config's NEEDS) is unmet,
    worded for the options of spingpu train: why, what would meet it, or removing the option."""
    why, fix = {
        "mtj": (f"with --grad {args.grad} (a digital baseline has no junctions)",
                "give an MTJ --grad (fd_forward, fd_single, fd_symmetric, model, oracle)"),
        "dI": (f"with --grad {args.grad} (only fd_forward, fd_single and fd_symmetric take a step dI)",
               "give one of those"),
        "gaussian": ("without --noise-model gaussian (johnson_shot sets its own)", "give --noise-model gaussian"),
        "johnson_shot": ("without --noise-model johnson_shot", "give --noise-model johnson_shot"),
        "adc": ("without an ADC", "give --adc-bits N too"),
        "dac": ("without a DAC", "give --dac-bits N too"),
        "bridge": ("without --readout bridge", "give --readout bridge"),
        "momentum": ("without --optimizer momentum", "give --optimizer momentum"),
    }[need]
    return ConfigError(option, f"has no effect {why}; {fix}, or remove --{option}")


def run(args):
    from ..outputs import check_free_space, check_not_inputs, check_writable, staged_files
    from ..datasets import csv_path
    from ..training import train
    from ..training.trainer import check_inputs

    out = None
    if args.out is not None:
        if args.out.strip() and Path(args.out).suffix != ".nc":  # before "exists": an empty name says so there
            raise ConfigError("out", f"{args.out!r}: expected a file name ending in .nc (netCDF), such as results.nc")
        out = check_writable("out", args.out, overwrite=args.overwrite)
        check_not_inputs({"out": out}, [args.iv_csv, csv_path(args.dataset) or None])
    dataset, config, model, backend = build(args)
    check_inputs(dataset, config, n_networks=args.networks, model=model, backend=backend)  # memory, before the run
    if out is not None:
        from ..training.results import netcdf_nbytes

        check_free_space("out", out, netcdf_nbytes(args.networks, config.epochs))  # written at the end
    print(f"{args.networks} networks {dataset.n_features}-{'-'.join(map(str, config.hidden))}-{dataset.n_classes} "
          f"on {dataset.name} ({dataset.y_train.size} train / {dataset.y_val.size} val / {dataset.y_test.size} test), "
          f"grad {config.grad_mode}, backend {backend.name}")
    start = time.perf_counter()
    results = train(dataset, config, n_networks=args.networks, model=model, backend=backend, progress=True)
    seconds = time.perf_counter() - start
    raise_if_stopped()  # a Ctrl-C or SIGTERM during training writes nothing, even one Python could not raise
    print(summary(results, seconds))
    if out is not None:
        with staged_files(out, fields=("out",), overwrite=args.overwrite) as (tmp,):
            write_netcdf(results, tmp)
        print(f"wrote {out}")
    return 0


def write_netcdf(results, path):
    """``results`` to the netCDF4 file ``path`` (no 2 GiB limit per variable, as in netCDF3). The
    netCDF library reports a write the machine refused (a full disk, a file size limit) as a
    RuntimeError ("NetCDF: HDF error"): here an OSError naming ``path``, which staged_files says
    in one line."""
    try:
        results.to_netcdf(path, engine="netcdf4", format="NETCDF4")
    except RuntimeError as err:
        raise OSError(errno.EIO, f"the netCDF library failed to write it ({err}: a full disk or a file size "
                                 "limit?); the results were not saved", str(path)) from None


def summary(results, seconds):
    """Median (with its 95 % confidence interval), IQR and 5-95 % of test accuracy, yield with its
    95 % Clopper-Pearson interval, divergences, time and speed."""
    from ..stats import median_interval, percent_text, threshold_text, yield_hits, yield_interval

    acc = results.test_acc.values
    ok = acc[np.isfinite(acc)]
    lines = []
    if ok.size:
        q05, q25, q50, q75, q95 = np.quantile(ok, [0.05, 0.25, 0.5, 0.75, 0.95])
        lo, hi = median_interval(ok)
        pct = lambda x: percent_text(x, 2)  # noqa: E731
        ci = "n/a under 6 networks that did not diverge" if np.isnan(lo) else f"{pct(lo)}-{pct(hi)} %"
        over = "" if ok.size == acc.size else f" of the {count_text(ok.size, 'network')} that did not diverge"
        lines.append(f"test accuracy{over}: median {pct(q50)} % (95 % CI {ci}), IQR {pct(q25)}-"
                     f"{pct(q75)} %, 5-95 % {pct(q05)}-{pct(q95)} %")
    else:
        lines.append("test accuracy: every network diverged")
    hits = int(yield_hits(acc, YIELD_THRESHOLD))
    lo, hi = yield_interval(hits, acc.size)
    lines.append(f"yield (test accuracy >= {threshold_text(YIELD_THRESHOLD)} %): {percent_text(hits / acc.size)} % "
                 f"of {acc.size} networks (95 % CI {percent_text(lo)}-{percent_text(hi)} %); diverged: "
                 f"{int(results.diverged.sum())}")
    lines.append(f"time: {seconds:.1f} s ({results.attrs['compile_seconds']:.1f} s set-up and compilation); "
                 f"{results.attrs['network_epochs_per_second']:.4g} network-epochs/s in the training loop")
    return "\n".join(lines)
