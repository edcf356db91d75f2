"""Progress bars of long work (tqdm), on stderr, cleared when the work ends."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_bar(enabled, total, unit):
    """A progress bar (None when not ``enabled``), cleared however the work ends: a message after
    Ctrl-C or an error starts a line of its own."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()


STUDY_SETUP = "setting up (first run of a model or network depth on a machine: ~15-60 s to compile)"
SETUP = ("setting up: junctions, kernels (compiled on a machine's first run of a model or network depth, ~15-60 s; "
         "then loaded from disk)")


@contextlib.contextmanager
def status(enabled, text=SETUP):
    """A line of ``text`` on stderr (when ``enabled``) while work without a count runs, cleared
    when it ends, as a progress bar is."""
    if not enabled:
        yield
        return
    from tqdm import tqdm

    line = tqdm(total=None, bar_format="{desc}", desc=text, dynamic_ncols=True, leave=False)
    try:
        yield
    finally:
        line.close()
