"""spingpu's compute kernels: scalar device physics, counter-based random numbers, array kernels.

This subpackage knows arrays and numbers only. Every scalar function is ``numba.njit``; the CPU
kernels call it compiled for the CPU and the CUDA kernels call the same function, which numba-cuda
compiles as a device function, so both targets run one source. Modules that need ``numba.cuda``
import it inside the function that builds a CUDA kernel, so importing this package needs no GPU.
"""
