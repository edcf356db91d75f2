"""``spingpu devices``: sample junction pairs of a model, write their curves, plot and summarise.

Each sample is one neuron (a pair of junctions A and B) on a chip of its own, so chip, neuron and
pair spreads all show: sample k is network k, layer 0, unit 0 of the seeded hierarchy, exactly as
training samples it.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError, check_range
from .options import integer, named_as_options, params_dict

MAX_SAMPLES = 100_000
MAX_POINTS = 1_000_000
MAX_CURRENT = 1.0  # A: far beyond any junction's, and small enough for every model's arithmetic
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def add_parser(sub):
    p = sub.add_parser("devices", help="sample junction pairs and show their I-V spread",
                       description="Sample N neurons (junction pairs A/B) of a device model with "
                                   "variability; write their V(I) and dV/dI, plot them and print the spread.")
    p.add_argument("--model", default="stt_compact", help="device model (default stt_compact)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="nominal parameter value in SI units (repeatable; vectors as x,y,z)")
    p.add_argument("--iv-csv", metavar="FILE", help="measured curve for the tabulated model (current A, voltage V)")
    p.add_argument("--samples", type=integer, default=16, help="neurons (pairs) to sample (default 16)")
    p.add_argument("--sigma-d2d", type=float, default=0.0, help="device-to-device (neuron) spread (default 0)")
    p.add_argument("--sigma-pair", type=float, default=0.0, help="mismatch within a pair (default 0)")
    p.add_argument("--sigma-chip", type=float, default=0.0, help="chip-to-chip spread (default 0)")
    p.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    p.add_argument("--i-min", type=float, default=-400e-6, help="lowest current in A (default -400e-6)")
    p.add_argument("--i-max", type=float, default=400e-6, help="highest current in A (default 400e-6)")
    p.add_argument("--points", type=integer, default=201, help="currents on the grid (default 201)")
    p.add_argument("--csv", metavar="OUT.csv", help="write sample,member,current,voltage,dvdi (SI units)")
    p.add_argument("--plot", metavar="OUT.png", help="plot V(I) and dV/dI of the nominal and sampled devices")
    p.set_defaults(run=run)


def run(args):
    from ..devices import Variability, get_model, junction_curves, sample_layer
    from ..outputs import check_not_inputs, check_writable, staged_files

    # Validate everything before computing or writing anything.
    samples = check_range("samples", args.samples, 1, MAX_SAMPLES, integer=True)
    points = check_range("points", args.points, 2, MAX_POINTS, integer=True)
    i_min = check_range("i-min", args.i_min, -MAX_CURRENT, MAX_CURRENT)
    i_max = check_range("i-max", args.i_max, -MAX_CURRENT, MAX_CURRENT)
    if not i_min < i_max:
        raise ConfigError("i-min", f"{i_min} must be below i-max ({i_max})")
    with named_as_options():
        variability = Variability(sigma_chip=args.sigma_chip, sigma_d2d=args.sigma_d2d, sigma_pair=args.sigma_pair)
    model = get_model(args.model, iv_csv=args.iv_csv, **params_dict(args.param))
    csv_path = check_writable("csv", args.csv) if args.csv is not None else None
    png_path = check_writable("plot", args.plot) if args.plot is not None else None
    if png_path is not None and png_path.suffix.lower() != ".png":
        raise ConfigError("plot", f"{png_path} must end in .png")
    check_not_inputs({"csv": csv_path, "plot": png_path}, [args.iv_csv])

    start = time.perf_counter()
    current = np.linspace(i_min, i_max, points)
    params = sample_layer(model, variability, args.seed, np.arange(samples), layer=0, n_units=1)[:, 0]
    curves = junction_curves(model, params, args.seed)
    v_nom, d_nom = model.iv(current)
    v, d = curves(current)  # (samples, 2, points)
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(d))):
        raise ConfigError("param", "the model gives non-finite voltages for these parameters and currents")

    targets = [p for p in (csv_path, png_path) if p is not None]
    fields = [name for name, p in (("csv", csv_path), ("plot", png_path)) if p is not None]
    with staged_files(*targets, fields=fields) as temps:
        staged = dict(zip(targets, temps))
        if csv_path is not None:
            _write_csv(staged[csv_path], current, v_nom, d_nom, v, d)
        if png_path is not None:
            _write_plot(staged[png_path], model, variability, current, v_nom, d_nom, v, d)
    seconds = time.perf_counter() - start

    print(f"model {model.name}: " + ", ".join(
        f"{p.name}={p.nominal:.4g} {p.unit}" for p in model.parameters))
    if model.settings_values:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in model.settings_values.items()))
    print(f"{samples} pairs, spreads chip {variability.sigma_chip:g}, d2d {variability.sigma_d2d:g}, "
          f"pair {variability.sigma_pair:g}, seed {args.seed}; {points} currents from {i_min:g} A to {i_max:g} A")
    _print_spread(model, curves, i_min, i_max)
    for label, path in (("csv", csv_path), ("plot", png_path)):
        if path is not None:
            print(f"wrote {label}: {path}")
    print(f"done in {seconds:.2f} s")


def _write_csv(path, current, v_nom, d_nom, v, d):
    n, _, m = v.shape
    sample = np.concatenate([np.full(m, -1), np.repeat(np.arange(n), 2 * m)])
    member = np.concatenate([np.full(m, "A"), np.tile(np.repeat(np.array(["A", "B"]), m), n)])
    cur = np.concatenate([current, np.tile(current, 2 * n)])
    volt = np.concatenate([v_nom, v.reshape(-1)])
    dvdi = np.concatenate([d_nom, d.reshape(-1)])
    with open(path, "w") as handle:
        handle.write("sample,member,current,voltage,dvdi\n")
        for row in zip(sample, member, cur, volt, dvdi):
            handle.write("%d,%s,%.17g,%.17g,%.17g\n" % row)


def _write_plot(path, model, variability, current, v_nom, d_nom, v, d):
    from ..plot import iv_spread_figure

    title = (f"{model.name}: nominal and {len(v)} sampled pairs "
             f"(spread chip {variability.sigma_chip:g}, d2d {variability.sigma_d2d:g}, pair {variability.sigma_pair:g})")
    fig = iv_spread_figure(current, v_nom, d_nom, v, d, title=title)
    fig.savefig(path, dpi=120, format="png")


def _print_spread(model, curves, i_min, i_max):
    probe = np.linspace(i_min, i_max, 5)
    _, d_nom = model.iv(probe)
    _, d = curves(probe)  # (samples, 2, 5)
    q = np.quantile(d.reshape(-1, probe.size), QUANTILES, axis=0)
    mismatch = np.median(np.abs(d[:, 1] - d[:, 0]) / np.abs(d[:, 0]), axis=0)
    header = "current (uA)  nominal   " + "  ".join(f"q{int(100 * x):02d}".rjust(7) for x in QUANTILES)
    print("dV/dI spread over all junctions (ohm); pair mismatch = median |dV/dI_B - dV/dI_A| / |dV/dI_A|")
    print(header + "  pair mismatch")
    for k, i in enumerate(probe):
        cells = "  ".join(f"{x:7.1f}" for x in q[:, k])
        print(f"{i * 1e6:12.1f}  {d_nom[k]:7.1f}   {cells}  {100 * mismatch[k]:9.2f} %")
