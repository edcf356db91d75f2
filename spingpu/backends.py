"""Compute backends, passed down explicitly (no global switch).

numpy   the readable NumPy reference engine;
cpu     fused Numba kernels, parallel over networks (the default without a GPU);
cuda    Numba CUDA and CuPy kernels on an NVIDIA GPU (or, with NUMBA_ENABLE_CUDASIM=1, Numba's
        CUDA simulator with NumPy arrays, for tests on any machine).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from functools import cache

from .errors import ConfigError, _short, check_choice, check_range

BACKENDS = ("numpy", "cpu", "cuda")
CUDA_SETTINGS = ("gpu_memory_bytes", "block_threads", "cuda_engine", "min_blocks_per_sm")  # of Backend
CUDA_ENGINES = ("auto", "fused", "batched")


@dataclass(frozen=True)
class Backend:
    """A compute backend by name; ``simulator`` is True for the CUDA simulator.

    CUDA settings: ``gpu_memory_bytes`` caps the GPU memory a run takes (default 80 % of the free
    memory; networks are trained in chunks that fit), ``block_threads`` forces the threads per
    block of the fused kernel (default: the batch rounded up to a multiple of 32, at most 128, less
    while the block does not fit shared memory),
    ``min_blocks_per_sm`` compiles the fused kernel so that at least that many blocks are resident
    on a multiprocessor (CUDA launch bounds: fewer registers per thread, more blocks hiding each
    other's latency, perhaps spilled registers; default: the compiler's choice; ``spingpu info
    --check-kernels`` shows the registers and ``benchmarks/gpu_check.py`` times the choices),
    ``cuda_engine`` chooses between the fused block-per-network kernel and the batched engine
    (``auto``: fused when the network fits a block).
    """

    name: str
    simulator: bool = False
    gpu_memory_bytes: int | None = None
    block_threads: int | None = None
    cuda_engine: str = "auto"
    min_blocks_per_sm: int | None = None

    def __post_init__(self):
        put = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 (frozen)
        if self.name == "auto":
            raise ConfigError("backend", f"'auto' is a choice made by name (train(backend='auto'), get_backend('auto')), "
                                         f"not a Backend; allowed for a Backend: {', '.join(BACKENDS)}")
        check_choice("backend", self.name, ("auto",) + BACKENDS)  # 'auto' refused above
        if not isinstance(self.simulator, bool):
            raise ConfigError("simulator", f"expected True or False, got {_short(self.simulator)}")
        if self.gpu_memory_bytes is not None:
            put("gpu_memory_bytes", check_range("gpu_memory_bytes", self.gpu_memory_bytes, 1, 2**63 - 1, integer=True))
        if self.block_threads is not None:
            threads = self.block_threads
            if isinstance(threads, (str, bytes, bool)) or threads not in range(32, 257, 32):
                raise ConfigError("block_threads", f"{_short(threads)}; allowed: a multiple of 32 from 32 to 256")
            put("block_threads", int(threads))
        if self.min_blocks_per_sm is not None:
            put("min_blocks_per_sm", check_range("min_blocks_per_sm", self.min_blocks_per_sm, 1, 32, integer=True))
        check_choice("cuda_engine", self.cuda_engine, CUDA_ENGINES)
        if self.name != "cuda":
            given = [f.name for f in fields(self) if f.name in CUDA_SETTINGS and getattr(self, f.name) != f.default]
            if given:
                from .errors import UnusedSettingWarning

                verb, it = ("have", "them") if len(given) > 1 else ("has", "it")
                warnings.warn(f"{', '.join(given)}: {verb} no effect on the {self.name} backend (CUDA settings); "
                              f"remove {it} or use the cuda backend", UnusedSettingWarning, stacklevel=3)


def cuda_simulator_enabled():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def missing_cuda_packages(need_cupy=True):
    """The packages the GPU backend needs and this environment lacks: numba-cuda (Numba's own
    ``numba.cuda`` lacks what the kernels use, e.g. launch bounds) and, to run on a GPU, CuPy and
    the cuBLAS library it loads for the matrix products (the CuPy wheels do not bring it; the
    ``gpu`` extras do, as ``cuda-toolkit[cublas]``) and the NVRTC library it compiles its
    elementwise kernels with (numba-cuda's ``cu13``/``cu12`` extras bring it). The libraries are
    looked for only where a GPU is visible: loading them is CuPy's first touch of CUDA."""
    from importlib.util import find_spec

    missing = [] if find_spec("numba_cuda") is not None else ["numba-cuda"]
    if need_cupy and find_spec("cupy") is None:
        missing.append("cupy")
    elif need_cupy and gpu_devices():
        missing += [name for name, loads in (("cuBLAS (libcublas)", _cublas_loads), ("NVRTC (libnvrtc)", _nvrtc_loads))
                    if not loads()]
    return missing


@cache
def _cublas_loads():
    """Whether CuPy can load cuBLAS (the library it multiplies with)."""
    try:  # this form, as CuPy's own code imports it: the package's __getattr__ first finds the
        # library among the pip-installed NVIDIA wheels (cuda.pathfinder); "import ...cublas" would not
        from cupy_backends.cuda.libs import cublas
    except ImportError:  # e.g. "libcublas.so.13: cannot open shared object file"
        return False
    return cublas is not None


@cache
def _nvrtc_loads():
    """Whether CuPy can load NVRTC (CuPy links it at its first use, so ask its version)."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception:  # ImportError, or CuPy's RuntimeError naming the library it could not load
        return False
    return True


def _cuda_unavailable():
    """Why ``cuda`` cannot run here, as a ConfigError for the field ``backend``; None if it can."""
    if cuda_simulator_enabled():
        return None
    if not cuda_gpus():
        return ConfigError("backend", "'cuda' needs a CUDA GPU, and none is visible; allowed here: auto, numpy, cpu")
    missing = missing_cuda_packages()
    if missing:
        return ConfigError("backend", f"'cuda' needs {' and '.join(missing)}: pip install 'spingpu[gpu]' (or "
                                      "'spingpu[gpu-cuda12]' for a CUDA 12 driver); allowed here: auto, numpy, cpu")
    return None


@cache
def gpu_devices():
    """(name, (major, minor) compute capability, total bytes or None without CuPy) of each CUDA GPU
    visible to Numba (empty without a GPU or driver, and under the simulator)."""
    if cuda_simulator_enabled():
        return ()
    try:
        from numba import cuda

        if not cuda.is_available():
            return ()
        devices = []
        for index, dev in enumerate(cuda.list_devices()):  # name and capability need no context
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            devices.append((name, tuple(dev.compute_capability), _total_memory(index)))
        return tuple(devices)
    except Exception:  # no numba-cuda, no driver, a broken install: no GPU for us
        return ()


def _total_memory(index):
    """Total bytes of CUDA device ``index`` as CuPy reads it from the device's properties (no CUDA
    context is created: a context on every visible GPU would cost each process, each Dask worker
    of a multi-GPU node included, a few hundred MiB on every GPU); None without CuPy."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceProperties(index)["totalGlobalMem"])
    except Exception:
        return None


def cuda_gpus():
    """Descriptions of the CUDA GPUs visible to Numba (empty without a GPU or driver)."""
    return tuple(f"{name} (cc {cc[0]}.{cc[1]}" + ("" if total is None else f", {total / 2**30:.1f} GiB") + ")"
                 for name, cc, total in gpu_devices())


def available_backends():
    """(name, usable, detail) for every backend."""
    import numba

    sim = cuda_simulator_enabled()
    gpus = cuda_gpus()
    missing = missing_cuda_packages()
    cuda_detail = ("Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)" if sim else
                   ("; ".join(gpus) if gpus else "no CUDA GPU found") +
                   (f"; {' and '.join(missing)} not installed" if missing else ""))
    return [
        ("numpy", True, "NumPy reference engine"),
        ("cpu", True, f"Numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads"),
        ("cuda", sim or (bool(gpus) and not missing), cuda_detail),
    ]


def get_backend(name="auto"):
    """The backend called ``name``; ``auto`` is ``cuda`` when a CUDA GPU is visible and the GPU
    packages (numba-cuda, CuPy) are installed, else ``cpu``."""
    if name == "auto":
        return Backend("cuda") if not missing_cuda_packages() and cuda_gpus() else Backend("cpu")
    backend = Backend(name)
    if name == "cuda":
        if cuda_simulator_enabled():
            return Backend("cuda", simulator=True)
        unavailable = _cuda_unavailable()
        if unavailable is not None:
            raise unavailable
    return backend
