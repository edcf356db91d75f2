"""I-V and dV/dI curves of a nominal junction and of sampled pairs."""

from __future__ import annotations

import numpy as np

from .style import set_suptitle


def iv_spread_figure(current, v_nominal, dvdi_nominal, v_samples=None, dvdi_samples=None, title="", r_ref=None):
    """Two panels, V(I) and dV/dI(I), of the nominal device and sampled pairs.

    ``current`` (A) has shape (M,); nominal curves (M,); samples (N, 2, M) for N neurons whose
    members A (solid) and B (dashed) share a colour. Axes in uA, V and kOhm. ``r_ref`` (ohm): a
    bridge readout's reference, drawn on the dV/dI panel: the activation's slope is then
    proportional to dV/dI - r_ref, not to dV/dI.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax_v, ax_d = fig.subplots(1, 2)
    i_ua = np.asarray(current) * 1e6
    if v_samples is not None:
        n = len(v_samples)
        colours = [_colour(k, n) for k in range(n)]
        for k in range(n):
            for member, style in ((0, "-"), (1, "--")):
                ax_v.plot(i_ua, v_samples[k, member], style, color=colours[k], lw=0.9, alpha=0.8)
                ax_d.plot(i_ua, dvdi_samples[k, member] * 1e-3, style, color=colours[k], lw=0.9, alpha=0.8)
    for ax, y in ((ax_v, v_nominal), (ax_d, np.asarray(dvdi_nominal) * 1e-3)):
        ax.plot(i_ua, y, color="black", lw=2.2, label="nominal")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("current I (µA)")
    if v_samples is not None:  # the legend goes on the I-V panel: its curves leave two quadrants empty
        ax_v.plot([], [], "-", color="grey", lw=0.9, label=f"junction A ({len(v_samples)} sampled pairs)")
        ax_v.plot([], [], "--", color="grey", lw=0.9, label="junction B (same colour = same pair)")
    ax_v.set_ylabel("voltage V (V)")
    ax_v.set_title("I-V curve")
    ax_d.set_ylabel("differential resistance dV/dI (kΩ)")
    if r_ref is None:
        ax_d.set_title("dV/dI: the activation's derivative (up to v_scale i_gain)")
    else:
        ax_d.axhline(r_ref * 1e-3, color="tab:red", lw=1.4, ls=":", label=f"r_ref = {r_ref * 1e-3:g} kΩ (bridge)")
        ax_d.set_title("the activation's derivative is dV/dI - r_ref (bridge readout)")
        ax_d.legend(loc="best", fontsize="small")
    ax_v.legend(loc="best", fontsize="small")
    if title:
        set_suptitle(fig, title)
    return fig


def _colour(k, n):
    from matplotlib import colormaps

    return colormaps["viridis"](0.1 + 0.8 * k / max(n - 1, 1))
