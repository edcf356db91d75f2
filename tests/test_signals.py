"""Ctrl-C and SIGTERM (spingpu.signals): raised as exceptions, held back around store writes, and
never lost where Python cannot raise them."""

import gc
import os
import signal
import sys
import time

import pytest

from spingpu.signals import (Terminated, deferred_interrupts, discard_stop, raise_if_stopped, stop_point,
                             stop_signals_raise)

STOPS = ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated))


@pytest.fixture
def default_handlers():
    """Python's default handlers, as in a command-line process (a test runner's worker may have its
    own SIGTERM handler); put back afterwards."""
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL), signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def test_deferred_interrupts_hold_ctrl_c_and_sigterm_until_the_store_write_ends(default_handlers):
    for sig, expected in STOPS:
        done = []
        with pytest.raises(expected) as raised, stop_signals_raise():
            with deferred_interrupts():
                os.kill(os.getpid(), sig)
                time.sleep(0.05)  # a handler would have run by now
                done.append("written")
        assert done == ["written"] and type(raised.value) is expected
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stop_point_delivers_a_held_stop_between_pieces_of_deferred_work(default_handlers):
    """Long deferred work (junction tables in chunks) calls stop_point between chunks: a stop
    held during a chunk acts there, the next chunks never start; with no stop it does nothing,
    and the holding goes on after it (a stop inside the next chunk still waits for its end)."""
    for sig, expected in STOPS:
        chunks = []
        with pytest.raises(expected), stop_signals_raise():
            with deferred_interrupts():
                for chunk in range(5):
                    stop_point()  # nothing held: nothing happens
                    chunks.append(chunk)
                    if chunk == 1:
                        os.kill(os.getpid(), sig)
                        time.sleep(0.05)
                        chunks.append("chunk 1 ends")  # held: the chunk runs to its end
                    stop_point()
        assert chunks == [0, 1, "chunk 1 ends"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # all put back
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    # a stop point with nothing held leaves the holding in place
    done = []
    with pytest.raises(KeyboardInterrupt), stop_signals_raise():
        with deferred_interrupts():
            stop_point()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("after")
    assert done == ["after"]
    stop_point()  # outside any deferral: nothing


class _SignalledWhileCollected:
    """An object whose __del__ receives ``sig``: Python runs the handler there and can only print
    its exception as unraisable ("Exception ignored in ...") and carry on."""

    def __init__(self, sig):
        self.sig = sig

    def __del__(self):
        signal.raise_signal(self.sig)
        sum(range(10))  # bytecodes after the signal: its handler runs here, inside __del__


def test_a_stop_raised_inside_a_finaliser_is_not_lost_nor_reported(default_handlers, monkeypatch):
    """The cause of a run that went on to exit 0 after SIGTERM: the handler's exception was raised
    in a Dask future's __del__ and swallowed. raise_if_stopped() raises it again, and it is not
    reported as unraisable; other unraisable exceptions still are."""
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: reported.append(info.exc_type))
    for sig, expected in STOPS:
        steps = []
        with pytest.raises(expected) as raised, stop_signals_raise():
            for step in range(3):
                _SignalledWhileCollected(sig)  # dropped at once: __del__ runs here
                gc.collect()
                steps.append(step)  # the loop went on: the exception did not reach it
                raise_if_stopped()
        assert steps == [0] and type(raised.value) is expected
        raise_if_stopped()  # outside: no stop recorded any more
    assert reported == []

    class Failing:
        def __del__(self):
            raise ValueError("a finaliser's own error")

    with stop_signals_raise():
        Failing()
        gc.collect()
    assert reported == [ValueError]
    assert sys.unraisablehook.__name__ == "<lambda>"  # the test's own hook, put back


def test_a_stop_lost_after_the_last_check_still_ends_the_block(default_handlers, monkeypatch):
    """A run that went on to exit 0 after Ctrl-C: the stop was swallowed in a finaliser while the
    cluster closed, after the task loop's last raise_if_stopped(). Leaving the block raises it."""
    monkeypatch.setattr(sys, "unraisablehook", lambda info: None)
    for sig, expected in STOPS:
        went_on = []
        with pytest.raises(expected) as raised, stop_signals_raise():
            _SignalledWhileCollected(sig)
            gc.collect()
            went_on.append(True)
        assert went_on == [True] and type(raised.value) is expected
    with stop_signals_raise():  # no stop: leaves quietly
        went_on.append(False)


def test_a_recorded_stop_outlives_another_error_and_nested_blocks_unless_set_aside(default_handlers, monkeypatch):
    """A stop swallowed by a finaliser is not lost when another exception leaves the block (it may be
    what the lost stop caused: the stop is raised from it), nor when a nested block opens and
    closes; discard_stop() sets it aside (a command reporting a failure that came first)."""
    monkeypatch.setattr(sys, "unraisablehook", lambda info: None)
    with pytest.raises(KeyboardInterrupt) as raised, stop_signals_raise():
        _SignalledWhileCollected(signal.SIGINT)
        gc.collect()
        raise ValueError("what the lost stop caused")
    assert type(raised.value) is KeyboardInterrupt and isinstance(raised.value.__cause__, ValueError)
    steps = []
    with pytest.raises(Terminated), stop_signals_raise():
        _SignalledWhileCollected(signal.SIGTERM)
        gc.collect()
        with stop_signals_raise():
            steps.append("inner")
        steps.append("after the inner block")
    assert steps == ["inner"]  # the inner block's end raised the outer block's stop
    with stop_signals_raise():
        _SignalledWhileCollected(signal.SIGINT)
        gc.collect()
        discard_stop()
    raise_if_stopped()  # nothing recorded


def test_handlers_set_by_the_process_are_kept(default_handlers):
    """A process (or test runner) with its own handlers keeps them; nothing is recorded."""
    calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    with stop_signals_raise():
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # ours
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        raise_if_stopped()
    assert calls == [signal.SIGTERM]


def test_a_stop_waits_for_the_kernels_to_compile(default_handlers, make_blobs):
    """SIGTERM while Numba compiles (cut there, Numba was left without the object code of a function
    and the run ended in a RuntimeError, exit 1): the compilation finishes, then the stop acts."""
    import numpy as np

    from spingpu import get_model
    from spingpu.training import TrainConfig
    from spingpu.training.numpy_engine import NumpyEngine
    from spingpu.training.trainer import _train_batched

    done = []

    class Engine(NumpyEngine):
        def compile_kernels(self, x, y):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # a handler would have run by now
            super().compile_kernels(x, y)
            done.append("compiled")

    with pytest.raises(Terminated), stop_signals_raise():
        _train_batched(Engine, make_blobs(1, 30, 3, 1), TrainConfig(hidden=(3,), epochs=2), np.arange(2),
                       get_model("stt_compact"), None, False)
    assert done == ["compiled"]
