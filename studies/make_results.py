"""Regenerate the README's results table and figures from the study result stores.

    python studies/make_results.py [--runs /work/runs] [--figures docs/figures]

Reads every store ``<runs>/<study>.zarr`` that exists (as written by ``spingpu run
studies/<study>.toml --out <runs>/<study>.zarr``), prints a Markdown table per study (median, IQR,
5-95 %, mean over the networks that did not diverge, yield at 90 % test accuracy with its 95 %
Clopper-Pearson interval, networks, wall time) and the numbers quoted in the README's findings, and
saves the figures as PNG into ``docs/figures/``. Stores that are missing are skipped with a note. Figures
come from ``spingpu.plot`` where one fits; a string-valued sweep coordinate is drawn as one curve per
value, so numeric axes are turned into labelled categories where a figure needs curves per value.
"""

from __future__ import annotations

import argparse
import warnings
import io
import sys
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

import spingpu
from spingpu import plot
from spingpu.errors import count_text
from spingpu.report import _pct as pct, summary_rows  # 99.997 %, not a rounded 100 %, for 999 of 1000
from spingpu.studies.store import last_epoch_values

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 0.9
MAX_PNG_BYTES = 150_000


def open_store(runs, name, quiet=False):
    """The results of study ``name``: the store ``NAME.zarr`` in ``runs``, else the newest store there
    whose recorded ``study_name`` is ``name`` (a run written with ``--out OTHER.zarr``)."""
    path = Path(runs) / f"{name}.zarr"
    if not path.exists():
        from spingpu.studies.store import store_attrs

        found = []
        for other in sorted(Path(runs).glob("*.zarr")):
            if other.stem.endswith("_noadc"):  # the same study run without its ADC: a variant, not the study
                continue
            attrs = store_attrs(other)  # {} where it is not a zarr group
            if attrs.get("study_name") == name:
                found.append((attrs.get("created", ""), str(other)))
        if not found:
            if not quiet:
                print(f"\n({name}: no store of that study in {runs}; skipped)")
            return None
        path = Path(max(found)[1])
    return spingpu.open_results(path)


def paired_comparison(better, base, what, base_name="labels-only", alternative="greater"):
    """A line comparing per-network test accuracies ``better`` and ``base`` of the *same* networks
    (chips, initial weights, batches and noise: two cells of one study differ only in their
    setting): the differences' mean and range, and the p of the Wilcoxon signed-rank test (exact
    for these few networks; zero differences dropped), one-sided that ``better`` is better or, with
    ``alternative="two-sided"``, that the two differ. A rank test of two independent samples
    (Mann-Whitney) would discard the pairing."""
    better, base = np.asarray(better, dtype=float), np.asarray(base, dtype=float)
    paired = np.isfinite(better) & np.isfinite(base)  # a network diverged in either cell has no pair
    better, base = better[paired], base[paired]
    diff = better - base
    if not diff.size:
        return f"{what} against {base_name}: no network trained in both cells"
    n_out = int(np.sum(~paired))
    dropped = f"; {count_text(n_out, 'network')} diverged in a cell, left out" if n_out else ""
    line = (f"{what} minus {base_name}, same networks: mean {100 * diff.mean():+.2f} points (min "
            f"{100 * diff.min():+.2f}, max {100 * diff.max():+.2f}; {int(np.sum(diff > 0))} of {diff.size} better, "
            f"{int(np.sum(diff == 0))} equal{dropped})")
    if np.any(diff != 0):
        p = wilcoxon(better, base, alternative=alternative, zero_method="wilcox").pvalue
        line += (f"; Wilcoxon signed-rank p ({what} better) = {p:.3g}" if alternative == "greater" else
                 f"; Wilcoxon signed-rank p (two-sided) = {p:.3g}")
    return line


def wall_time(ds):
    s = ds.attrs.get("run_seconds")
    if not isinstance(s, (int, float)):
        return "not recorded"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def table(ds, title):
    """Markdown table of every cell; returns the rows (summary_rows plus mean)."""
    rows = summary_rows(ds, THRESHOLD)
    axes = [d for d in ds.test_acc.dims if d not in ("network", "epoch")]
    acc = ds.test_acc.load()
    val = last_epoch_values(ds, "val_acc").load()
    print(f"\n### {title}: {ds.attrs.get('study_name')}, {ds.sizes['network']} networks x "
          f"{ds.sizes['epoch']} epochs per cell, wall time {wall_time(ds)} ({ds.attrs.get('backend')})")
    print("| " + " | ".join(axes) + " | median | IQR | 5-95 % | mean (not diverged) | yield >= 90 % (95 % CI) "
          "| final val. acc. (median) "
          "| grad cosine | dV/dI rel. err. | diverged |")
    print("|" + " --- |" * (len(axes) + 9))
    for r in rows:
        sel = {d: r[d] for d in axes}
        a = acc.sel(sel).values
        r["mean_test_acc"] = float(np.nanmean(a))
        r["median_val_acc"] = float(np.nanmedian(val.sel(sel).values))
        cells = [f"{r[d]:g}" if isinstance(r[d], float) else str(r[d]) for d in axes]
        cells += [pct(r["median_test_acc"]), f"{pct(r['q25_test_acc'])}-{pct(r['q75_test_acc'])}",
                  f"{pct(r['q05_test_acc'])}-{pct(r['q95_test_acc'])}", f"{100 * r['mean_test_acc']:.2f} %",
                  f"{pct(r['yield'])} ({pct(r['yield_lo95'])}-{pct(r['yield_hi95'])})", pct(r["median_val_acc"]),
                  f"{r['median_grad_cosine']:.3f}",
                  f"{r['median_deriv_rel_err']:.3g}", str(r["diverged"])]
        print("| " + " | ".join(cells) + " |")
    return rows


def as_category(ds, dim, fmt):
    """The same Dataset with a numeric sweep coordinate relabelled as strings (one curve each)."""
    labels = [fmt(v) for v in ds[dim].values]
    return ds.assign_coords({dim: np.array(labels, dtype=object).astype(str)})


def save(fig, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    for dpi in (90, 75, 60):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        if buf.tell() <= MAX_PNG_BYTES:
            break
    path.write_bytes(buf.getvalue())
    print(f"figure: {path} ({buf.tell() // 1000} kB, {dpi} dpi)")


def metric_vs_axis(ds, dim, title, acc_stat="median"):
    """Median accuracy, median gradient cosine and median derivative error at the last epoch against
    one numeric axis, one curve per value of the categorical axes (gradient modes)."""
    from spingpu.plot.study import _groups, _log_y_or_note, _new_figure, _numeric_x_axis, _pooled, _styles

    fig, axes = _new_figure(width=13, height=4.2, ncols=3)
    x = ds[dim].values.astype(float)
    last = ds[[]].assign(grad_cosine=last_epoch_values(ds, "grad_cosine"),
                         deriv_rel_err=last_epoch_values(ds, "deriv_rel_err"))
    groups = _groups(ds)
    for (label, sel), style in zip(groups, _styles(len(groups))):
        colour = style["color"]
        sub = ds.sel(sel) if sel else ds
        lsub = last.sel(sel) if sel else last
        acc = _pooled(sub.test_acc, [dim]) * 100
        centre = np.nanmean(acc, axis=1) if acc_stat == "mean" else np.nanmedian(acc, axis=1)
        axes[0][0].plot(x, centre, "o-", label=label, **style)
        axes[0][0].fill_between(x, np.nanquantile(acc, 0.25, axis=1), np.nanquantile(acc, 0.75, axis=1),
                                color=colour, alpha=0.15, lw=0)
        axes[0][1].plot(x, np.nanmedian(_pooled(lsub.grad_cosine, [dim]), axis=1), "o-", label=label, **style)
        err = np.nanmedian(_pooled(lsub.deriv_rel_err, [dim]), axis=1)
        if np.any(err > 0):
            axes[0][2].plot(x, err, "o-", label=label, **style)
    names = (f"{acc_stat} test accuracy (%), IQR band", "median cosine(hidden-layer gradient used, exact)",
             "median relative error of dV/dI estimate")
    for ax, name in zip(axes[0], names):
        _numeric_x_axis(ax, ds, dim, x)  # the library's label, scale and ticks
        ax.set_title(name, fontsize="medium")
        ax.grid(True, alpha=0.3)
    _log_y_or_note(axes[0][2], "no derivative error to show")
    axes[0][0].legend(fontsize="small", ncol=2)
    fig.suptitle(title)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/work/runs", help="folder of the result stores")
    parser.add_argument("--figures", default=str(ROOT / "docs" / "figures"), help="PNG output folder")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    figs = Path(args.figures)

    # The paper's experiments (the MNIST ones as their CPU-sized cuts where the full run is missing;
    # a store NAME_noadc holds the same study run without the ADC, before the ADC was added).
    import xarray as xr

    for name, title in (("paper_iris_1hidden", "Iris 4-8-3"), ("paper_iris_2hidden", "Iris 4-8-8-3")):
        ds = open_store(args.runs, name)
        if ds is not None:
            table(ds, title)
    for name, title in (("paper_mnist_4hidden", "MNIST 784-256x4-10"),
                        ("paper_mnist_distill", "MNIST distillation, student 784-32-10")):
        full = open_store(args.runs, name, quiet=True)
        no_adc = next((ds for ds in (open_store(args.runs, f"{cut}_noadc", quiet=True)
                                     for cut in (name, f"{name}_cpu")) if ds is not None), None)
        if full is None:
            name = f"{name}_cpu"
        variants = []
        for ds, label in ((full if full is not None else open_store(args.runs, name), "8-bit ADC over +-1 V"),
                          (no_adc, "no ADC")):
            if ds is not None:
                table(ds, f"{title}, {label}")
                if "alpha" in ds.dims:  # one curve per distillation weight
                    print(paired_comparison(ds.test_acc.sel(alpha=ds.alpha.values.max()).values,
                                            ds.test_acc.sel(alpha=0.0).values, "distilled"))
                    ds = as_category(ds, "alpha", lambda v: f"distilled, alpha {v:g}" if v else "labels only")
                variants.append(ds[["val_acc", "train_loss", "test_acc", "diverged"]].expand_dims(readout=[label]))
        if variants:
            both = xr.concat(variants, dim="readout", join="outer") if len(variants) > 1 else variants[0]
            fig = plot.training_curves(both)
            fig.suptitle(f"{title}: median and IQR over {both.sizes['network']} networks per cell ({name})")
            save(fig, figs / f"{name.removesuffix('_cpu')}.png")

    ds = open_store(args.runs, "distill_sweep")
    if ds is not None:
        table(ds, "Distillation: temperature x alpha (CPU cut)")
        base = ds.test_acc.sel(alpha=0.0).isel(temperature=0).values
        for t in ds.temperature.values:
            for a in ds.alpha.values[1:]:
                print(f"T={t:g} alpha={a:g}: "
                      + paired_comparison(ds.test_acc.sel(temperature=t, alpha=a).values, base, "distilled"))
        cat = as_category(ds, "alpha", lambda v: f"alpha {v:g}" if v else "labels only (alpha 0)")
        save(metric_vs_axis(cat, "temperature", f"Distillation into the MTJ student 784-32-10 (4 epochs, teacher "
                            f"784-512-512-10 tanh), {ds.sizes['network']} networks per cell"),
             figs / "distill_sweep.png")

    ds = open_store(args.runs, "paper_mnist_distill_t2")
    if ds is not None:
        table(ds, "MNIST distillation at the sweep's best setting (T = 2, alpha = 0.3)")
        labels, distilled = (ds.test_acc.sel(alpha=a).values for a in ds.alpha.values)
        print(paired_comparison(distilled, labels, "distilled"))

    # The extended studies.
    ds = open_store(args.runs, "gradient_modes")
    if ds is not None:
        table(ds, "Gradient modes")
        shown = [m for m in ds.grad_mode.values if m not in ("relu", "sigmoid")]  # tanh stands for the digital ones
        for m in ds.grad_mode.values:
            med = ds.test_acc.sel(grad_mode=m).median("network").values
            print(f"{m}: median acc by sigma_d2d {np.round(100 * med, 1)}")
        save(metric_vs_axis(ds.sel(grad_mode=shown), "sigma_d2d",
                            "Gradient modes under rising device-to-device spread, digits 64-16-10, bridge readout "
                            f"(r_ref 1500 ohm), {ds.sizes['network']} networks per cell"),
             figs / "gradient_modes.png")

    ds = open_store(args.runs, "delta_i_tradeoff")
    if ds is not None:
        table(ds, "dI trade-off")
        noise = as_category(ds, "read_noise", lambda v: f"noise {v * 1e3:g} mV")
        for bits in ds.adc_bits.values:
            sub = noise.sel(adc_bits=bits)
            med = sub.test_acc.median("network")
            for n in sub.read_noise.values:
                m = med.sel(read_noise=n).values
                print(f"adc_bits={bits} {n}: median acc by dI {np.round(100 * m, 1)}; best dI "
                      f"{ds.delta_i.values[int(np.argmax(m))]:.3g} A")
        fig = metric_vs_axis(noise.sel(adc_bits=ds.adc_bits.values[0]), "delta_i",
                             f"dI trade-off, digits 64-16-10, fd_forward, adc_bits={ds.adc_bits.values[0]} (no ADC)")
        save(fig, figs / "delta_i_tradeoff.png")
        adc = as_category(ds, "adc_bits", lambda v: f"ADC {v:g} bits" if v else "no ADC")
        fig = metric_vs_axis(adc.sel(read_noise=ds.read_noise.values[0]), "delta_i",
                             f"dI trade-off against ADC resolution, read noise {ds.read_noise.values[0] * 1e3:g} mV")
        save(fig, figs / "delta_i_adc.png")

    ds = open_store(args.runs, "pair_mismatch")
    if ds is not None:
        table(ds, "Pair mismatch")
        cat = as_category(ds, "delta_i", lambda v: f"dI {v * 1e6:g} uA")
        save(metric_vs_axis(cat, "sigma_pair", "Pair mismatch x dI, digits 64-16-10, fd_forward"),
             figs / "pair_mismatch.png")

    ds = open_store(args.runs, "variability_yield")
    if ds is not None:
        table(ds, "Yield")
        # Every chip of every cell reaches 90 %, so the figure's yield is the stricter "all 30 test
        # flowers right" (threshold 1.0).
        perfect = (ds.test_acc >= 1.0 - 1e-9).mean("network")
        print("fraction of chips at 100 % test accuracy (sigma_chip x sigma_d2d):\n",
              np.round(100 * perfect.transpose("sigma_chip", "sigma_d2d").values, 1))
        fig = plot.heatmap(ds, "sigma_d2d", "sigma_chip", 1.0)  # 30 of 30 is 1.0 exactly
        fig.suptitle(f"Iris 4-8-3 with MTJ pairs: chip-to-chip x device-to-device spread, "
                     f"{ds.sizes['network']} chips per cell (right: yield at 100 % test accuracy)")
        save(fig, figs / "variability_yield.png")

    ds = open_store(args.runs, "float32_junctions")
    if ds is not None:
        table(ds, "float32 junctions")
        axis = "model" if "model" in ds.dims else "name"  # a store made before 2026-12-02 named it name
        f32, f64 = (ds.sel({axis: name}) for name in ("stt_compact_f32", "stt_compact"))
        for delta_i in ds.delta_i.values:
            for noise in ds.read_noise.values:
                cell = dict(delta_i=delta_i, read_noise=noise)
                err32, err64 = (float(np.nanmedian(last_epoch_values(x, "deriv_rel_err").sel(cell).values))
                                for x in (f32, f64))
                loss32, loss64 = (last_epoch_values(x, "train_loss").sel(cell).values for x in (f32, f64))
                print(f"dI {delta_i:g} A, read noise {noise:g} V: median dV/dI rel. err. float32 {err32:.3g}, "
                      f"float64 {err64:.3g}; final training loss within {np.nanmax(np.abs(loss32 / loss64 - 1)):.1e} "
                      "relative; " + paired_comparison(f32.test_acc.sel(cell).values,
                                                                  f64.test_acc.sel(cell).values, "stt_compact_f32",
                                                                  "stt_compact", "two-sided"))

    ds = open_store(args.runs, "macrospin")
    if ds is not None:
        table(ds, "Macrospin")
        dims = [d for d in ds.test_acc.dims if d not in ("network", "epoch") and ds[d].dtype.kind not in "OUS"]
        save(metric_vs_axis(ds, dims[0], f"Macrospin (LLGS) junctions, Iris 4-8-3, {ds.sizes['network']} networks "
                                "per cell (30 test samples: mean accuracy shown)", acc_stat="mean"),
             figs / "macrospin.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
