"""``spingpu devices``: sample junction pairs of a model, write their curves, plot and summarise.

Each sample is one neuron (a pair of junctions A and B) on a chip of its own, so chip, neuron and
pair spreads all show: sample k is network k, layer 0, unit 0 of the seeded hierarchy, exactly as
training samples it.

Before anything is computed: an existing ``--csv`` or ``--plot`` file is refused unless
``--overwrite``; samples x points that do not fit in the available memory are refused with the
largest counts that do (:func:`memory_needed`). After the curves are computed, points beyond a
junction's own table (the ``tabulated`` curve's currents times the junction's i_scale,
``macrospin``'s ``table_i_min`` to ``table_i_max``) are warned of once, with their count
(:class:`~spingpu.devices.tabulated.ExtrapolationWarning`): there the curve is continued linearly.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, check_range, count_text
from ..outputs import size_text
from .options import MODEL_HELP, add_spread_options, integer, named_as_options, params_dict, run_model_file_option

MAX_SAMPLES = 100_000
MAX_POINTS = 1_000_000
MAX_CURRENT = 1.0  # A: far beyond any junction's, and small enough for every model's arithmetic
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def add_parser(sub):
    p = sub.add_parser("devices", help="sample junction pairs and show their I-V spread",
                       description="Sample N neurons (junction pairs A/B) of a device model with "
                                   "variability; write their V(I) and dV/dI, plot them and print the spread.")
    p.add_argument("--model", default="stt_compact", help=MODEL_HELP)
    p.add_argument("--model-file", metavar="FILE.py",
                   help="a Python file whose spingpu.register_model calls make models --model may name")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="nominal parameter value in SI units (repeatable; vectors as x,y,z)")
    p.add_argument("--iv-csv", metavar="FILE", help="measured curve for the tabulated model (current A, voltage V)")
    p.add_argument("--samples", type=integer, default=16, help="neurons (pairs) to sample (default 16)")
    add_spread_options(p)
    p.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    p.add_argument("--i-min", type=float, default=-400e-6, help="lowest current in A (default -400e-6)")
    p.add_argument("--i-max", type=float, default=400e-6, help="highest current in A (default 400e-6)")
    p.add_argument("--points", type=integer, default=201, help="currents on the grid (default 201)")
    p.add_argument("--csv", metavar="OUT.csv", help="write sample,member,current,voltage,dvdi (SI units)")
    p.add_argument("--plot", metavar="OUT.png", help="plot V(I) and dV/dI of the nominal and sampled devices "
                                                   "(.png, or .pdf or .svg for a paper's figure)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv or --plot file")
    p.set_defaults(run=run)


def run(args):
    from ..devices import Variability, get_model, junction_curves, sample_layer
    from ..outputs import check_not_inputs, check_writable, staged_files
    from ..signals import deferred_interrupts

    # Validate everything before computing or writing anything.
    samples = check_range("samples", args.samples, 1, MAX_SAMPLES, integer=True)
    points = check_range("points", args.points, 2, MAX_POINTS, integer=True)
    i_min = check_range("i-min", args.i_min, -MAX_CURRENT, MAX_CURRENT, unit="A")
    i_max = check_range("i-max", args.i_max, -MAX_CURRENT, MAX_CURRENT, unit="A")
    if not i_min < i_max:
        raise ConfigError("i-min", f"{i_min} A must be below i-max ({i_max} A)")
    with named_as_options():
        variability = Variability(sigma_chip=args.sigma_chip, sigma_d2d=args.sigma_d2d, sigma_pair=args.sigma_pair)
    run_model_file_option(args.model_file, args.model, "model")
    model = get_model(args.model, iv_csv=args.iv_csv, **params_dict(args.param))
    if args.overwrite and args.csv is None and args.plot is None:
        raise ConfigError("overwrite", "has no effect without --csv or --plot; give one, or remove --overwrite")
    check_not_inputs({"csv": args.csv, "plot": args.plot}, [args.iv_csv])  # first: never an input, --overwrite or not
    if args.plot is not None and args.plot.strip() and Path(args.plot).suffix.lower() not in PLOT_FORMATS:
        raise ConfigError("plot", f"{args.plot} must end in {', '.join(PLOT_FORMATS[:-1])} or {PLOT_FORMATS[-1]}")
    if args.csv is not None and args.csv.strip() and Path(args.csv).suffix.lower() != ".csv":  # not a .nc by mistake
        raise ConfigError("csv", f"{args.csv} must end in .csv")
    csv_path = check_writable("csv", args.csv, overwrite=args.overwrite) if args.csv is not None else None
    png_path = check_writable("plot", args.plot, overwrite=args.overwrite) if args.plot is not None else None
    check_memory(model, samples, points, csv=csv_path is not None, plot=png_path is not None)

    start = time.perf_counter()
    current = current_grid(i_min, i_max, points)
    with deferred_interrupts():  # sampling compiles: a stop inside Numba's compiler breaks it (spingpu.signals)
        params = sample_layer(model, variability, args.seed, np.arange(samples), layer=0, n_units=1)[:, 0]
        curves = junction_curves(model, params, args.seed, progress=True)
        v_nom, d_nom = model.iv(current)
        v, d = curves(current)  # (samples, 2, points)
        _warn_extrapolation(model, current, model.beyond_table(current), curves.beyond_table(current))
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(d))):
        raise ConfigError("param", "the model gives non-finite voltages for these parameters and currents")

    targets = [p for p in (csv_path, png_path) if p is not None]
    fields = [name for name, p in (("csv", csv_path), ("plot", png_path)) if p is not None]
    with staged_files(*targets, fields=fields, overwrite=args.overwrite) as temps:
        staged = dict(zip(targets, temps))
        if csv_path is not None:
            _write_csv(staged[csv_path], current, v_nom, d_nom, v, d)
        if png_path is not None:
            _write_plot(staged[png_path], model, variability, current, v_nom, d_nom, v, d,
                        png_path.suffix.lower()[1:])
    seconds = time.perf_counter() - start

    print(f"model {model.name}: " + ", ".join(
        f"{p.name}={p.nominal:.4g}{'' if p.unit == '1' else ' ' + p.unit}" for p in model.parameters))
    if model.settings_values:
        units = model.settings_units
        print("settings: " + ", ".join(f"{k}={v}{' ' + units[k] if k in units else ''}"
                                       for k, v in model.settings_values.items()))
    print(f"{count_text(samples, 'pair')}, spreads chip {variability.sigma_chip:g}, d2d {variability.sigma_d2d:g}, "
          f"pair {variability.sigma_pair:g}, seed {args.seed}; {points} currents from {i_min * 1e6:g} uA to "
          f"{i_max * 1e6:g} uA" + ("" if points <= TABLE_ROWS else f"; the table below shows {TABLE_ROWS} of them"))
    _print_spread(current, d_nom, d)
    for label, path in (("csv", csv_path), ("plot", png_path)):
        if path is not None:
            print(f"wrote {label}: {path}")
    print(f"done in {seconds:.2f} s")


# Bytes the command holds per (sample, current), counted from the arrays it allocates (a sample is
# a pair of junctions; tracemalloc agrees to within 1 %):
CURVE_BYTES = 32  # the pair's V and dV/dI, float64: kept from their evaluation to the end
CSV_BYTES = 72  # _write_csv's columns: 2 x (sample int64, member <U1, current, voltage, dvdi float64)
PLOT_BYTES = 176  # _write_plot: 2 x (the V line's (M, 2) points and their transformed copy, the dV/dI
# line's scaled copy, points and transformed copy), and 32 more while drawing


def memory_needed(model, samples, points, csv=False, plot=False):
    """(total, per sample, per current, per sample and current) bytes that ``spingpu devices``
    needs for ``samples`` pairs at ``points`` currents, at the largest of its stages: evaluating
    the curves (:meth:`DeviceModel.iv` makes the pairs' currents and kernel parameter rows, then V
    and dV/dI: 16 (3 + kernel width) bytes per sample and current), writing the CSV (``csv``),
    drawing the plot (``plot``)."""
    per_both = max(16 * (3 + model.kernel_width), CURVE_BYTES + (CSV_BYTES if csv else 0),
                   CURVE_BYTES + (PLOT_BYTES if plot else 0))
    # per junction: its parameter rows (drawn, bound) and, for a model tabulated per junction
    # (macrospin), per knot of its table: the LLGS resistance and magnetisation (4 float64), V and
    # the (I, V, dV/dI) table (4), PCHIP's coefficients and its derivative's (7) and at least 3 of
    # its working arrays: 18 float64 = 6 times the table's 3
    per_sample = 2 * (3 * 8 * len(model.parameters) + 6 * model.table_bytes_per_junction)
    per_point = 3 * 8  # the grid, the nominal V and dV/dI
    return samples * per_sample + points * per_point + samples * points * per_both, per_sample, per_point, per_both


def check_memory(model, samples, points, csv=False, plot=False):
    """ConfigError naming ``samples/points`` when the command cannot fit in the available memory
    (:func:`spingpu.training.trainer.available_memory`), with the largest counts that fit."""
    from ..training import trainer

    need, per_sample, per_point, per_both = memory_needed(model, samples, points, csv, plot)
    free = trainer.available_memory()
    if free is None or need <= free:
        return
    fits = []
    max_points = (free - samples * per_sample) // (per_point + samples * per_both)
    if max_points >= 2:
        fits.append(f"at most {max_points} points with {count_text(samples, 'sample')}")
    max_samples = (free - points * per_point) // (per_sample + points * per_both)
    if max_samples >= 1:
        fits.append(f"at most {count_text(max_samples, 'sample')} with {points} points")
    smallest = memory_needed(model, 1, 2, csv, plot)[0]
    allowed = " or ".join(fits) if fits else f"nothing (1 sample at 2 points needs {size_text(smallest)})"
    raise ConfigError("samples/points", f"{count_text(samples, 'sample')} x {points} points need at least "
                                        f"{size_text(need)} of memory, and {size_text(free)} is available; "
                                        f"allowed here: {allowed}")


def _warn_extrapolation(model, current, nominal_beyond, sampled_beyond):
    """ExtrapolationWarning (once) when some of the curves' ``current`` (A) points lie beyond
    their junction's table: ``nominal_beyond`` (points,) of the nominal junction,
    ``sampled_beyond`` (samples, 2, points) of the sampled ones, each beyond its own table."""
    import warnings

    from ..devices.tabulated import table_current_range
    from ..errors import ExtrapolationWarning

    table = table_current_range(model)
    if table is None or not (nominal_beyond.any() or sampled_beyond.any()):
        return
    lo, hi = table
    beyond_at = current[nominal_beyond | sampled_beyond.any(axis=(0, 1))]
    below, above = beyond_at.min() < 0.5 * (lo + hi), beyond_at.max() > 0.5 * (lo + hi)
    i_min, i_max = current[0], current[-1]
    if below and above:
        field, asked = "i-min/i-max", f"currents from {i_min:g} A to {i_max:g} A"
    elif below:
        field, asked = "i-min", f"currents down to {i_min:g} A"
    else:
        field, asked = "i-max", f"currents up to {i_max:g} A"
    whose = f"the {model.name} table's" if model.table is None else "the measured curve's"
    hint = "; widen it with --param table_i_min=... --param table_i_max=..." if model.table is None else ""
    count = f"{int(sampled_beyond.sum())} of {sampled_beyond.size} points of the sampled junctions' curves"
    if nominal_beyond.any():
        where = f"go beyond {whose} range, {lo:g} A to {hi:g} A ({count} lie beyond their own)"
    else:  # the sampled tables reach i_scale times the nominal one's currents: some end earlier
        where = (f"lie within {whose} range, {lo:g} A to {hi:g} A, but {count} lie beyond their own tables "
                 "(each reaches i_scale times its currents)")
    warnings.warn(f"{field}: {asked} {where}; there V(I) is the end tangent continued linearly (dV/dI constant)"
                  f"{hint}", ExtrapolationWarning, stacklevel=3)


def _write_csv(path, current, v_nom, d_nom, v, d):
    n, _, m = v.shape
    sample = np.concatenate([np.full(m, -1), np.repeat(np.arange(n), 2 * m)])
    member = np.concatenate([np.full(m, "A"), np.tile(np.repeat(np.array(["A", "B"]), m), n)])
    cur = np.concatenate([current, np.tile(current, 2 * n)])
    volt = np.concatenate([v_nom, v.reshape(-1)])
    dvdi = np.concatenate([d_nom, d.reshape(-1)])
    with open(path, "w") as handle:  # floats as NumPy's str: the shortest text that reads back exactly
        handle.write("sample,member,current,voltage,dvdi\n")
        handle.writelines(f"{s},{m},{i},{v},{d}\n" for s, m, i, v, d in zip(sample, member, cur, volt, dvdi))


def _write_plot(path, model, variability, current, v_nom, d_nom, v, d, file_format="png"):
    from ..plot import iv_spread_figure

    title = (f"{model.name}: nominal and {len(v)} sampled pairs "
             f"(spread chip {variability.sigma_chip:g}, d2d {variability.sigma_d2d:g}, pair {variability.sigma_pair:g})")
    fig = iv_spread_figure(current, v_nom, d_nom, v, d, title=title)
    fig.savefig(path, dpi=120, format=file_format)


PLOT_FORMATS = (".png", ".pdf", ".svg")  # --plot's file types (matplotlib's writers)
TABLE_ROWS = 5  # currents of the grid the printed table shows at most, evenly spread over it


def _print_spread(current, d_nom, d):
    """The table of dV/dI quantiles and pair mismatch at :data:`TABLE_ROWS` currents of the grid
    ``current`` (its ends included), from the nominal ``d_nom`` (points,) and the sampled ``d``
    (samples, 2, points) dV/dI."""
    rows = np.unique(np.round(np.linspace(0, current.size - 1, min(current.size, TABLE_ROWS))).astype(int))
    probe, d_nom, d = current[rows], d_nom[rows], d[..., rows]
    q = np.quantile(d.reshape(-1, probe.size), QUANTILES, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # a junction of dV/dI = 0 has no relative mismatch: n/a
        mismatch = np.median(np.abs(d[:, 1] - d[:, 0]) / np.abs(d[:, 0]), axis=0)
    header = "current (uA)  nominal   " + "  ".join(f"q{int(100 * x):02d}".rjust(7) for x in QUANTILES)
    print("dV/dI spread over all junctions (ohm); pair mismatch = median |dV/dI_B - dV/dI_A| / |dV/dI_A|")
    print(header + "  pair mismatch")
    for k, i in enumerate(probe):
        cells = "  ".join(f"{x:7.1f}" for x in q[:, k])
        pair = f"{100 * mismatch[k]:9.2f} %" if np.isfinite(mismatch[k]) else f"{'n/a':>11}"
        print(f"{i * 1e6:12.1f}  {d_nom[k]:7.1f}   {cells}  {pair}")


def current_grid(i_min, i_max, points):
    """``points`` currents (A) from ``i_min`` to ``i_max``, evenly spaced and rounded to 12 significant
    digits of the larger end: linspace's rounding would write -5.4e-20 for 0 and -0.00039600000000000003
    for -396 uA into the CSV."""
    grid = np.linspace(i_min, i_max, points)
    largest = max(abs(i_min), abs(i_max))
    if largest == 0.0:
        return grid
    return np.round(grid, 12 - int(np.floor(np.log10(largest)))) + 0.0  # + 0.0: no -0.0
