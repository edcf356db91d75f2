"""Every CUDA kernel spingpu launches, with the signatures it is launched with.

Used by ``spingpu info --check-kernels`` to compile each one to PTX for a chosen architecture
without a GPU, and by the tests. Building the list imports numba.cuda (not done by ``import
spingpu``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelSpec:
    name: str
    kernel: object  # a numba.cuda.jit dispatcher
    signature: str


IV_SIGNATURE = "(float64[::1], float64[:, ::1], float64[:, ::1], float64[::1], float64[::1])"
MACROSPIN_SIGNATURE = ("(float64[::1], float64[:, ::1], int64[:, ::1], uint64, uint64, float64[:, ::1], "
                       "float64[:, :, ::1])")
SAMPLE_SIGNATURE = ("(uint64, uint64, int64[::1], int64, int64, float64[::1], boolean[::1], float64[::1], "
                    "float64[:, ::1], float64[:, ::1], float64[:, :, :, ::1])")


def catalog():
    """The kernels, one entry per compiled variant."""
    import numpy as np

    from .devices.macrospin import TABLE_MODEL
    from .devices.models import get_model
    from .devices.tabulated import tabulated_model
    from .kernels import cuda_devices

    specs = [KernelSpec("sample_layer", cuda_devices.sample_layer, SAMPLE_SIGNATURE),
             KernelSpec("macrospin_mean_resistance", cuda_devices.macrospin_mean_resistance, MACROSPIN_SIGNATURE)]
    x = np.linspace(-1e-3, 1e-3, 5)
    models = (get_model("stt_compact"), tabulated_model(table=(x, 1e3 * x)), TABLE_MODEL)
    for model in models:
        specs.append(KernelSpec(f"iv[{model.name}]", cuda_devices.make_iv_kernel(model.point), IV_SIGNATURE))
    for model in models:
        specs.append(fused_train_spec(model))
    specs += batched_specs(models)
    return specs


def batched_specs(models):
    """The batched engine's kernels, typed by example arrays, for float32 and float64 weights."""
    import numba
    import numpy as np

    from .kernels import batched_cuda
    from .training.batched_cuda_engine import pair_layer_cuda_kernel

    def sig(*args):
        return tuple(numba.typeof(a) for a in args)

    specs = []
    i64, f64 = np.zeros(2, np.int64), np.zeros(2)
    for dtype in ("float32", "float64"):
        z = np.zeros((2, 3, 4), dtype)
        for model in models:
            junc = np.zeros((2 * 4 * 2, len(model.parameters)))  # (N U 2, P) rows
            args = (z, junc, model.nominal, np.ascontiguousarray(model.aux_table), 0, np.zeros(5), np.zeros(10),
                    np.uint64(0), np.uint64(0), i64, 0, 0, 0, 0, True, z, z, z)
            specs.append(KernelSpec(f"pair_layer[{model.name}, {dtype}]", pair_layer_cuda_kernel(model), sig(*args)))
        specs.append(KernelSpec(f"digital_layer[{dtype}]", batched_cuda.digital_layer, sig(0, z, z, z)))
        w = np.zeros(10, dtype)
        specs.append(KernelSpec(f"optimizer_update[{dtype}]", batched_cuda.optimizer_update,
                                sig(w, w, w, w, np.zeros(2, np.bool_), i64, 0, 0.1, 1, f64)))
    logits = np.zeros((2, 3, 4))
    specs.append(KernelSpec("softmax_xent_rows", batched_cuda.softmax_xent_rows,
                            sig(logits, i64, np.zeros((1, 4)), False, 1.0, 0.0, logits, np.zeros((2, 3)))))
    specs.append(KernelSpec("network_mean", batched_cuda.network_mean, sig(np.zeros((2, 3)), f64)))
    return specs


def fused_train_spec(model):
    """The fused CUDA trainer of ``model`` for Iris-sized 4-8-3 networks, typed by the arguments
    of a real (tiny) run. Its layout is a compile-time constant, so other architectures compile
    the same source with other array sizes."""
    import numba
    import numpy as np

    from .datasets import from_arrays
    from .kernels.fused_cuda import fused_cuda_layout
    from .training import TrainConfig
    from .training.cuda_engine import Device, FusedCudaRun, fused_cuda_kernel

    rng = np.random.default_rng(0)
    y = np.arange(20) % 3
    dataset = from_arrays(rng.normal(size=(20, 4)) + y[:, None], y, name="check", seed=0)
    config = TrainConfig(hidden=(8,), epochs=1)
    layout = fused_cuda_layout((4, 8, 3), model.kernel_width, dataset.y_train.size)
    run = FusedCudaRun(dataset, config, np.arange(1), model, None, layout, Device(simulator=True))
    signature = tuple(numba.typeof(a) for a in run.probe_arguments())
    return KernelSpec(f"fused_train[{model.name}]", fused_cuda_kernel(model, layout), signature)


def parse_arch(arch):
    """Compute capability (major, minor) of ``sm_XY``."""
    from .errors import ConfigError

    digits = arch.removeprefix("sm_")
    if not arch.startswith("sm_") or len(digits) < 2 or not digits.isdigit():
        raise ConfigError("arch", f"{arch!r}; expected sm_XY, e.g. sm_80, sm_90, sm_100")
    return int(digits[:-1]), int(digits[-1])


_CATALOG = None  # this process's catalog(), built once for _compile


def _compile(index, cc):
    """(name, bytes of PTX, None) of catalog entry ``index``, or (name, None, error line)."""
    global _CATALOG
    from .kernels.ptx import compile_ptx

    if _CATALOG is None:
        _CATALOG = catalog()
    spec = _CATALOG[index]
    try:
        return spec.name, len(compile_ptx(spec.kernel, spec.signature, cc)), None
    except Exception as err:  # reported by name in the parent
        return spec.name, None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def check_kernels(arch="sm_90", report=print, jobs=1):
    """Compile every kernel to PTX for ``arch`` (e.g. ``sm_90``) in ``jobs`` processes; return the
    number compiled. Raises RuntimeError naming the first kernel (in catalogue order) that fails."""
    import concurrent.futures
    import multiprocessing

    from .errors import ConfigError

    global _CATALOG
    cc = parse_arch(arch)
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError("jobs", f"{jobs!r}; expected an integer >= 1")
    _CATALOG = catalog()  # the spawned workers build their own
    n = len(_CATALOG)
    if jobs == 1:
        results = (_compile(i, cc) for i in range(n))
    else:
        pool = concurrent.futures.ProcessPoolExecutor(min(jobs, n), mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_compile, range(n), [cc] * n)
    try:
        for name, size, error in results:
            if error is not None:
                raise RuntimeError(f"kernel {name} failed to compile for {arch}: {error}")
            report(f"  {name:<36} {size:>9,d} bytes of PTX")
    finally:
        if jobs > 1:
            pool.shutdown(cancel_futures=True)
    return n
