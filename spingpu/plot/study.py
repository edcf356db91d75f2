"""Figures of a study's results (an xarray Dataset as stored by ``spingpu run``).

Every function takes the results Dataset and returns a matplotlib Figure (or None when the study
has nothing to show for it). Axes are found from the dims: every dim but ``network`` and ``epoch``
is a sweep axis; an axis whose values are strings (gradient mode, device model) is categorical and
gives one curve per value; numeric axes are x axes and heatmap axes. Where a figure shows fewer
axes than the study has, the networks of the remaining cells are pooled, and the title says so.
"""

from __future__ import annotations

import itertools
import json

import numpy as np

from ..stats import percent_text, results_threshold, threshold_text
from .style import axis_value_texts, engineering_formatter, set_suptitle

BAND_IQR = (0.25, 0.75)
BAND_90 = (0.05, 0.95)
YIELD_TITLE = "yield, 95 % Clopper-Pearson interval"
# sweep keys whose value 0 switches the part off (a converter of 0 bits: none): drawn apart, not as a resolution
OFF_AT_ZERO = {"readout.adc_bits": "no ADC", "readout.dac_bits": "no DAC"}
NOISE_SECTIONS = ("readout.", "variability.")  # the study tables whose axes the dI trade-off draws a curve per value of
LOG_SPAN = 20  # a list of positive values spanning this factor or more is drawn on a log axis
TICKED_VALUES = 7  # an axis of up to this many values spread apart has a tick at each (_ticks_at_values)


def sweep_axes(ds):
    return [d for d in ds.test_acc.dims if d not in ("network", "epoch")]


def finished(ds):
    """Boolean DataArray like ``test_acc`` without epoch: True for the networks whose task finished
    (all True for a Dataset without ``task_done``). Networks never trained are not failed chips."""
    if "task_done" in ds and "networks_per_task" in ds.attrs:
        from ..studies.store import finished_networks

        return finished_networks(ds).transpose(*ds.test_acc.dims)
    import xarray as xr

    return xr.ones_like(ds.test_acc, dtype=bool)


def _yield_pct(vals, done, threshold, axis):
    """Per cent of the finished networks (``done``) with accuracy (per cent) >= threshold; NaN
    where none finished. Diverged networks (NaN accuracy) count as failed."""
    from ..stats import yield_hits

    hits, count = yield_hits(vals, 100 * threshold, done, axis), np.sum(done, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, 100 * hits / np.maximum(count, 1), np.nan)


def _yield_interval_pct(vals, done, threshold, axis, chips=None):
    """(low, high) per cent: the 95 % Clopper-Pearson interval of :func:`_yield_pct`; where the
    values pool cells that share their chips, ``chips`` (the distinct networks behind each yield)
    makes it :func:`spingpu.stats.pooled_yield_interval`."""
    from ..stats import pooled_yield_interval, yield_hits

    hits, count = yield_hits(vals, 100 * threshold, done, axis), np.sum(done, axis=axis)
    chips = count if chips is None else chips
    pairs = [pooled_yield_interval(k, n, c) for k, n, c in zip(np.ravel(hits), np.ravel(count), np.ravel(chips))]
    lo, hi = (100 * np.reshape([p[i] for p in pairs], np.shape(hits)) for i in (0, 1))
    return lo, hi


def _chips(done, keep):
    """Networks (chips) with a finished result in any cell pooled at each point of the dims ``keep``."""
    pooled = [d for d in done.dims if d not in keep and d != "network"]
    return (done.any(pooled) if pooled else done).sum("network").transpose(*keep).values


def categorical_axes(ds):
    """The sweep axes of words with more than one value (an axis of one value is a constant:
    nothing to draw against it)."""
    return [d for d in sweep_axes(ds) if ds[d].dtype.kind in "OUS" and ds.sizes[d] > 1]


def numeric_axes(ds):
    """The sweep axes of numbers with more than one value."""
    return [d for d in sweep_axes(ds) if ds[d].dtype.kind not in "OUS" and ds.sizes[d] > 1]


def axis_label(ds, dim, with_units=True):
    """``finite-difference step dI (delta_i, A)``: what the axis is (:data:`KEY_NAMES
    <spingpu.studies.spec.KEY_NAMES>`, or the store's ``long_name`` where it is not the key),
    its dimension name, and its unit where it has one and ``with_units``; the name alone for an
    axis nothing describes."""
    from ..studies.spec import KEY_NAMES

    attrs = ds[dim].attrs
    key, long_name = attrs.get("sweep_key"), attrs.get("long_name")
    name = KEY_NAMES.get(key) or (long_name if isinstance(long_name, str) and long_name not in ("", key, dim)
                                  else None)
    units = _units(ds, dim) if with_units else ""
    inside = ", ".join([dim] * bool(name and name != dim) + [units] * bool(units and units != "1"))
    return f"{name or dim} ({inside})" if inside else dim


def _units(ds, dim):
    return ds[dim].attrs.get("units", "")


def value_texts(ds, dim):
    """The labels of the values of axis ``dim``, each told from the others (:func:`axis_value_texts`);
    ``no ADC`` for an ADC of 0 bits (OFF_AT_ZERO)."""
    values = np.ravel(ds[dim].values).tolist()  # a 0-d coordinate too (ds.sel(tmr0=2.0))
    texts = axis_value_texts(values, _units(ds, dim))
    off = OFF_AT_ZERO.get(ds[dim].attrs.get("sweep_key"))
    return [off if off and v == 0 else t for v, t in zip(values, texts)]


def _off_values(ds, dim):
    """Boolean mask of the values of ``dim`` that switch a part off (an ADC of 0 bits), or None."""
    if ds[dim].attrs.get("sweep_key") not in OFF_AT_ZERO:
        return None
    off = ds[dim].values == 0
    return off if off.any() else None


def _declared_spacing(ds, dim):
    """``logspace`` or ``linspace`` where the study gave the axis so ({logspace = [...]}), else None
    (a list of values, or a Dataset without the study's tables)."""
    try:
        data = json.loads(ds.attrs.get("study_data") or "{}")
    except (TypeError, ValueError):
        return None
    sweep = data.get("sweep", {}) if isinstance(data, dict) else None
    spec = sweep.get(ds[dim].attrs.get("sweep_key")) if isinstance(sweep, dict) else None
    return next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else None


def axis_scale(ds, dim, values):
    """``log``, ``symlog`` or ``linear``: as the study declared the axis (logspace, linspace);
    for a list, log where its values are positive and span LOG_SPAN x or more, symlog where they
    are that and a 0 (linear up to the smallest positive value: ``read_noise = [0, 1e-4, 1e-3,
    1e-2]`` does not pile three points up near 0), else linear."""
    declared = _declared_spacing(ds, dim)
    v = np.asarray(values, dtype=float)
    if declared == "logspace" and np.all(v > 0):
        return "log"
    if declared == "linspace" or v.size < 2 or np.any(v < 0):
        return "linear"
    positive = v[v > 0]
    if positive.size < 2 or positive.max() / positive.min() < LOG_SPAN:
        return "linear"
    return "log" if positive.size == v.size else "symlog"


def _plotted_axis_label(ds, dim):
    """The label of an axis showing ``dim``: :func:`axis_label`, less the unit where the tick
    labels carry it with an SI prefix (5 µA)."""
    return axis_label(ds, dim, with_units=engineering_formatter(_units(ds, dim)) is None)


def _numeric_x_axis(ax, ds, dim, values):
    """Label, scale (:func:`axis_scale`) and tick labels (SI-prefixed where the units take a
    prefix: 5 µA, not 5e-06 A) of an x axis showing a numeric sweep axis; one of a part switched
    off at 0 (:func:`_x_positions`) has a tick per value, 0 named (``no ADC``)."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    ax.set_xlabel(_plotted_axis_label(ds, dim))
    if _off_values(ds, dim) is not None:
        ax.set_xticks(_x_positions(ds, dim), value_texts(ds, dim))
        return
    formatter = engineering_formatter(_units(ds, dim))
    scale = axis_scale(ds, dim, values)
    if scale == "symlog":
        ax.set_xscale("symlog", linthresh=float(np.min(np.asarray(values)[np.asarray(values) > 0])))
    elif scale == "log":
        ax.set_xscale("log")
    if _ticks_at_values(values, scale):  # a tick, labelled as the legends write it, at each swept value
        texts = dict(zip(ds[dim].values.tolist(), value_texts(ds, dim)))
        ax.set_xticks(values, [texts[v] for v in np.asarray(values).tolist()])
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    if scale == "linear" and formatter is not None:  # at most 6 ticks: "1.05 kΩ" labels overlap at 9 on a half-width panel
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    if formatter is not None:
        ax.xaxis.set_major_formatter(formatter)
        ax.xaxis.set_minor_formatter(NullFormatter())


def _ticks_at_values(values, scale, most=TICKED_VALUES):
    """Whether an axis of these sweep values ticks each of them (a locator's ticks would leave 2 µA
    and 5 µA unnamed): at most ``most`` values, none closer to the next than 1/12 of the span on the
    axis's scale (log or linear; symlog axes keep their locator), so that no two labels overlap."""
    v = np.unique(np.asarray(values, dtype=float))
    if scale not in ("linear", "log") or not 2 <= v.size <= most:
        return False
    at = np.log10(v) if scale == "log" else v
    return bool(np.min(np.diff(at)) >= (at[-1] - at[0]) / 12)


def _x_positions(ds, dim):
    """Where the values of ``dim`` are drawn: the values; for an axis with a part switched off at
    0 (an ADC of 0 bits: none), one place per value in their order, ``no ADC`` first."""
    if _off_values(ds, dim) is not None:
        return np.argsort(np.argsort(ds[dim].values)).astype(float)
    return ds[dim].values.astype(float)


def _groups(ds, exclude=()):
    """(label, selection dict) for every combination of the categorical axes not in ``exclude``."""
    cats = [d for d in categorical_axes(ds) if d not in exclude]
    if not cats:
        return [("all networks", {})]
    combos = itertools.product(*[list(ds[d].values) for d in cats])
    return [(", ".join(str(v) for v in combo), dict(zip(cats, combo))) for combo in combos]


def _legend_title(ds):
    """The categorical axes a legend's curves are values of, named (:func:`axis_label`: ``4-4``
    alone does not say it is the hidden layers), or None where the curves are all networks."""
    return ", ".join(axis_label(ds, d, with_units=False) for d in categorical_axes(ds)) or None


def _pooled(da, keep):
    """Values of ``da`` with dims ``keep`` kept and every other dim flattened into the last axis."""
    other = [d for d in da.dims if d not in keep]
    return da.transpose(*keep, *other).values.reshape(*[da.sizes[d] for d in keep], -1)


def _pooled_note(ds, shown):
    """`` at tmr0 = 2 (pooled over sigma_d2d)``: the sweep values a selection fixed
    (``ds.sel(tmr0=2.0)`` or ``[2.0]``) and the sweep axes whose cells a figure pools."""
    rest = [d for d in sweep_axes(ds) if d not in shown and ds.sizes[d] > 1]
    fixed = [f"{d} = {value_texts(ds, d)[0]}" for d in ds.coords
             if d not in shown and "sweep_key" in ds[d].attrs and ds[d].size == 1]
    return (f" at {', '.join(fixed)}" if fixed else "") + (f" (pooled over {', '.join(rest)})" if rest else "")


def check_axis(ds, dim, field="dim"):
    """ConfigError naming ``field`` unless ``dim`` is one of the results' numeric sweep axes."""
    from ..errors import ConfigError, did_you_mean

    allowed = numeric_axes(ds)
    if dim not in allowed:
        raise ConfigError(field, f"{dim!r} is not a numeric sweep axis of more than one value of these results"
                                 f"{did_you_mean(str(dim), allowed)}; allowed: {', '.join(allowed) or 'none'}")


def _new_figure(width=10.5, height=4.2, ncols=1, nrows=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def accuracy_vs_axis(ds, dim, threshold=None):
    """Median test accuracy with IQR and 5-95 % bands, and the yield, against one numeric axis,
    one curve per value of the categorical axes. ``threshold`` (the yield's test accuracy, a
    fraction): by default the one the run that wrote ``ds`` used, else 0.9."""
    check_axis(ds, dim)
    threshold = results_threshold(ds, threshold)
    fig, axes = _new_figure(ncols=2)
    ax_acc, ax_yield = axes[0]
    ds = ds.sortby(dim)  # a line joins the values in their order on the axis, not in the study's
    x, off = _x_positions(ds, dim), _off_values(ds, dim)
    joined = None if off is None else ~off  # the bands leave out a part switched off (no ADC)
    # points no band reaches (a band has no width at a point between left-out ones): drawn as bars
    lone = None if off is None else ~(np.r_[False, joined[1:] & joined[:-1]] | np.r_[joined[1:] & joined[:-1], False])
    done_all = finished(ds)
    any_all_diverged = False
    for (label, sel), style in zip(_groups(ds), _styles(len(_groups(ds)))):
        colour = style["color"]
        acc = ds.test_acc.sel(sel) if sel else ds.test_acc
        done = _pooled(done_all.sel(sel) if sel else done_all, [dim])
        vals = np.where(done, _pooled(acc, [dim]) * 100, np.nan)
        med = _nanquantile(vals, 0.5)
        for (lo, hi), alpha in ((BAND_90, 0.12), (BAND_IQR, 0.28)):
            low, high = _nanquantile(vals, lo), _nanquantile(vals, hi)
            ax_acc.fill_between(x, low, high, where=joined, color=colour, alpha=alpha, lw=0)
            if lone is not None:  # a point apart has no band: its bands as bars of the bands' shades
                ax_acc.vlines(x[lone], low[lone], high[lone], color=colour, alpha=alpha, lw=8)
        _curve(ax_acc, x, med, off, style, label)
        every_one_diverged = (np.sum(done, axis=1) > 0) & ~np.isfinite(vals).any(axis=1)
        ax_acc.plot(x[every_one_diverged], np.zeros(every_one_diverged.sum()), "x", color=colour, ms=10, mew=2,
                    clip_on=False, label="_nolegend_")
        any_all_diverged = any_all_diverged or every_one_diverged.any()
        chips = _chips(done_all.sel(sel) if sel else done_all, [dim])
        yld = _yield_pct(vals, done, threshold, axis=1)
        lo, hi = _yield_interval_pct(vals, done, threshold, 1, chips)
        ax_yield.fill_between(x, lo, hi, where=joined, color=colour, alpha=0.12, lw=0)
        # and as error bars: a band has no width at a point between missing ones (or on a one-value axis)
        ax_yield.errorbar(x, yld, yerr=(yld - lo, hi - yld), fmt="none", ecolor=colour, elinewidth=1, capsize=3)
        _curve(ax_yield, x, yld, off, style, label)
    for ax in (ax_acc, ax_yield):
        _numeric_x_axis(ax, ds, dim, x)
        ax.grid(True, alpha=0.3)
    ax_acc.set_ylabel("test accuracy (%), chips not diverged")
    ax_acc.set_title("median, IQR (dark) and 5-95 % (light) band")
    if any_all_diverged:  # no median there: a mark at 0, not a gap
        ax_acc.plot([], [], "x", color="grey", ms=10, mew=2, label="every network diverged")
    if not any(np.isfinite(line.get_ydata()).any() for line in ax_acc.lines if line.get_marker() == "o"):
        ax_acc.set_ylim(-3, 103)  # no accuracy at all: the per cent scale, not one around the marks at 0
    ax_yield.set_ylabel(f"yield (%): chips with accuracy >= {threshold_text(threshold)} %")
    ax_yield.set_ylim(-3, 103)
    ax_yield.legend(fontsize="small", loc="best", title=_legend_title(ds), title_fontsize="small")
    pooled = _pooled_note(ds, [dim] + categorical_axes(ds))
    # pooled cells share their chips: the interval takes the chips, not the cells' results, as trials
    ax_yield.set_title(YIELD_TITLE + (",\nthe pooled cells' chips as the trials" if pooled else ""))
    ax_acc.legend(fontsize="small", loc="best", title=_legend_title(ds), title_fontsize="small")
    set_suptitle(fig, f"Test accuracy against {dim}{pooled}")
    return fig


def _curve(ax, x, y, off, style, label):
    """``y`` against ``x`` as points joined by a line in ``style`` (:func:`_styles`), the points of
    a part switched off (``off``, an ADC of 0 bits) not joined to the others."""
    if off is None:
        ax.plot(x, y, "o-", label=label, **style)
        return
    ax.plot(x, np.where(off, np.nan, y), "o-", label=label, **style)
    ax.plot(x[off], y[off], "o", label="_nolegend_", **style)


def accuracy_categorical(ds, threshold=None):
    """For a study without numeric axes: accuracy distribution per cell (box plot) and yield
    (``threshold``: by default the run's, as in :func:`accuracy_vs_axis`)."""
    threshold = results_threshold(ds, threshold)
    fig, axes = _new_figure(ncols=2)
    ax_acc, ax_yield = axes[0]
    groups = _groups(ds)
    done_all = finished(ds)
    data, yields, intervals = [], [], []
    for _, sel in groups:
        vals = (ds.test_acc.sel(sel) if sel else ds.test_acc).values.ravel() * 100
        done = (done_all.sel(sel) if sel else done_all).values.ravel()
        data.append(vals[np.isfinite(vals) & done])
        yields.append(float(_yield_pct(vals, done, threshold, axis=0)))
        intervals.append([float(v) for v in _yield_interval_pct(vals, done, threshold, axis=0)])
    labels = [g[0] for g in groups]
    # the box and whiskers are the table's interpolated quantiles (matplotlib's boxplot would move the
    # whiskers to the nearest data point inside them); a cell with nothing finished has no box
    stats = [dict(zip(("whislo", "q1", "med", "q3", "whishi"), np.quantile(d, [BAND_90[0], BAND_IQR[0], 0.5,
                                                                              BAND_IQR[1], BAND_90[1]])))
             for d in data if d.size]
    if stats:  # matplotlib's bxp refuses an empty list
        ax_acc.bxp(stats, positions=[k + 1 for k, d in enumerate(data) if d.size], showfliers=False)
    for k, (d, y) in enumerate(zip(data, yields)):
        if not d.size and np.isfinite(y):  # networks finished, none without diverging: no box
            ax_acc.text(k + 1, 0.5, "every network\ndiverged", ha="center", va="center", fontsize="small",
                        transform=ax_acc.get_xaxis_transform())
    ax_acc.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right")
    ax_acc.set_xlim(0.4, len(labels) + 0.6)  # also where no cell has a box (every network diverged)
    if not stats:
        ax_acc.set_ylim(-3, 103)
    ax_acc.set_ylabel("test accuracy (%), chips not diverged")
    ax_acc.set_title("median, IQR box, 5-95 % whiskers")
    shown = np.isfinite(yields)  # a cell with no finished network has no yield: "n/a", not a 0 % bar
    errors = np.abs(np.transpose(intervals) - np.asarray(yields))  # (2, cells)
    ax_yield.bar(np.flatnonzero(shown), np.asarray(yields)[shown], yerr=errors[:, shown], capsize=4,
                 error_kw=dict(lw=1))
    for k in np.flatnonzero(~shown):
        ax_yield.text(k, 2, "n/a", ha="center", va="bottom", fontsize="small")
    ax_yield.set_title(YIELD_TITLE)
    ax_yield.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax_yield.set_xlim(-0.6, len(labels) - 0.4)
    ax_yield.set_ylim(0, 103)
    ax_yield.set_ylabel(f"yield (%): chips with accuracy >= {threshold_text(threshold)} %")
    for ax in (ax_acc, ax_yield):
        ax.grid(True, axis="y", alpha=0.3)
    set_suptitle(fig, "Test accuracy per cell")
    return fig


def heatmap(ds, x_dim, y_dim, threshold=None):
    """Median test accuracy and yield over two numeric axes, one row per categorical value; a cell
    whose every finished network diverged reads ``all div.`` (its yield 0), one with none finished
    ``n/a`` (``threshold``: by default the run's, as in :func:`accuracy_vs_axis`)."""
    check_axis(ds, x_dim, "x_dim")
    check_axis(ds, y_dim, "y_dim")
    threshold = results_threshold(ds, threshold)
    groups = _groups(ds)
    fig, axes = _new_figure(width=10.5, height=3.6 * len(groups), ncols=2, nrows=len(groups))
    ds = ds.sortby([y_dim, x_dim])  # rows and columns in the values' order
    done_all = finished(ds)
    medians, yields, diverged = [], [], []
    for label, sel in groups:
        acc = ds.test_acc.sel(sel) if sel else ds.test_acc
        done = _pooled(done_all.sel(sel) if sel else done_all, [y_dim, x_dim])
        vals = np.where(done, _pooled(acc, [y_dim, x_dim]) * 100, np.nan)
        medians.append(_nanquantile(vals, 0.5))
        yields.append(_yield_pct(vals, done, threshold, axis=2))
        diverged.append((np.sum(done, axis=2) > 0) & ~np.isfinite(vals).any(axis=2))
    # one accuracy scale for every row, up to 100 %, down to the lowest median (at least 5 points of range)
    lowest = np.nanmin(medians) if np.isfinite(medians).any() else 0.0
    acc_range = (5.0 * np.floor(min(lowest, 95.0) / 5.0), 100.0)
    for row, (label, sel) in enumerate(groups):
        for col, (grid, name, cmap, (vmin, vmax)) in enumerate((
                (medians[row], "median test accuracy (%), not diverged", "viridis", acc_range),
                (yields[row], f"yield (%): accuracy >= {threshold_text(threshold)} %", "magma", (0.0, 100.0)))):
            ax = axes[row][col]
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks(range(ds.sizes[x_dim]), value_texts(ds, x_dim), rotation=30, ha="right")
            ax.set_yticks(range(ds.sizes[y_dim]), value_texts(ds, y_dim))
            ax.set_xlabel(_plotted_axis_label(ds, x_dim))
            ax.set_ylabel(_plotted_axis_label(ds, y_dim))
            ax.set_title(f"{name}" + (f" - {label}" if sel else ""), fontsize="medium")
            mid = 0.5 * (vmin + vmax)  # text colour: white on the darker half of the scale
            for (i, j), value in np.ndenumerate(grid):
                text = "all div." if col == 0 and diverged[row][i, j] else percent_text(value / 100, 0)
                ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                        color="white" if (value < mid) else "black")
            fig.colorbar(im, ax=ax, shrink=0.85)
    set_suptitle(fig, f"{y_dim} x {x_dim}{_pooled_note(ds, [x_dim, y_dim] + categorical_axes(ds))}")
    return fig


def delta_i_tradeoff(ds, dim="delta_i"):
    """Derivative error and gradient cosine (each network's last trained epoch, median over networks)
    against dI, one curve per read-noise level (or other categorical/numeric axis value), the best dI
    marked."""
    from ..studies.store import last_epoch_values

    if dim not in numeric_axes(ds):
        return None
    ds = ds.sortby(dim)
    last = ds.assign({name: last_epoch_values(ds, name) for name in ("grad_cosine", "deriv_rel_err")})
    # one curve per value of the first axis of the readout or the variability (read noise, its
    # temperature or bandwidth, the ADC, a spread: they set where the best dI lies), and of each
    # categorical axis; other axes (epochs, learning rate) are pooled
    noise = [d for d in numeric_axes(ds) if d != dim and (str(ds[d].attrs.get("sweep_key", "")).startswith(
        NOISE_SECTIONS) or "noise" in d)]
    split = noise[:1] + [d for d in categorical_axes(ds)]
    combos = list(itertools.product(*[list(ds[d].values) for d in split])) if split else [()]
    texts = {d: dict(zip(ds[d].values.tolist(), value_texts(ds, d))) for d in split}
    fig, axes = _new_figure(ncols=2)
    ax_err, ax_cos = axes[0]
    x = ds[dim].values.astype(float)
    for combo, style in zip(combos, _styles(len(combos))):
        colour = style["color"]
        sel = dict(zip(split, combo))
        label = ", ".join(f"{d}={texts[d][v]}" for d, v in sel.items()) or "all"
        sub = last.sel(sel) if sel else last
        err = _nanquantile(_pooled(sub.deriv_rel_err, [dim]), 0.5)
        cos = _nanquantile(_pooled(sub.grad_cosine, [dim]), 0.5)
        if np.all(err == 0):  # exact derivatives (oracle, digital): nothing to trade off
            continue
        finite = err[np.isfinite(err)]
        if x.size > 1 and finite.size == err.size and np.all(finite == finite[0]):  # e.g. grad_mode model
            ax_err.plot(x, err, "--", label=f"{label} (does not depend on dI)", **style)
            ax_cos.plot(x, cos, "--", label=f"{label} (does not depend on dI)", **style)
            continue
        ax_err.plot(x, err, "o-", label=label, **style)
        ax_cos.plot(x, cos, "o-", label=label, **style)
        if np.any(np.isfinite(err)):
            best = int(np.nanargmin(err))
            ax_err.plot(x[best], err[best], "*", color=colour, ms=16, mec="black")
        if np.any(np.isfinite(cos)):
            best = int(np.nanargmax(cos))
            ax_cos.plot(x[best], cos[best], "*", color=colour, ms=16, mec="black")
    for ax in (ax_err, ax_cos):
        _numeric_x_axis(ax, ds, dim, x)
        ax.grid(True, alpha=0.3)
    _log_y_or_note(ax_err, "no derivative error to show:\nevery network diverged")
    _log_y_or_note(ax_cos, "no gradient cosine to show:\nevery network diverged", log=False)
    ax_err.set_ylabel("median relative error of dV/dI estimate")
    ax_err.set_title("derivative error (star: best dI)")
    ax_cos.set_ylabel("median cosine(hidden-layer gradient used, exact)")
    ax_cos.set_title("gradient fidelity (star: best dI)")
    if ax_err.get_legend_handles_labels()[0]:
        ax_err.legend(fontsize="small")
    set_suptitle(fig, f"The dI trade-off: truncation error against noise and mismatch"
                      f"{_pooled_note(ds, [dim] + split)}")
    return fig


def training_curves(ds):
    """Validation accuracy and training loss per epoch: median and IQR over the finished networks
    that did not diverge (a diverged network's epochs turn NaN from its divergence on: with it, each
    epoch's median would be over other networks, and the curve would seem to recover), per
    categorical value."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _new_figure(ncols=2)
    ax_acc, ax_loss = axes[0]
    epoch = ds.epoch.values
    groups = _groups(ds)
    kept = finished(ds) & (~ds.diverged.astype(bool) if "diverged" in ds else True)
    for (label, sel), style in zip(groups, _styles(len(groups))):
        colour = style["color"]
        sub, keep = (ds.sel(sel), kept.sel(sel)) if sel else (ds, kept)
        for ax, var, scale in ((ax_acc, sub.val_acc, 100), (ax_loss, sub.train_loss, 1)):
            vals = _pooled(var.where(keep), ["epoch"]) * scale
            ax.fill_between(epoch, _nanquantile(vals, 0.25), _nanquantile(vals, 0.75), color=colour, alpha=0.25, lw=0)
            ax.plot(epoch, _nanquantile(vals, 0.5), label=label, color=colour, lw=style["lw"])
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_loss.set_ylabel("training loss")
    _log_y_or_note(ax_loss, "every network diverged")
    _log_y_or_note(ax_acc, "every network diverged", log=False)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        # the epochs, also where nothing is drawn (every network diverged)
        ax.set_xlim(*((epoch[0] - 0.5, epoch[0] + 0.5) if epoch.size == 1 else (epoch[0], epoch[-1])))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    ax_acc.legend(fontsize="small", title=_legend_title(ds), title_fontsize="small")
    set_suptitle(fig, f"Training curves: median and IQR of the networks that did not diverge"
                      f"{_pooled_note(ds, categorical_axes(ds))}")
    return fig


def divergence_counts(ds):
    """Networks diverged per cell (bar chart) among the finished ones, or None if none diverged."""
    done = finished(ds)
    div = ds.diverged.astype(bool) & done
    counts = div.sum("network").values.ravel() if sweep_axes(ds) else np.array([int(div.sum())])
    if counts.sum() == 0:
        return None
    labels = _cell_labels(ds)
    fig, axes = _new_figure(width=max(6.0, 0.5 * len(labels) + 3), height=4.2)
    ax = axes[0][0]
    ax.bar(range(len(labels)), counts)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize="small")
    complete = bool(done.all())
    ax.set_ylabel(f"networks diverged (of {ds.sizes['network']})" if complete else
                  f"networks diverged (of a cell's finished ones; {ds.sizes['network']} when complete)")
    ax.set_title("Diverged networks per cell\n(loss or a gradient NaN or beyond 3.4e38)")
    return fig


def _log_y_or_note(ax, note, log=True):
    """A log y scale (``log``) where a line of ``ax`` has a finite positive value, and ``note`` in
    the middle of a panel with no finite value at all (matplotlib refuses a log scale with nothing
    positive to draw: a study whose every network diverged)."""
    values = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    if log and any(np.any(np.isfinite(v) & (v > 0)) for v in values):
        ax.set_yscale("log")
    if not any(np.any(np.isfinite(v)) for v in values):
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize="small")


def _nanquantile(vals, q):
    """np.nanquantile over the last axis, NaN (without a warning) where every value is NaN."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: cells with nothing finished
        return np.nanquantile(vals, q, axis=-1)


def _cell_labels(ds):
    axes = sweep_axes(ds)
    if not axes:
        return ["(single cell)"]
    return [", ".join(f"{d}={text}" for d, text in zip(axes, combo))
            for combo in itertools.product(*[value_texts(ds, d) for d in axes])]


def _styles(n):
    """Colour, marker size and line width of each of ``n`` curves of one panel: tab10's colours, and
    markers and lines that narrow from the first curve to the last (10 to 4 points, 3 to 1.2), so a
    curve drawn over an equal one (two device models of the same accuracy) leaves the one beneath
    visible around it; a lone curve is drawn at matplotlib's default sizes."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    if n <= 1:
        return [dict(color=cmap(0), ms=6.0, lw=1.5)]
    return [dict(color=cmap(k % 10), ms=10.0 - 6.0 * k / (n - 1), lw=3.0 - 1.8 * k / (n - 1)) for k in range(n)]
