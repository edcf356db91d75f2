"""Let Numba's CUDA simulator run kernels that call ``numba.njit`` device functions with arrays.

Inside a simulated kernel, Numba hands each array argument over as a ``FakeWithinKernelCUDAArray``
wrapper (it emulates record-attribute access, which spingpu does not use). A ``numba.njit``
function cannot unbox that wrapper, so a kernel passing an array row to a scalar device function
fails in the simulator although it compiles and runs on a GPU. :func:`install` makes the simulator
hand over the simulated device array's NumPy storage instead: the kernel reads and writes the same
memory, which the simulator copies back to the host after the launch as usual.

Only called when ``NUMBA_ENABLE_CUDASIM=1``; it changes nothing on a real GPU.
"""

_installed = False


def install():
    global _installed
    if _installed:
        return
    from numba.cuda.simulator import kernel

    kernel.FakeWithinKernelCUDAArray = lambda fake: fake._ary
    _installed = True
