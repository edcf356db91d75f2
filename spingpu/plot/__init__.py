"""Figures as functions returning matplotlib figures (matplotlib is imported here, not by spingpu).

``iv_spread_figure`` shows junctions; the others take a study's results Dataset
(``spingpu.open_results``) and are the figures of the HTML report.
"""

from .devices import iv_spread_figure
from .study import (accuracy_categorical, accuracy_vs_axis, delta_i_tradeoff, divergence_counts, heatmap,
                    training_curves)

__all__ = ["accuracy_categorical", "accuracy_vs_axis", "delta_i_tradeoff", "divergence_counts", "heatmap",
           "iv_spread_figure", "training_curves"]
