"""Every CUDA kernel spingpu launches, with the signatures and block size it is launched with.

Used by ``spingpu info --check-kernels`` to compile each one to PTX for a chosen architecture
without a GPU, then to assemble the PTX to machine code (nvJitLink) and report what the kernel
needs per thread and block, and by the tests. Building the list imports numba.cuda (not done by
``import spingpu``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelSpec:
    name: str
    kernel: object  # a numba.cuda.jit dispatcher
    signature: object  # a signature string or a tuple of Numba types
    threads: int  # threads per block of its launches
    layout: object = None  # the FusedLayout a fused trainer is specialised to


# the Philox key (k0, k1) is launched as split_seed returns it: Python ints, which Numba types int64
MACROSPIN_SIGNATURE = ("(float64[::1], float64[:, ::1], int64[:, ::1], int64, int64, float64[:, ::1], "
                       "float64[:, :, ::1])")


DEFAULT_ARCH = "sm_90"  # Hopper (H100, H200): the target when no GPU says otherwise
# launch bounds of the fused kernel's variants that gpu_check times: for Iris's 96 threads, 4 blocks
# cap the registers at 168 (the H200's driver gave the kernel of fc80d6b 168; above 170 only 2 fit)
FUSED_MIN_BLOCKS = (4, 5)
# the launch bound check_kernels compiles, on the stt_compact_f32 trainer (196 registers unbounded, so
# the bound binds; gpu_check compiles and times the bounds on stt_compact itself)
CHECKED_MIN_BLOCKS = FUSED_MIN_BLOCKS[0]


def catalog():
    """The kernels, one entry per compiled variant."""
    import numpy as np

    from .devices.macrospin import TABLE_MODEL
    from .devices.models import get_model
    from .devices.tabulated import tabulated_model
    from .kernels import cuda_devices

    specs = [KernelSpec("macrospin_mean_resistance", cuda_devices.macrospin_mean_resistance, MACROSPIN_SIGNATURE,
                        cuda_devices.THREADS)]
    x = np.linspace(-1e-3, 1e-3, 5)
    models = (get_model("stt_compact"), get_model("stt_compact_f32"), tabulated_model(table=(x, 1e3 * x)), TABLE_MODEL)
    # one fused trainer per model (each is ~20-30 s of NVVM), the variants spread over them: launch
    # bounds that reach ptxas, and two hidden layers with the median's values read from the global
    # row (a large full batch)
    specs += [fused_train_spec(models[0]), fused_train_spec(models[1], min_blocks=CHECKED_MIN_BLOCKS),
              fused_train_spec(models[2], hidden=(8, 8), shared_median=False), fused_train_spec(models[3])]
    specs += batched_specs(models)
    return specs


def batched_specs(models):
    """The batched engine's kernels, typed by example arrays, for float32 and float64 weights."""
    import numba
    import numpy as np

    from .kernels import batched_cuda
    from .kernels.philox import split_seed
    from .training.batched_cuda_engine import pair_layer_cuda_kernel

    def sig(*args):
        return tuple(numba.typeof(a) for a in args)

    specs = []
    threads = batched_cuda.THREADS
    i64, f64 = np.zeros(2, np.int64), np.zeros(2)
    for dtype in ("float32", "float64"):
        z = np.zeros((2, 3, 4), dtype)
        for named in models:
            model = named.kernel_model  # what the engines run, on the rows model.bind gives
            junc = np.zeros((2 * 4 * 2, model.kernel_width))  # (N U 2, P) rows
            args = (z, junc, model.nominal, np.ascontiguousarray(model.aux_table), 0, np.zeros(5), np.zeros(10),
                    *split_seed(np.uint64(0)), i64, 0, 0, 0, 0, True, z, z, z, np.zeros(z.shape, np.uint8))
            specs.append(KernelSpec(f"pair_layer[{named.name}, {dtype}]", pair_layer_cuda_kernel(model), sig(*args),
                                    threads))
        specs.append(KernelSpec(f"digital_layer[{dtype}]", batched_cuda.digital_layer, sig(0, z, z, z), threads))
        w = np.zeros(10, dtype)
        specs.append(KernelSpec(f"optimizer_update[{dtype}]", batched_cuda.optimizer_update,
                                sig(w, w, w, w, np.zeros(2, np.bool_), i64, 0, 0.1, 0.1, 0.001, f64), threads))
        specs.append(KernelSpec(f"flag_diverged[{dtype}]", batched_cuda.flag_diverged,
                                sig(w, i64, f64, np.zeros(2, np.bool_)), threads))
        specs.append(KernelSpec(f"sample_sum[{dtype}]", batched_cuda.sample_sum, sig(z, np.zeros((2, 4), dtype)),
                                threads))
        specs.append(KernelSpec(f"dot_partials[{dtype}]", batched_cuda.dot_partials,
                                sig(np.zeros((2, 4), dtype), np.zeros((2, 4), dtype), np.zeros((2, 3, 3)), 0), threads))
    logits = np.zeros((2, 3, 4))
    specs.append(KernelSpec("softmax_xent_rows", batched_cuda.softmax_xent_rows,
                            sig(logits, i64, np.zeros((1, 4)), False, 1.0, 0.0, logits, np.zeros((2, 3))), threads))
    specs.append(KernelSpec("network_mean", batched_cuda.network_mean, sig(np.zeros((2, 3)), f64), threads))
    specs.append(KernelSpec("network_cosine", batched_cuda.network_cosine, sig(np.zeros((2, 3, 3)), f64), threads))
    return specs


def fused_train_spec(model, min_blocks=None, hidden=(8,), shared_median=True):
    """The fused CUDA trainer of ``model`` for Iris-sized networks (4 features, ``hidden`` units, 3
    classes, full batch of 90), typed by the arguments of a real (tiny) run, compiled for
    ``min_blocks`` resident blocks per SM (None: the compiler's choice), with the median's values
    in shared memory where they fit or (``shared_median=False``) always read from the global row.
    Its layout is a compile-time constant, so other architectures compile the same source with
    other array sizes."""
    import dataclasses

    import numba
    import numpy as np

    from .datasets import from_arrays
    from .kernels.fused_cuda import fused_cuda_layout
    from .training import TrainConfig
    from .training.cuda_engine import Device, FusedCudaRun, fused_cuda_kernel

    rng = np.random.default_rng(0)
    y = np.arange(20) % 3
    dataset = from_arrays(rng.normal(size=(20, 4)) + y[:, None], y, name="check", seed=0)
    config = TrainConfig(hidden=hidden, epochs=1)
    # laid out for Iris's full batch of 90 training samples (96 threads); typed by the tiny run's arguments
    sizes = (4, *hidden, 3)
    layout = fused_cuda_layout(sizes, model.kernel_width, 90, min_blocks=min_blocks)
    layout = dataclasses.replace(layout, shared_median=layout.shared_median and shared_median)
    run = FusedCudaRun(dataset, config, np.arange(1), model, None, layout, Device(simulator=True))
    signature = tuple(numba.typeof(a) for a in run.probe_arguments())
    name = ", ".join([model.name] + ([] if hidden == (8,) else ["-".join(map(str, sizes))])
                     + ([] if min_blocks is None else [f"{min_blocks} blocks/SM"])
                     + ([] if shared_median else ["global median"]))
    return KernelSpec(f"fused_train[{name}]", fused_cuda_kernel(model, layout), signature, layout.threads, layout)


def parse_arch(arch):
    """Compute capability (major, minor) of ``sm_XY`` (the inverse of kernels.ptx.arch_name)."""
    from .errors import ConfigError

    digits = arch.removeprefix("sm_")
    if not arch.startswith("sm_") or len(digits) < 2 or not digits.isdigit():
        raise ConfigError("arch", f"{arch!r}; expected sm_XY, e.g. sm_80, sm_90, sm_100")
    return int(digits[:-1]), int(digits[-1])


def nvrtc_archs():
    """(NVRTC version, compute capabilities it compiles for) as numba-cuda asks them
    (``nvrtcGetSupportedArchs`` of ``cuda.bindings``), or None where NVRTC cannot be asked."""
    try:
        from cuda.bindings import nvrtc

        result, major, minor = nvrtc.nvrtcVersion()
        result_archs, archs = nvrtc.nvrtcGetSupportedArchs()
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS or result_archs != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return None
    except Exception:  # no cuda.bindings, no NVRTC library: compiling reports it
        return None
    return (major, minor), tuple(sorted((a // 10, a % 10) for a in archs))


def check_arch(arch):
    """Compute capability (major, minor) of ``arch`` (``sm_XY``) if numba-cuda's NVRTC compiles
    for it, else ConfigError listing those it does (numba-cuda refuses a lower one with
    CCSupportError, compiles one between or above them for the nearest lower, which nvJitLink then
    does not assemble). Not checked where NVRTC cannot be asked."""
    from .errors import ConfigError
    from .kernels.ptx import arch_name

    cc = parse_arch(arch)
    known = nvrtc_archs()
    if known is None or cc in known[1]:
        return cc
    (major, minor), archs = known
    names = [arch_name(a) for a in archs]
    raise ConfigError("arch", f"{arch} is not an architecture numba-cuda compiles for (NVRTC {major}.{minor}); "
                              f"allowed: {names[0]} to {names[-1]}, namely {', '.join(names)}")


_CATALOG = None  # this process's catalog(), built once for _compile
NAME_WIDTH = 48  # characters of the kernel names' column, the longest catalogue name's


@dataclass(frozen=True)
class Compiled:
    """One kernel's outcome: PTX size, and its machine-code resources if it was assembled."""

    name: str
    threads: int
    ptx_bytes: int | None = None
    resources: object = None  # kernels.ptx.Resources
    error: str | None = None
    assembled: bool = False

    def line(self):
        text = f"  {self.name:<{NAME_WIDTH}} {self.ptx_bytes:>9,d} bytes of PTX"
        r = self.resources
        if self.assembled and r is None:
            text += "; assembled (nvJitLink's log gave no resource line to read)"
        elif r is not None:
            text += (f"; {r.registers:>3d} registers, {r.stack_bytes:>5,d} B stack, {r.shared_bytes:>6,d} B shared, "
                     f"{r.spill_bytes:>5,d} B spill ld/st; {r.blocks_per_sm(self.threads):>2d} blocks of "
                     f"{self.threads} threads per SM by registers")
        return text


def _compile(index, cc, assemble):
    """:class:`Compiled` of catalogue entry ``index``: PTX for ``cc`` and, if ``assemble``, its
    SASS resources; ``error`` is set instead when either step fails."""
    global _CATALOG
    from .kernels import ptx

    if _CATALOG is None:
        _CATALOG = catalog()
    spec = _CATALOG[index]
    ptx_bytes = None
    try:
        text = ptx.compile_ptx(spec.kernel, spec.signature, cc)
        ptx_bytes = len(text)
        resources = ptx.assemble(text, cc) if assemble else None
        return Compiled(spec.name, spec.threads, ptx_bytes, resources, assembled=assemble)
    except Exception as err:  # reported by name in the parent
        step = "compile" if ptx_bytes is None else "assemble"
        message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return Compiled(spec.name, spec.threads, ptx_bytes, error=f"failed to {step} for {ptx.arch_name(cc)}: {message}")


def nvjitlink_missing():
    """None if nvJitLink (``cuda.bindings`` and its shared library) can be used, else why not."""
    try:
        from cuda.bindings import nvjitlink

        nvjitlink.version()  # the shared library is loaded on the first call, not on import
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def check_kernels(arch=DEFAULT_ARCH, report=print, jobs=1, assemble=True):
    """Compile every kernel to PTX for ``arch`` (e.g. ``sm_90``) in ``jobs`` processes and, if
    ``assemble`` and nvJitLink is installed, assemble it to SASS; report one line per kernel (with
    its registers, stack, shared memory and spills when assembled) and return the number compiled.

    Raises RuntimeError naming the first kernel (in catalogue order) that fails to compile or to
    assemble, or whose block of launch threads needs more than the 65,536 registers of a block
    (known when nvJitLink's log gives the registers; a line says how many kernels it did not).
    """
    import concurrent.futures
    import multiprocessing

    from .errors import check_range
    from .kernels.ptx import REGISTERS_PER_SM

    global _CATALOG
    cc = check_arch(arch)
    jobs = check_range("jobs", jobs, 1, integer=True)
    if assemble and (why := nvjitlink_missing()) is not None:
        report(f"  (PTX only, not assembled: nvJitLink is not usable: {why})")
        assemble = False
    _CATALOG = catalog()  # the spawned workers build their own
    n = len(_CATALOG)
    if jobs == 1:
        results = (_compile(i, cc, assemble) for i in range(n))
    else:
        pool = concurrent.futures.ProcessPoolExecutor(min(jobs, n), mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_compile, range(n), [cc] * n, [assemble] * n)
    unread = 0
    try:
        for done in results:
            unread += done.assembled and done.resources is None
            if done.error is not None:
                raise RuntimeError(f"kernel {done.name} {done.error}")
            if done.resources is not None and done.resources.blocks_per_sm(done.threads) == 0:
                raise RuntimeError(f"kernel {done.name} cannot launch {done.threads} threads per block on {arch}: "
                                   f"{done.resources.registers} registers per thread x {done.threads} threads need "
                                   f"more than the {REGISTERS_PER_SM:,d} registers of a block (warps rounded up to a "
                                   f"multiple of 4)")
            report(done.line())
    finally:
        if jobs > 1:
            pool.shutdown(cancel_futures=True)
    if unread:
        report(f"  ({unread} kernels assembled without a register report: their launch check was skipped)")
    return n
