"""Ctrl-C and SIGTERM: both stop a command through the same clean-up.

SIGTERM (a batch system's time limit or ``scancel``, ``timeout``, ``kill``) is raised as
:class:`Terminated`, a KeyboardInterrupt, so that what Ctrl-C does runs: temporary files removed,
finished tasks kept, workers closed. :func:`deferred_interrupts` holds both back while something
must not be cut in the middle. (Not in ``spingpu.cli.main``, which also runs as ``__main__``, whose
copy of a class would not be the one other modules catch.)

A signal's handler runs between any two bytecodes of the main thread, also inside a ``__del__``
method or a weakref or garbage-collector callback (a Dask future the task loop lets go of), where
Python cannot raise: it prints "Exception ignored in ..." and carries on, and the stop would be
lost. So the handlers of :func:`stop_signals_raise` also record the stop, long loops call
:func:`raise_if_stopped` between their steps, and a stop lost that way is not printed.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


_STOPS = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}
_received = []  # the stop signals that reached the handlers of stop_signals_raise(), in order
_open_blocks = []  # one entry per stop_signals_raise block open in the main thread
_deferrals = []  # (signals held, handlers before, holding handler) of each deferred_interrupts, innermost last


def _raise_stop(signum, frame):
    _received.append(signum)
    raise _STOPS[signum]()


def raise_if_stopped():
    """Raise the stop (KeyboardInterrupt or :class:`Terminated`) of the first stop signal received
    within :func:`stop_signals_raise`, if any: a loop calls it between steps, so that a stop whose
    exception Python could not raise (module doc) still ends the loop. Does nothing elsewhere."""
    if _received:
        raise _STOPS[_received[0]]()


@contextlib.contextmanager
def stop_signals_raise():
    """Within: SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated` in the main thread,
    each where its handler is Python's default (a process that set its own keeps it), and an
    exception of theirs that Python could only report as unraisable is not printed
    (:func:`raise_if_stopped` raises it again, at the latest on leaving the block: a stop received
    within it and not reported (:func:`stopped`) or set aside (:func:`discard_stop`) is never
    lost; another exception leaving the block with one recorded becomes that stop, raised from it)."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in defaults}
    ours = [sig for sig, handler in previous.items() if handler is defaults[sig]]
    unraisable = sys.unraisablehook

    def hook(info):
        if not (_received and isinstance(info.exc_value, KeyboardInterrupt)):
            unraisable(info)

    outermost = not _open_blocks  # a nested block keeps the record of the one around it
    if outermost:
        _received.clear()
    _open_blocks.append(None)
    for sig in ours:
        signal.signal(sig, _raise_stop)
    sys.unraisablehook = hook
    try:
        yield
        raise_if_stopped()  # a stop lost after the block's last check (closing a cluster) still ends it
    except BaseException as err:
        if _received and not isinstance(err, KeyboardInterrupt):  # the stop came first, or caused this error
            raise _STOPS[_received[0]]() from err
        raise
    finally:
        sys.unraisablehook = unraisable
        for sig in ours:
            signal.signal(sig, previous[sig])
        _open_blocks.pop()
        if outermost:
            _received.clear()


def discard_stop():
    """Set aside the stops received so far: the command ends reporting something that came first
    (a task that failed, while its workers closed), so they are not raised again."""
    _received.clear()


def stopped(err):
    """(what happened, exit status) of a KeyboardInterrupt: Ctrl-C or SIGTERM. The caller reports
    the stop: it is not raised again (:func:`raise_if_stopped`)."""
    _received.clear()
    return ("terminated", EXIT_TERMINATED) if isinstance(err, Terminated) else ("interrupted", EXIT_INTERRUPTED)


@contextlib.contextmanager
def deferred_interrupts(deliver=True):
    """Within: SIGINT and SIGTERM are held back and delivered, to the handlers in place before,
    on leaving. For what must not be cut in the middle: a task's results written and marked done
    (zarr's writes are coroutines, and one cut off warns that it was never awaited), and Numba
    compiling the kernels (an exception raised in LLVM's callback into Numba is lost, and Numba
    then fails with "no compiled object yet": an error, not a stop). ``deliver=False`` drops them
    instead: for closing down after a stop, which a second Ctrl-C would only repeat (and cut the
    workers' shutdown short). Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []

    def hold(signum, frame):
        held.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    _deferrals.append((held, previous, hold))
    try:
        yield
    finally:
        _deferrals.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held) if deliver else ():
            signal.raise_signal(sig)


def stop_point():
    """Within :func:`deferred_interrupts`, between two pieces of long work where a stop may act
    (no compiler or write in progress): deliver the stops held so far, as leaving would (a
    Ctrl-C during minutes of junction tables stops them within a chunk, not after the last).
    The holding goes on for the rest of the block. Elsewhere it does nothing."""
    if not _deferrals or not _deferrals[-1][0]:
        return
    held, previous, hold = _deferrals[-1]
    signals = list(dict.fromkeys(held))
    held.clear()
    try:
        for sig in signals:
            signal.signal(sig, previous[sig])
            signal.raise_signal(sig)  # the handler before runs now, and raises if it is one that stops
    finally:
        for sig in signals:
            signal.signal(sig, hold)
