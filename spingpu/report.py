"""A self-contained HTML report of a study's results, and its summary as CSV.

The HTML embeds every figure as a PNG data URI and its styles inline: it opens offline and holds no
external resource. Figures are those of :mod:`spingpu.plot`; the summary table is one row per cell.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .stats import check_threshold, results_threshold

SUMMARY_COLUMNS = ("median_test_acc", "q25_test_acc", "q75_test_acc", "q05_test_acc", "q95_test_acc", "yield",
                   "yield_threshold", "diverged", "networks", "networks_done", "median_grad_cosine",
                   "undefined_grad_cosine", "median_deriv_rel_err", "teacher_test_acc", "median_test_acc_lo95",
                   "median_test_acc_hi95", "yield_lo95", "yield_hi95", "max_extrapolated_readings")
SUMMARY_VARIABLES = ("test_acc", "diverged", "grad_cosine", "deriv_rel_err", "teacher_test_acc",
                     "extrapolated_readings")
LAST_EPOCH = ("grad_cosine", "deriv_rel_err")  # of these the summary and figures use each network's last trained
# epoch only (studies.store.last_epoch_values)
REPORT_VARIABLES = SUMMARY_VARIABLES + ("val_acc", "train_loss")  # what the report reads of a store


def summary_rows(ds, threshold=None):
    """One dict per cell: the sweep values and the SUMMARY_COLUMNS (accuracies as fractions);
    ``threshold``: :func:`~spingpu.stats.results_threshold` (by default the run's).

    Statistics are over the networks of the cell's finished tasks (``networks_done`` of
    ``networks``): in an interrupted store, networks never trained are left out, while diverged
    networks (trained, metrics NaN) count as failed chips. A cell with no finished task has NaN
    statistics. The accuracy median and quantiles are over the networks that did not diverge (the
    median of the chips that train at all; the yield is the statistic of all chips).
    ``*_lo95`` / ``*_hi95``: 95 % confidence intervals of that median and of the yield
    (:mod:`spingpu.stats`).
    ``yield_threshold``: the test accuracy at or above which a chip counts in the yield.
    ``max_extrapolated_readings``: the largest fraction of a network's junction readings beyond its
    device's table (NaN where none was counted: digital cells, stores made before the count).
    ``median_grad_cosine`` and ``median_deriv_rel_err`` are over the networks that did not diverge,
    the cosine over those where it is defined: ``undefined_grad_cosine`` counts the others, whose
    gradient used (or exact one) was exactly 0 at their last epoch, as where the ADC clips every
    reading; a median over the rest alone would hide the chips that get no gradient."""
    from .plot.study import finished, sweep_axes
    from .stats import median_interval, yield_hits, yield_interval
    from .studies.store import in_memory, is_lazy, last_epoch_values

    if is_lazy(ds):  # read once what the summary takes
        ds = in_memory(ds, SUMMARY_VARIABLES, LAST_EPOCH)
    threshold = results_threshold(ds, threshold)
    axes = sweep_axes(ds)
    acc = ds.test_acc.load()
    cos, err = (last_epoch_values(ds, name).load() for name in LAST_EPOCH)  # each network's last trained epoch
    div = ds.diverged.load()
    done_all = finished(ds)
    rows = []
    for index in itertools.product(*[range(ds.sizes[d]) for d in axes]):
        sel = dict(zip(axes, index))
        done = done_all.isel(sel).values
        a = acc.isel(sel).values[done]
        ok = a[np.isfinite(a)]
        q = np.quantile(ok, [0.5, 0.25, 0.75, 0.05, 0.95]) if ok.size else [np.nan] * 5
        row = {d: (ds[d].values[i].item() if hasattr(ds[d].values[i], "item") else ds[d].values[i])
               for d, i in sel.items()}
        row.update(zip(SUMMARY_COLUMNS[:5], (float(v) for v in q)))
        hits = int(yield_hits(a, threshold))
        row["yield"] = hits / a.size if a.size else np.nan
        row["yield_threshold"] = float(threshold)  # test accuracy >= it counts as a trained chip
        row["diverged"] = int(div.isel(sel).values[done].sum())
        row["networks"] = int(done.size)
        row["networks_done"] = int(done.sum())
        c, e = cos.isel(sel).values[done], err.isel(sel).values[done]
        row["median_grad_cosine"] = float(np.nanmedian(c)) if np.isfinite(c).any() else np.nan
        row["undefined_grad_cosine"] = int((np.isnan(c) & ~div.isel(sel).values[done].astype(bool)).sum())
        row["median_deriv_rel_err"] = float(np.nanmedian(e)) if np.isfinite(e).any() else np.nan
        row["teacher_test_acc"] = float(ds.teacher_test_acc.isel(sel)) if "teacher_test_acc" in ds else np.nan
        row["median_test_acc_lo95"], row["median_test_acc_hi95"] = median_interval(ok)
        row["yield_lo95"], row["yield_hi95"] = yield_interval(hits, a.size)
        beyond = ds.extrapolated_readings.isel(sel).values[done] if "extrapolated_readings" in ds else np.array([])
        row["max_extrapolated_readings"] = float(np.nanmax(beyond)) if np.isfinite(beyond).any() else np.nan
        rows.append(row)
    return rows


def study_figures(ds, threshold=None, notes=None):
    """(title, Figure) pairs of the report, in order (``threshold``: by default the run's). With a
    list ``notes``, the junction figure is left out where the study's cell cannot be rebuilt here
    (a data file moved, a model not registered in this process), and the reason is appended to
    ``notes``; without, that error propagates."""
    from . import plot
    from .plot.study import numeric_axes
    from .studies.store import in_memory, is_lazy

    if is_lazy(ds):  # read once what the figures take (write_report's load_results reads the same)
        ds = in_memory(ds, REPORT_VARIABLES, LAST_EPOCH)
    threshold = results_threshold(ds, threshold)
    figures = []
    numeric = numeric_axes(ds)
    for dim in numeric:
        figures.append((f"Accuracy and yield against {dim}", plot.accuracy_vs_axis(ds, dim, threshold)))
    if not numeric:
        figures.append(("Accuracy and yield per cell", plot.accuracy_categorical(ds, threshold)))
    for y_dim, x_dim in itertools.combinations(numeric, 2):
        figures.append((f"{y_dim} x {x_dim}", plot.heatmap(ds, x_dim, y_dim, threshold)))
    tradeoff = plot.delta_i_tradeoff(ds)
    if tradeoff is not None:
        figures.append(("The dI trade-off", tradeoff))
    figures.append(("Training curves", plot.training_curves(ds)))
    try:
        devices = _devices_figure(ds)
    except ConfigError as err:
        if notes is None:
            raise
        notes.append(f"the figure of the study's junctions is left out: {err}")
        devices = None
    if devices is not None:
        figures.append(("The study's junctions", devices))
    div = plot.divergence_counts(ds)
    if div is not None:
        figures.append(("Divergence", div))
    return figures


def _devices_figure(ds):
    """I-V and dV/dI of the nominal junction and 12 sampled pairs of the study's cell of the widest
    junction spread (:func:`widest_spread_cell`), with that cell's current mapping and seed."""
    from .devices import junction_curves, sample_layer
    from .plot import iv_spread_figure
    from .plot.style import axis_value_texts
    from .studies.spec import changed_inputs, stored_study

    if not ds.attrs.get("study_data"):
        return None
    study = stored_study(ds.attrs)
    changed = changed_inputs(study)
    if changed:  # a measured curve the junctions are drawn from, or the data: either way not the study's
        raise ConfigError("inputs", f"{changed} has changed since the study ran (its contents differ from those the "
                                    "store recorded), so the figure would not show the junctions trained")
    try:
        flat = widest_spread_cell(study)
        if flat is None:  # no cell has junctions (digital baselines only)
            return None
        cell = study.cell(flat)
    except ConfigError as err:
        module = study.data.get("model", {}).get("module")
        if module and not Path(module).is_file():  # changed_inputs leaves a file that is gone to this
            raise ConfigError("model.module", f"{module} is missing, and the study's models come from it "
                                              f"({err})") from None
        raise
    model, nc = cell.model, cell.config.neuron
    current = np.linspace(nc.i_bias - 2.5 * nc.i_gain, nc.i_bias + 2.5 * nc.i_gain, 201)
    params = sample_layer(model, cell.config.variability, cell.config.seed, np.arange(12), 0, 1)[:, 0]
    v_nom, d_nom = model.iv(current)
    v, d = junction_curves(model, params, cell.config.seed)(current)
    var = cell.config.variability
    where = ", ".join(f"{a.dim}={axis_value_texts(a.values, a.units)[i]}"
                      for a, i in zip(study.axes, study.cell_index(flat)))
    title = (f"{model.name}: 12 sampled pairs{f' of the cell {where}' if where else ''} (spread chip "
             f"{var.sigma_chip:g}, d2d {var.sigma_d2d:g}, pair {var.sigma_pair:g})")
    return iv_spread_figure(current, v_nom, d_nom, v, d, title=title,
                            r_ref=nc.r_ref if nc.readout == "bridge" else None)


SEARCHED_CELLS = 4096  # studies of more cells: only their variability axes are searched


def widest_spread_cell(study):
    """Flat index of the study's cell with junctions (not a digital baseline) whose junctions vary
    the most: the largest sum over the model's parameters of sigma_chip^2 + sigma_d2d^2 +
    sigma_pair^2 (per-parameter spreads included), the first of equals in the cells' order; None
    where no searched cell has junctions. Every cell of a study of up to :data:`SEARCHED_CELLS` is
    searched (so a sweep whose first gradient mode is tanh, or of model parameters, finds its
    junction cells); in a larger one only the ``variability.*`` axes, the others at their first
    value."""
    if study.n_cells <= SEARCHED_CELLS:
        flats = range(study.n_cells)
    else:
        searched = [k for k, a in enumerate(study.axes) if a.key.startswith("variability.")]
        flats = []
        for values in itertools.product(*(range(len(study.axes[k].values)) for k in searched)):
            index = [0] * len(study.axes)
            for k, i in zip(searched, values):
                index[k] = i
            flats.append(int(np.ravel_multi_index(index, study.shape)))
    best, best_flat = -1.0, None
    for flat in flats:
        cell = study.cell(flat)
        if not cell.config.is_mtj:
            continue
        spread = float(np.square(cell.config.variability.level_sigmas(cell.model)).sum())
        if spread > best:
            best, best_flat = spread, flat
    return best_flat


def summary_csv_path(html_path):
    """The summary CSV written beside the report ``NAME.html``: ``NAME.summary.csv`` (a name of
    its own, so that it is never a study's data file ``NAME.csv``)."""
    html_path = Path(html_path)
    return html_path.with_name(html_path.stem + ".summary.csv")


def default_report_path(store):
    return Path(str(store).rstrip("/")).with_suffix(".html")


def check_report_targets(html_path, inputs=(), field="out", hint="choose another -o", owner=None, overwrite=False):
    """Refuse (ConfigError) to write the report or its CSV over a file the study reads, or over an
    existing file that is not an earlier spingpu report (or summary) of that name; with ``owner``
    (the store's path, the study's digests), unless ``overwrite``, also over the report of another
    study's results: one neither of that store's place nor of that study (:func:`_report_owner`;
    a report that records neither, from before spingpu recorded them, is replaced)."""
    from .outputs import check_writable

    html_path = check_writable(field, html_path)
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(field, f"{html_path} must end in .html")
    csv_path = summary_csv_path(html_path)
    check_writable(field, csv_path)
    inputs = {str(Path(p).resolve()) for p in inputs}
    for path in (html_path, csv_path):
        if str(path.resolve()) in inputs:
            raise ConfigError(field, f"{path} is a data file of the study; the report does not overwrite it: {hint}")
        if (path.exists() or path.is_symlink()) and not _written_by_report(path):
            raise ConfigError(field, f"{path} exists and was not written by spingpu report; not overwritten: "
                                     f"{hint}, or remove it")
    recorded = _report_owner(html_path) if owner is not None and not overwrite and html_path.is_file() else None
    if recorded is not None:
        store, digests = owner
        if recorded[0] not in digests and recorded[1] != str(Path(store).resolve()):
            raise ConfigError(field, f"{html_path} is the report of another study's results ({recorded[1]}); not "
                                     f"overwritten: {hint}, or pass --overwrite")
    return html_path, csv_path


OWNER_META = re.compile(r'<meta name="spingpu-study-digest" content="([0-9a-f]*)">'
                        r'<meta name="spingpu-store" content="([^"]*)">')


def _head(path):
    """The first 4 KiB of the file ``path`` as text ("" where it cannot be read): where a report
    says what wrote it."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _report_owner(path):
    """(study digest, store path) a report records (:func:`_html`), or None (none recorded)."""
    found = OWNER_META.search(_head(path))
    return (found.group(1), html.unescape(found.group(2))) if found else None


def _written_by_report(path):
    """Whether ``path`` is a file :func:`write_report` wrote: a report (``.html``) or its summary
    (``.summary.csv``), by how it begins."""
    mark = "median_test_acc," if path.name.endswith(".summary.csv") else "<title>spingpu report:"
    return path.is_file() and mark in _head(path)


def remove_default_report(store):
    """Remove the report and summary :func:`write_report` writes by default beside ``store``
    (those files only, by how they begin): a store replaced takes its report with it. Returns the
    paths removed."""
    html_path = default_report_path(store)
    removed = []
    for path in (html_path, summary_csv_path(html_path)):
        if not path.is_symlink() and _written_by_report(path):
            path.unlink()
            removed.append(path)
    return removed


def store_inputs(ds):
    """The data files (paths) the study of a store read, from its attributes."""
    try:
        return [p for p, _ in json.loads(ds.attrs.get("input_files", "[]"))]
    except (TypeError, ValueError):
        return []


def write_report(store, out=None, threshold=None, log=None, overwrite=False):
    """Write ``<store>.html`` (or ``out``) and the summary ``<name>.summary.csv`` beside it;
    return the HTML path. ``threshold`` (the yield's test accuracy): by default the one the run
    that wrote the store used (its attribute ``yield_threshold``), else 0.9. A store of which no
    task has finished is refused (ConfigError). An existing file is replaced only if it is an
    earlier report (summary) of this store's place or of its study, or ``overwrite`` and an
    earlier report of any. A figure left out
    (:func:`study_figures`) is noted in the HTML and passed to ``log`` as one line (default:
    printed on stderr as ``spingpu report: note: ...``)."""
    from .outputs import staged_files
    from .studies.store import load_results

    if threshold is not None:  # a bad one is refused before the store is read
        threshold = check_threshold(threshold)
    out = Path(out) if out else default_report_path(store)
    ds = load_results(store, REPORT_VARIABLES, LAST_EPOCH)
    threshold = results_threshold(ds, threshold)
    from .studies.store import STORE_MARK

    out, csv_path = check_report_targets(out, store_inputs(ds), owner=(store, (ds.attrs.get(STORE_MARK),)),
                                         overwrite=overwrite)
    _check_some_task_done(store, ds)
    rows = summary_rows(ds, threshold)
    notes = []
    figures = study_figures(ds, threshold, notes)
    for note in notes:
        (log or _note_on_stderr)(note)
    with staged_files(out, csv_path, fields=("out", "out")) as (tmp_html, tmp_csv):
        _write_csv(tmp_csv, rows)
        tmp_html.write_text(_html(ds, rows, figures, threshold, csv_path.name, notes, store))
    return out


def _check_some_task_done(store, ds):
    """ConfigError where no task of the store ``ds`` has finished (a run stopped before its first
    task ended): there is nothing to report, and its figures would have no data."""
    from .studies.store import task_progress

    done, tasks = task_progress(ds)
    if done == 0:
        raise ConfigError("results", f"no task of {store} has finished yet (0 of {tasks}), so there is nothing to "
                                     f"report; finish it with spingpu run STUDY --out {store} --resume")


def _note_on_stderr(note):
    import sys

    print(f"spingpu report: note: {note}", file=sys.stderr)


def _write_csv(path, rows):
    keys = list(rows[0])
    with open(path, "w") as handle:
        handle.write(",".join(keys) + "\n")
        for row in rows:
            handle.write(",".join(_csv_cell(row[k]) for k in keys) + "\n")


def _csv_cell(value):
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return f'"{text}"' if "," in text else text


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def _html(ds, rows, figures, threshold, csv_name, notes=(), store=""):
    from .plot.study import axis_label, sweep_axes, value_texts
    from .stats import number_text, threshold_text
    from .studies.store import STORE_MARK

    attrs = ds.attrs
    axes = sweep_axes(ds)
    name = attrs.get("study_name", "study")
    n_cells = len(rows)
    seconds = attrs.get("run_seconds")
    facts = [
        ("cells", f"{n_cells} ({' x '.join(f'{ds.sizes[d]} {d}' for d in axes) or 'no sweep'})"),
        ("networks per cell", ds.sizes["network"]),
        ("epochs", ds.sizes["epoch"]),
        ("sweep axes", ", ".join(axis_label(ds, d) for d in axes) or "none"),
        ("backend, device", f"{attrs.get('backend', '?')}, {attrs.get('device', '?')}"),
        ("time taken", f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "not recorded"),
        ("spingpu", attrs.get("spingpu_version", "?")),
        ("created", attrs.get("created", "?")),
        ("yield threshold", f"test accuracy >= {threshold_text(threshold)} %"),
    ]
    from .studies.store import task_progress

    done, tasks = task_progress(ds)
    incomplete = "" if done == tasks else (
        f'<p class="incomplete"><strong>Incomplete store: {done} of {tasks} tasks finished.</strong> '
        "The statistics are over the networks of the finished tasks only (column &ldquo;done&rdquo;); "
        "cells with none show n/a. Complete it with <code>spingpu run STUDY --out STORE --resume</code>.</p>")
    if done < tasks:
        facts.insert(1, ("tasks finished", f"{done} of {tasks} (incomplete)"))
    head = "".join(f'<th title="{html.escape(axis_label(ds, d))}">{html.escape(str(d))}</th>' for d in axes)
    teachers = any(np.isfinite(r["teacher_test_acc"]) for r in rows)
    beyond = any(r["max_extrapolated_readings"] > 0 for r in rows)  # NaN: False
    head += ("<th>median</th><th>its 95 % CI</th><th>IQR</th><th>5-95 %</th><th>yield</th><th>its 95 % CI</th>"
             "<th>diverged</th><th>done</th><th title=\"median over the networks that did not diverge and whose "
             "cosine is defined; undefined: the gradient used or the exact one was exactly 0, as where the ADC clips "
             "every reading\">"
             "grad cosine</th><th>dV/dI rel. error</th>") + \
        ("<th>teacher</th>" if teachers else "") + \
        ('<th title="largest fraction of a network\'s junction readings beyond the device\'s table, where V(I) '
         'is continued linearly">beyond table (max)</th>' if beyond else "")
    body = []
    texts = {d: dict(zip(ds[d].values.tolist(), value_texts(ds, d))) for d in axes}  # as the figures write them
    for r in rows:
        cells = "".join(f"<td>{html.escape(texts[d][_item(r[d])])}</td>" for d in axes)
        cells += (f"<td>{_pct(r['median_test_acc'])}</td>"
                  f"<td>{_range(r['median_test_acc_lo95'], r['median_test_acc_hi95'])}</td>"
                  f"<td>{_range(r['q25_test_acc'], r['q75_test_acc'])}</td>"
                  f"<td>{_range(r['q05_test_acc'], r['q95_test_acc'])}</td><td>{_pct(r['yield'])}</td>"
                  f"<td>{_range(r['yield_lo95'], r['yield_hi95'])}</td>"
                  f"<td>{r['diverged']}</td><td>{r['networks_done']} of {r['networks']}</td>"
                  f"<td>{number_text(r['median_grad_cosine'], '.3f')}{_undefined(r)}</td>"
                  f"<td>{number_text(r['median_deriv_rel_err'], '.3g')}</td>")
        cells += f"<td>{_pct(r['teacher_test_acc'])}</td>" if teachers else ""
        cells += f"<td>{_pct(r['max_extrapolated_readings'])}</td>" if beyond else ""
        body.append(f"<tr>{cells}</tr>")
    figs = "".join(f'<figure><h3>{html.escape(title)}</h3><img alt="{html.escape(title)}" '
                   f'src="data:image/png;base64,{_png(fig)}"></figure>' for title, fig in figures)
    figs += "".join(f'<p class="note">Note: {html.escape(note)}</p>' for note in notes)
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>spingpu report: {html.escape(name)}</title>
<meta name="spingpu-study-digest" content="{html.escape(str(attrs.get(STORE_MARK, "")))}"><meta name="spingpu-store" \
content="{html.escape(str(Path(store).resolve()) if store else "")}">
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} .facts th {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
.incomplete {{ background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em 1em; }}
.note {{ color: #555; font-style: italic; }}
</style></head><body>
<h1>spingpu report: {html.escape(name)}</h1>
{incomplete}
<h2>The study</h2>
<table class="facts">{fact_rows}</table>
<details><summary>Study file</summary><pre>{html.escape(attrs.get('study_text', ''))}</pre></details>
<h2>Summary</h2>
<p>Yield is the fraction of each cell's networks (chips) at or above the test-accuracy threshold, a
diverged network counting as failed. The test-accuracy median and quantiles are over the networks
that did not diverge (done less diverged), interpolated linearly between networks (so with few test
samples a quantile can fall between the accuracies a chip can have), as are the medians of the
gradient cosine (of the hidden
layers' weight and bias gradient used with the exact one) and the derivative error, at the last epoch their
cell trained. The 95 % confidence intervals say how well the cell's networks pin down the yield of
the population of chips the variability describes (Clopper-Pearson interval) and the median
accuracy of its chips that do not diverge (distribution-free, between two order statistics, n/a
under 6 networks that did not diverge), on this study's data split and test samples (test-set sampling error is not in
them); done: the networks
trained (of finished tasks) over which the statistics are taken; teacher: the test accuracy of a
distilled cell's digital teacher.
The same table: <code>{html.escape(csv_name)}</code>.</p>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<h2>Figures</h2>
{figs}
<p><small>Generated by spingpu {html.escape(str(attrs.get('spingpu_version', '')))} on
{time.strftime('%Y-%m-%d %H:%M')}.</small></p>
</body></html>
"""


def _undefined(row):
    """The networks left out of a cell's median gradient cosine (undefined: a gradient exactly 0)."""
    n = row["undefined_grad_cosine"]
    return f" ({n} undefined)" if n else ""


def _pct(x):
    from .stats import percent_text

    text = percent_text(x)
    return text if text == "n/a" else f"{text} %"


def _range(low, high):
    """``low % - high %``, or ``n/a`` where neither end is known (not ``n/a-n/a``)."""
    return "n/a" if _pct(low) == _pct(high) == "n/a" else f"{_pct(low)}-{_pct(high)}"


def _item(value):
    """A row's sweep value as a Python scalar (numpy's or not), as ``.tolist()`` gives it."""
    return value.item() if isinstance(value, np.generic) else value
