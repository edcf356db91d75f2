"""Progress bars of long work (tqdm), on stderr, cleared when the work ends.

On a terminal a bar redraws up to 10 times a second; where stderr is a file or a pipe (a batch
job's log) every 30 s, so that a day's run adds kilobytes to the log, not megabytes. A write to
stderr that fails (closed, or a full disk) is dropped: progress never costs the run.
"""

from __future__ import annotations

import contextlib
import sys

LOG_INTERVAL_S = 30.0  # seconds between redraws where stderr is not a terminal


class _Dropping:
    """stderr for progress output: a write that fails is dropped, not raised. Equal to the stream
    it wraps, so that ``tqdm.write(line, file=sys.stderr)`` (a warning above a bar) finds the bars
    on it, clears them and draws them again below the line."""

    def __init__(self, stream):
        self._stream = stream

    def __eq__(self, other):
        return other is self._stream or (isinstance(other, _Dropping) and other._stream is self._stream)

    def __hash__(self):
        return id(self._stream)

    def write(self, text):
        try:
            return self._stream.write(text)
        except (AttributeError, OSError, ValueError):  # None (2>&-), a full or closed stream
            return 0

    def flush(self):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._stream.flush()


def tqdm_options(**overrides):
    """tqdm's keyword arguments for this process's stderr (output stream, redraw interval, the bar
    cleared when done), ``overrides`` replacing them."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, OSError, ValueError):
        terminal = False
    return dict(file=_Dropping(sys.stderr), mininterval=0.1 if terminal else LOG_INTERVAL_S, dynamic_ncols=True,
                leave=False) | overrides


@contextlib.contextmanager
def progress_bar(enabled, total, unit):
    """A progress bar (None when not ``enabled``), cleared however the work ends: a message after
    Ctrl-C or an error starts a line of its own."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, unit_scale=True, **tqdm_options())
    try:
        yield bar
    finally:
        bar.close()


STUDY_SETUP = ("setting up: workers sample junctions and load kernels (compiled on a machine's first run of a model "
               "or network depth, ~15-60 s)")
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

    line = tqdm(total=None, bar_format="{desc}", desc=text, **tqdm_options())
    try:
        yield
    finally:
        line.close()
