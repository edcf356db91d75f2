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
