"""The device kernels' CUDA versions: equal to the CPU in the simulator, and compile to PTX."""

import os
import re

import numpy as np
import pytest
from numba import cuda

from spingpu import ConfigError, Variability, get_model
from spingpu.cuda_kernels import catalog
from spingpu.devices.tabulated import tabulated_model
from spingpu.devices.variability import kernel_arguments, sample_layer
from spingpu.kernels.philox import split_seed
from spingpu.kernels import cuda_devices

def stacked_tables():
    """The macrospin kernels' model over two junctions' (I, V, dV/dI) tables of 9 and 13 knots stacked
    side by side; each element's row (knot offset, knots) picks one."""
    import dataclasses

    from spingpu.devices.macrospin import TABLE_MODEL

    parts = []
    for knots, scale in ((9, 4e-4), (13, 3e-4)):
        i = np.linspace(-1e-3, 1e-3, knots)
        parts.append(np.stack([i, 0.4 * np.tanh(i / scale), 0.4 / scale / np.cosh(i / scale) ** 2]))
    return dataclasses.replace(TABLE_MODEL, table=np.concatenate(parts, axis=1))


MODELS = {
    "stt_compact": lambda: get_model("stt_compact"),
    "tabulated": lambda: tabulated_model(table=(np.linspace(-1e-3, 1e-3, 9),
                                                np.tanh(np.linspace(-1e-3, 1e-3, 9) / 4e-4) * 0.4)),
    "macrospin tables": stacked_tables,
}


def iv_parameters(name, model, rng, n):
    if name == "macrospin tables":  # (knot offset, knots) of junction 0 or 1
        return np.array([(0.0, 9.0), (9.0, 13.0)])[rng.integers(0, 2, n)]
    return model.nominal * np.exp(rng.normal(0, 0.1, (n, len(model.parameters))))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_iv_kernel_in_simulator_equals_cpu(name):
    model = MODELS[name]()
    rng = np.random.default_rng(21)
    n = 64
    current = rng.uniform(-1.5e-3, 1.5e-3, n)
    params = iv_parameters(name, model, rng, n)
    v_ref, d_ref = model.iv(current, params)
    v = np.full(n, np.nan)  # poisoned: every element must be written
    d = np.full(n, np.nan)
    cuda_devices.make_iv_kernel(model.point)[2, 32](current, params, model.aux_table, v, d)
    np.testing.assert_array_equal(v, v_ref)
    np.testing.assert_array_equal(d, d_ref)


def test_sample_layer_kernel_in_simulator_equals_cpu():
    model = get_model("stt_compact")
    var = Variability(sigma_chip=0.05, sigma_d2d=0.1, sigma_pair=0.02, correlation={("r_p", "tmr0"): 0.4})
    networks = np.array([3, 17, 4, 1000, 2**31 + 5], dtype=np.int64)
    n_units, layer, seed = 3, 2, 987654321
    ref = sample_layer(model, var, seed, networks, layer, n_units)
    out = np.full(ref.shape, np.nan)
    k0, k1 = split_seed(np.uint64(seed))
    threads = networks.size * n_units * 2
    cuda_devices.sample_layer[1, threads](k0, k1, networks, layer, n_units, *kernel_arguments(model, var), out)
    np.testing.assert_array_equal(out, ref)


def test_simulator_is_on():
    assert cuda.is_available() and os.environ["NUMBA_ENABLE_CUDASIM"] == "1"


def test_catalog_names_every_kernel():
    names = [spec.name for spec in catalog()]
    assert "sample_layer" in names and "iv[stt_compact]" in names and "iv[tabulated]" in names
    assert len(set(names)) == len(names)


def test_every_kernel_compiles_to_ptx_and_assembles_for_sm90(compiler_python):
    proc = compiler_python("-m", "spingpu.cli.main", "info", "--check-kernels", "--arch", "sm_90", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    specs = catalog()
    assert lines[-1] == f"{len(specs)} kernels compiled"
    rows = [KERNEL_LINE.fullmatch(line) for line in lines[-1 - len(specs):-1]]
    assert all(rows), lines
    assert [row["name"] for row in rows] == [spec.name for spec in specs]  # in catalogue order, over 2 processes
    for row, spec in zip(rows, specs):
        regs, shared = int(row["registers"]), int(row["shared"].replace(",", ""))
        assert 1 <= regs <= 255 and int(row["blocks"]) >= 1 and int(row["threads"]) == spec.threads
        layout = spec.layout
        if layout is not None:  # a fused trainer: the module docstring's shared memory, + the 1 KiB sm_90 reserves
            assert shared == 8 * layout.shared_words + 1024, spec.name
            if layout.min_blocks is not None:  # launch bounds reach the compiler
                assert int(row["blocks"]) >= layout.min_blocks and regs <= 65536 // (layout.min_blocks * spec.threads)
        else:
            assert shared == 0, spec.name


KERNEL_LINE = re.compile(r"  (?P<name>.+?) +[\d,]+ bytes of PTX; +(?P<registers>\d+) registers, +[\d,]+ B stack, +"
                         r"(?P<shared>[\d,]+) B shared, +[\d,]+ B spill ld/st; +(?P<blocks>\d+) blocks of "
                         r"(?P<threads>\d+) threads per SM by registers")


@pytest.mark.parametrize("arch, jobs, message", [("sm9", 1, "arch: 'sm9'; expected sm_XY"),
                                                 ("90", 1, "arch: '90'; expected sm_XY"),
                                                 ("sm_90", 0, "jobs: 0 is out of range; allowed: value >= 1"),
                                                 ("sm_90", 1.5, "jobs: expected an integer, got 1.5")])
def test_check_kernels_bad_arch_or_jobs_is_a_one_line_error(arch, jobs, message):
    from spingpu.cuda_kernels import check_kernels

    with pytest.raises(ConfigError) as err:
        check_kernels(arch, jobs=jobs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_kernel_that_fails_to_compile_is_named(monkeypatch):
    from spingpu import cuda_kernels

    broken = cuda_kernels.KernelSpec("broken_kernel", object(), "(float64[::1],)", 128)
    monkeypatch.setattr(cuda_kernels, "catalog", lambda: [broken])
    with pytest.raises(RuntimeError, match=r"^kernel broken_kernel failed to compile for sm_90: \w+") as err:
        cuda_kernels.check_kernels("sm_90", report=lambda line: None, jobs=1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("gpus, arch", [((), "sm_90"), ((("NVIDIA A100-SXM4-80GB", (8, 0), 80 << 30),), "sm_80"),
                                        ((("NVIDIA B200", (10, 0), 180 << 30), ("NVIDIA A100", (8, 0), 1)), "sm_100")])
def test_check_kernels_targets_the_visible_gpu_unless_told(monkeypatch, gpus, arch):
    from spingpu import backends, cuda_kernels
    from spingpu.cli.main import main

    seen = []
    monkeypatch.setattr(backends, "cuda_simulator_enabled", lambda: False)
    monkeypatch.setattr(backends, "gpu_devices", lambda: gpus)
    monkeypatch.setattr(cuda_kernels, "check_kernels", lambda target, jobs: seen.append(target) or 0)
    # the architectures of NVRTC 13 (an older NVRTC, such as CUDA 12's, lacks sm_100 and sm_120)
    monkeypatch.setattr(cuda_kernels, "nvrtc_archs", lambda: ((13, 0), ((7, 5), (8, 0), (8, 6), (8, 9), (9, 0),
                                                                        (10, 0), (12, 0))))
    assert main(["info", "--check-kernels"]) == 0
    assert main(["info", "--check-kernels", "--arch", "sm_120"]) == 0
    assert seen == [arch, "sm_120"]
