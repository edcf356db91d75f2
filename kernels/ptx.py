"""Compile CUDA kernels to PTX, and assemble PTX to machine code, for a chosen architecture
without a GPU or driver."""

import contextlib
import math
import re
from dataclasses import dataclass

# The register file as CUDA's occupancy calculator (cuda_occupancy.h) models it for sm_70 to sm_12x
REGISTERS_PER_SM = 65536  # 32-bit registers per multiprocessor, and the most one block may hold
REGISTER_UNIT = 256  # registers are allocated per warp in multiples of 256
SUB_PARTITIONS = 4  # each holds a quarter of the registers and its own warps
MAX_REGISTERS_PER_THREAD = 256
WARP = 32


def arch_name(cc):
    """``sm_XY`` of compute capability (X, Y)."""
    return f"sm_{cc[0]}{cc[1]}"


@dataclass(frozen=True)
class _FixedDevice:
    compute_capability: tuple


@contextlib.contextmanager
def fixed_compute_capability(cc):
    """Let numba-cuda compile device functions for ``cc`` without asking a driver.

    numba-cuda compiles a device function called from a kernel for the *current* device's compute
    capability, which needs a driver. For PTX-only compilation we answer that lookup with ``cc``.
    """
    from numba.cuda import dispatcher

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _FixedDevice(tuple(cc))
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_ptx(kernel, signature, cc=(9, 0)):
    """PTX text of a ``numba.cuda.jit`` kernel (or its Python function) for ``signature``, with the
    kernel's own code-generation options (launch bounds, fastmath, optimisation, debug, line info)."""
    from numba import cuda

    from .cuda_setup import prepare

    prepare()
    py_func = getattr(kernel, "py_func", kernel)
    options = getattr(kernel, "targetoptions", {})
    forwarded = {k: options[k] for k in PTX_OPTIONS if k in options}
    with fixed_compute_capability(cc):
        ptx, _ = cuda.compile_ptx(py_func, signature, cc=tuple(cc), **forwarded)
    return ptx


PTX_OPTIONS = ("launch_bounds", "fastmath", "opt", "debug", "lineinfo", "forceinline")  # of cuda.jit and compile_ptx


@dataclass(frozen=True)
class Resources:
    """What the assembler (ptxas, run by nvJitLink) gives one kernel on one architecture."""

    registers: int  # 32-bit registers per thread
    stack_bytes: int  # per thread, in local memory: local arrays and call frames
    shared_bytes: int  # static shared memory per block; on sm_90 it includes the 1 KiB the system reserves
    spill_bytes: int  # register spill stores + loads, summed over the kernel and the functions it calls

    def blocks_per_sm(self, threads):
        """Resident blocks of ``threads`` threads per multiprocessor that the register file allows
        (``cudaOccMaxBlocksPerSMRegsLimit`` of CUDA's cuda_occupancy.h, sm_70 and later): a warp takes
        32 x registers rounded up to a multiple of 256; each of the 4 sub-partitions holds
        floor(16,384 / that) warps; blocks = floor(4 x that / warps per block). 0 means a block of that
        size cannot launch: the hardware checks the block's registers with its warps rounded up to a
        multiple of 4 against the 65,536 of a block."""
        per_warp = math.ceil(WARP * self.registers / REGISTER_UNIT) * REGISTER_UNIT
        warps = math.ceil(threads / WARP)
        assumed = per_warp * math.ceil(warps / SUB_PARTITIONS) * SUB_PARTITIONS
        if self.registers > MAX_REGISTERS_PER_THREAD or max(assumed, per_warp * warps) > REGISTERS_PER_SM:
            return 0
        if per_warp == 0:
            return REGISTERS_PER_SM  # no registers: no register limit
        warps_per_sub_partition = REGISTERS_PER_SM // SUB_PARTITIONS // per_warp
        return warps_per_sub_partition * SUB_PARTITIONS // warps


_USED = re.compile(r"used (\d+) registers.*?(\d+) stack, (\d+) bytes smem")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def assemble(ptx, cc=(9, 0)):
    """:class:`Resources` of the one kernel in ``ptx`` assembled to SASS for ``cc`` by nvJitLink
    (``cuda.bindings``, which numba-cuda's ``cu12``/``cu13`` extras install), or None if it
    assembled but its log holds no resource line we can read (``info : used N registers, ...
    S stack, M bytes smem``, the format of nvJitLink 13). Raises RuntimeError with the
    assembler's first error line (e.g. ``uses too much shared data``)."""
    from cuda.bindings import nvjitlink

    arch = arch_name(cc)
    handle = nvjitlink.create(2, [f"-arch={arch}", "-verbose"])

    def log(size, get):
        buf = bytearray(size(handle))
        get(handle, buf)
        return buf.decode(errors="replace")

    try:
        data = ptx.encode()
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as err:
            text = log(nvjitlink.get_error_log_size, nvjitlink.get_error_log).replace("\0", "")
            lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()]
            first = next((ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()), str(err))
            raise RuntimeError(f"assembling for {arch}: {first}") from None
        info = log(nvjitlink.get_info_log_size, nvjitlink.get_info_log)
    finally:
        nvjitlink.destroy(handle)
    used = _USED.findall(info)
    if not used:
        return None
    if len(used) > 1:
        raise RuntimeError(f"assembling for {arch}: {len(used)} resource lines in nvJitLink's log; expected one kernel")
    registers, stack, shared = map(int, used[0])
    spills = sum(int(s) + int(ld) for s, ld in _SPILLS.findall(info))
    return Resources(registers, stack, shared, spills)
