"""Figures as functions returning matplotlib figures (matplotlib is imported here, not by spingpu)."""

from .devices import iv_spread_figure

__all__ = ["iv_spread_figure"]
