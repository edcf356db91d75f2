"""The CUDA kernels' catalogue: what the engines launch, and each compiles to PTX and assembles."""

import os
import re

import numpy as np
import pytest
from numba import cuda

from spingpu import ConfigError, Readout, Variability, get_model
from spingpu.backends import Backend
from spingpu.cuda_kernels import catalog
from spingpu.training import TrainConfig, train


def test_simulator_is_on():
    assert cuda.is_available() and os.environ["NUMBA_ENABLE_CUDASIM"] == "1"


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # the digital run
def test_the_catalogue_is_every_kernel_the_engines_launch(make_blobs, monkeypatch):
    """What ``info --check-kernels`` compiles is what runs, and nothing else: the kernels a fused
    run, batched runs (float32 and float64, pair and digital neurons) and a macrospin model's
    tables on a GPU device launch (by their Python functions) are the catalogue's."""
    from spingpu.devices import macrospin
    from spingpu.devices.macrospin import coefficients
    from spingpu.training.cuda_engine import Device

    launched = set()
    launch = Device.launch

    def recorded(self, kernel, *args):
        launched.add(kernel.fn.__qualname__)
        return launch(self, kernel, *args)

    monkeypatch.setattr(Device, "launch", recorded)
    data = make_blobs(5, 24, 3, 1)
    variability = Variability(sigma_d2d=0.1)
    for engine, dtype, mode in (("fused", "float64", "fd_forward"), ("batched", "float32", "fd_forward"),
                                ("batched", "float64", "tanh")):
        cfg = TrainConfig(hidden=(3,), epochs=1, seed=3, dtype=dtype, grad_mode=mode, variability=variability,
                          readout=Readout(read_noise=1e-3))
        train(data, cfg, n_networks=2, backend=Backend("cuda", simulator=True, cuda_engine=engine, block_threads=32))
    model = get_model("macrospin", table_points=5, settle_time=10e-12, average_time=6e-12)
    r, m = np.empty((1, 1)), np.empty((1, 1, 3))
    macrospin.simulate_on_gpu(Device(simulator=True), np.array([1e-4]), coefficients(model.nominal[None], model.settings),
                              np.zeros((1, 4), np.int64), 0, r, m)
    specs = catalog()
    # the batched engine's divergence kernel runs on a GPU only: the simulator takes the generic test
    assert launched | {"flag_diverged"} == {spec.kernel.fn.__qualname__ for spec in specs}
    assert len({spec.name for spec in specs}) == len(specs)


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
