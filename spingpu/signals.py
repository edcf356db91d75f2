"""Ctrl-C and SIGTERM: both stop a command through the same clean-up.

SIGTERM (a batch system's time limit or ``scancel``, ``timeout``, ``kill``) is raised as
:class:`Terminated`, a KeyboardInterrupt, so that what Ctrl-C does runs: temporary files removed,
finished tasks kept, workers closed. :func:`deferred_interrupts` holds both back while something
must not be cut in the middle. (Not in ``spingpu.cli.main``, which also runs as ``__main__``, whose
copy of a class would not be the one other modules catch.)
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within: SIGTERM raises :class:`Terminated` in the main thread, where its handler is the
    default (a process that set its own keeps it)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stopped(err):
    """(what happened, exit status) of a KeyboardInterrupt: Ctrl-C or SIGTERM."""
    return ("terminated", EXIT_TERMINATED) if isinstance(err, Terminated) else ("interrupted", EXIT_INTERRUPTED)


@contextlib.contextmanager
def deferred_interrupts():
    """Within: SIGINT and SIGTERM are held back and delivered, to the handlers in place before,
    on leaving (e.g. while a task's results are written and marked done, so that a Ctrl-C never
    leaves a store write half-run; zarr's writes are coroutines, and one cut off warns that it was
    never awaited). Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)
