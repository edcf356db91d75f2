"""cuda.syncthreads() in Numba's CUDA simulator on a condition variable, for the test session.

The simulator runs a block's threads as Python threads; its ``BlockManager.run`` releases them from
cuda.syncthreads() once a loop polling every thread, without pause, sees all live ones blocked
there: that loop took about two thirds of a simulated kernel's CPU time. Here the same barrier on a
condition variable: the last live thread to arrive, or to finish, releases the others (a finished
thread no longer counts, as there); an exception aborts the block's other threads and is raised by
the launch, naming its thread. tests/test_simulator_barrier.py runs kernels under both.
"""

import threading

import numba
import numpy as np
from numba import cuda


def _run_block(self, grid_point, *args):
    self._cond, self._waiting, self._round = threading.Condition(), 0, 0
    done, failed = threading.Event(), []

    def target():
        try:
            self._f(*args)
        except Exception:
            with self._cond:
                failed.append(threading.current_thread())
                for t in threads:
                    t.abort = True
                self._release()
            done.set()
            raise  # BlockThread.run keeps it, naming the thread, as the simulator does
        finally:
            with self._cond:
                self._live -= 1
                if self._waiting == self._live:
                    self._release()
                if not self._live:
                    done.set()

    threads = [POLLING["module"].BlockThread(target, self, grid_point, point, self._debug)
               for point in np.ndindex(*self._block_dim)]
    self._live = len(threads)
    for t in threads:
        t.start()
    done.wait()
    if failed:
        failed[0].join()  # it has set its exception by then
        raise failed[0].exception[0].with_traceback(failed[0].exception[1])


def _release(self):
    """Wake the threads waiting in syncthreads (the lock held)."""
    self._waiting = 0
    self._round += 1
    self._cond.notify_all()


def _syncthreads(self):
    if self.abort:
        raise RuntimeError("abort flag set on syncthreads call")
    block = self._manager
    with block._cond:
        this_round = block._round
        block._waiting += 1
        if block._waiting == block._live:
            block._release()
        while block._round == this_round:
            block._cond.wait()
    if self.abort:
        raise RuntimeError("abort flag set on syncthreads clear")


POLLING = {}  # the simulator's module and its own methods, once install() has replaced them


def install():
    """Replace the simulator's barrier (numba.cuda must be the simulator: NUMBA_ENABLE_CUDASIM=1).

    The replacement relies on the simulator's internals (numba-cuda 0.30); a block exchanging
    values through shared memory checks it at once, and a simulator that differs keeps its own
    barrier, with a warning: the tests are then slower, not wrong."""
    import warnings

    from numba.cuda.simulator import kernel

    if not POLLING:
        POLLING.update(module=kernel, run=kernel.BlockManager.run, syncthreads=kernel.BlockThread.syncthreads)
    kernel.BlockManager.run, kernel.BlockManager._release = _run_block, _release
    kernel.BlockThread.syncthreads = _syncthreads
    result = ["no result in 60 s (a deadlock?)"]

    def check():
        try:
            result[0] = _exchange_check()
        except Exception as error:  # noqa: BLE001 - any failure means: keep the simulator's barrier
            result[0] = repr(error)

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    checker.join(60.0)
    works = result[0]
    if works is not True:
        kernel.BlockManager.run, kernel.BlockThread.syncthreads = POLLING["run"], POLLING["syncthreads"]
        warnings.warn(f"the simulator's own (polling) barrier is kept: the condition-variable one failed its "
                      f"check on this numba-cuda ({works})", stacklevel=2)
    return works is True


def _exchange_check():
    """Two blocks of 8 threads pass values round through shared memory across barriers; the last
    three threads finish before the final barrier."""
    out = np.full((2, 5), np.nan)
    cuda.jit(_ring)[2, 8](out)
    expected = (np.arange(5)[None, :] + 3) % 8 + 10.0 * np.arange(2)[:, None]
    return True if np.array_equal(out, expected) else f"got {out.tolist()}"


def _ring(out):
    # at module level: the simulator gives a kernel its fake ``cuda`` through the module's globals
    tid = cuda.threadIdx.x
    buf = cuda.shared.array(8, numba.float64)
    buf[tid] = tid + 10.0 * cuda.blockIdx.x
    cuda.syncthreads()
    value = buf[(tid + 1) % 8]
    cuda.syncthreads()
    buf[tid] = value
    if tid >= 5:
        return
    cuda.syncthreads()
    out[cuda.blockIdx.x, tid] = buf[(tid + 2) % 8]
