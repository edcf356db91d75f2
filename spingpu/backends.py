"""Compute backends, passed down explicitly (no global switch).

numpy   the readable NumPy reference engine;
cpu     fused Numba kernels, parallel over networks (the default without a GPU);
cuda    Numba CUDA and CuPy kernels on an NVIDIA GPU (or, with NUMBA_ENABLE_CUDASIM=1, Numba's
        CUDA simulator with NumPy arrays, for tests on any machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from .errors import ConfigError

BACKENDS = ("numpy", "cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    """A compute backend by name; ``simulator`` is True for the CUDA simulator."""

    name: str
    simulator: bool = False

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise ConfigError("backend", f"{self.name!r}; allowed: auto, {', '.join(BACKENDS)}")


def cuda_simulator_enabled():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@cache
def cuda_gpus():
    """Descriptions of the CUDA GPUs visible to Numba (empty without a GPU or driver)."""
    if cuda_simulator_enabled():
        return ()
    try:
        from numba import cuda

        if not cuda.is_available():
            return ()
        gpus = []
        for dev in cuda.list_devices():
            with dev:
                free, total = cuda.current_context().get_memory_info()
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            gpus.append(f"{name} (cc {dev.compute_capability[0]}.{dev.compute_capability[1]}, "
                        f"{total / 2**30:.1f} GiB)")
        return tuple(gpus)
    except Exception:  # no numba-cuda, no driver, a broken install: no GPU for us
        return ()


def available_backends():
    """(name, usable, detail) for every backend."""
    import numba

    sim = cuda_simulator_enabled()
    gpus = cuda_gpus()
    cuda_detail = ("Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)" if sim else
                   "; ".join(gpus) if gpus else "no CUDA GPU found")
    return [
        ("numpy", True, "NumPy reference engine"),
        ("cpu", True, f"Numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads"),
        ("cuda", sim or bool(gpus), cuda_detail),
    ]


TRAINING_BACKENDS = ("numpy", "cpu")  # the engines built so far; the CUDA engine is not yet


def get_backend(name="auto"):
    """The backend called ``name``; ``auto`` is ``cpu`` (``cuda`` once the GPU training engine is
    built and a GPU is visible)."""
    if name == "auto":
        return Backend("cuda") if cuda_gpus() and "cuda" in TRAINING_BACKENDS else Backend("cpu")
    backend = Backend(name)
    if name == "cuda":
        if cuda_simulator_enabled():
            return Backend("cuda", simulator=True)
        if not cuda_gpus():
            raise ConfigError("backend", "'cuda' needs a CUDA GPU, and none is visible; allowed here: auto, numpy, cpu")
    return backend
