"""The simulator's barrier as the tests run it (tests/simulator_barrier.py, a condition variable) and
the simulator's own (a polling loop): the same numbers through shared memory, with threads that
finish early and block reductions, and the same error where a thread raises."""

import numba
import numpy as np
import pytest
from numba import cuda

import simulator_barrier

THREADS, STAYING = 64, 40


@cuda.jit
def exchange(out):
    """Each thread reads what its neighbours wrote before a barrier; threads from STAYING on finish
    before the last barrier, which the others then pass alone."""
    tid = cuda.threadIdx.x
    buf = cuda.shared.array(THREADS, numba.float64)
    buf[tid] = tid * 1.5 + cuda.blockIdx.x
    cuda.syncthreads()
    value = buf[(tid + 1) % THREADS]
    cuda.syncthreads()
    buf[tid] = 2.0 * value
    count = cuda.syncthreads_count(tid % 3 == 0)
    some, every = cuda.syncthreads_or(tid == 17), cuda.syncthreads_and(tid != 17)
    if tid >= STAYING:
        return
    cuda.syncthreads()
    out[cuda.blockIdx.x, tid] = buf[(tid + 7) % STAYING] + count + 100 * some + 1000 * every


@cuda.jit
def fails(out):
    tid = cuda.threadIdx.x
    if tid == 5:
        out[100] = 1.0  # beyond the array: IndexError
    cuda.syncthreads()
    out[tid] = tid


def expected_exchange(blocks):
    tid = np.arange(THREADS)
    out = np.empty((blocks, STAYING))
    for b in range(blocks):
        buf = 2.0 * (((tid + 1) % THREADS) * 1.5 + b)
        out[b] = buf[(tid[:STAYING] + 7) % STAYING] + np.sum(tid % 3 == 0) + 100
    return out


@pytest.fixture(params=["condition", "polling"])
def barrier(request, monkeypatch):
    if request.param == "polling":
        kernel = simulator_barrier.POLLING["module"]
        monkeypatch.setattr(kernel.BlockManager, "run", simulator_barrier.POLLING["run"])
        monkeypatch.setattr(kernel.BlockThread, "syncthreads", simulator_barrier.POLLING["syncthreads"])
    return request.param


def test_threads_meet_at_every_barrier_and_finished_ones_are_not_waited_for(barrier):
    out = np.full((3, STAYING), np.nan)
    exchange[3, THREADS](out)
    np.testing.assert_array_equal(out, expected_exchange(3))


def test_a_thread_that_raises_fails_the_launch_naming_itself(barrier):
    with pytest.raises(IndexError, match=r"^tid=\[5, 0, 0\] ctaid=\[0, 0, 0\]: index 100 is out of bounds"):
        fails[1, 32](np.zeros(32))


def test_a_barrier_that_fails_its_check_leaves_the_simulators_own(monkeypatch):
    kernel = simulator_barrier.POLLING["module"]
    monkeypatch.setattr(simulator_barrier, "_exchange_check", lambda: "got [[nan]]")
    try:
        with pytest.warns(UserWarning, match=r"simulator's own \(polling\) barrier is kept.*got \[\[nan\]\]"):
            assert simulator_barrier.install() is False
        assert kernel.BlockManager.run is simulator_barrier.POLLING["run"]
        assert kernel.BlockThread.syncthreads is simulator_barrier.POLLING["syncthreads"]
        out = np.full((2, STAYING), np.nan)
        exchange[2, THREADS](out)
        np.testing.assert_array_equal(out, expected_exchange(2))
    finally:
        monkeypatch.undo()
        assert simulator_barrier.install() is True
