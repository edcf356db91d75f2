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
    for model in (get_model("stt_compact"), tabulated_model(table=(x, 1e3 * x)), TABLE_MODEL):
        specs.append(KernelSpec(f"iv[{model.name}]", cuda_devices.make_iv_kernel(model.point), IV_SIGNATURE))
    return specs


def check_kernels(arch="sm_90", report=print):
    """Compile every kernel to PTX for ``arch`` (e.g. ``sm_90``); return the number compiled.

    Raises RuntimeError naming the first kernel that fails.
    """
    from .errors import ConfigError
    from .kernels.ptx import compile_ptx

    try:
        cc = (int(arch.removeprefix("sm_")[:-1]), int(arch.removeprefix("sm_")[-1]))
        if not arch.startswith("sm_"):
            raise ValueError
    except ValueError:
        raise ConfigError("arch", f"{arch!r}; expected sm_XY, e.g. sm_80, sm_90, sm_100") from None
    count = 0
    for spec in catalog():
        try:
            ptx = compile_ptx(spec.kernel, spec.signature, cc)
        except Exception as err:
            raise RuntimeError(f"kernel {spec.name} failed to compile for {arch}: "
                               f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
        report(f"  {spec.name:<28} {len(ptx):>9,d} bytes of PTX")
        count += 1
    return count
