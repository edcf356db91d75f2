"""benchmarks/gpu_check.py without a GPU: the whole script in Numba's CUDA simulator, its CUDA C
sources compiled with NVRTC, and its bookkeeping (parts that fail, Iris runs skipped or raised, a lost
CUDA context, the deadline, the predicted run times)."""

import numpy as np
import pytest

def test_gpu_check_script_runs_in_the_simulator(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    env = dict(os.environ, OUT=str(tmp_path))
    # a bare GPU node has NumPy, Numba, numba-cuda, CuPy and xarray: the others are hidden
    hide = ("sklearn", "scipy", "threadpoolctl", "dask", "distributed", "zarr", "matplotlib", "tqdm", "mpmath")
    # (None in sys.modules: an import raises ImportError, importlib.util.find_spec says not installed)
    # the simulator's barrier replaced as in this session (tests/simulator_barrier.py)
    runner = (f"import sys, runpy\n"
              f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
              f"import simulator_barrier; simulator_barrier.install()\n"
              f"sys.modules.update(dict.fromkeys({hide!r}))\n"
              f"sys.argv = [{str(script)!r}, '--simulate', '--seed', '5']\n"
              f"runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [c["ok"] for c in report["checks"]] == [True, True, True]
    assert report["device"] == "Numba CUDA simulator" and report["seed"] == 5
    assert report["errors"] == {} and report["skipped"] == {}
    assert report["versions"]["numba"] and report["versions"]["numpy"] == np.__version__
    assert all(row["network_epochs_per_s"] > 0 for row in report["iris"])
    assert report["gemm_path"] == "NumPy emulation of cublasGemmStridedBatchedEx"
    assert [row["gemm"] for row in report["mnist"]] == [report["gemm_path"]]
    precision = report["precision"]  # the float64 reading kernel equals the CPU's, the float32 one is close
    assert precision["f64_max_rel_diff_from_cpu"] < 1e-12 and 0 < precision["f32_max_abs_dv"] < 1e-5


def nvrtc_ptx(source, name, arch="compute_90"):
    """PTX of CUDA C ``source`` from NVRTC (cuda.bindings, as numba-cuda's cu13 wheels install it);
    AssertionError with NVRTC's log if it does not compile."""
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    options = [f"--gpu-architecture={arch}".encode()]
    (compiled,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert compiled == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    _, size = nvrtc.nvrtcGetPTXSize(prog)
    ptx = b" " * size
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(prog)
    return ptx.decode().rstrip("\x00")


def test_gpu_check_cuda_c_sources_compile_for_sm90_with_the_parameters_it_passes():
    """The script's CuPy RawKernels (the launch-cost peer and the spin that holds the GPU while
    timed launches are queued) compile with NVRTC, and the peer takes as many parameters as the
    arguments the script gives it (a RawKernel does not check them)."""
    import importlib.util
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_sources", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    for source, name, params in ((gpu_check.LAUNCH_PEER, "pair_arguments", 19), (gpu_check.HOLD_KERNEL, "hold", 1)):
        ptx = nvrtc_ptx(source, name)
        entry = re.search(rf"\.entry {name}\((.*?)\)", ptx, re.S)
        assert entry is not None, ptx[:500]
        assert entry.group(1).count(".param") == params, entry.group(1)
    assert "%clock64" in nvrtc_ptx(gpu_check.HOLD_KERNEL, "hold")  # the spin reads the clock, it is not optimised away


def test_gpu_check_keeps_the_other_numbers_when_a_part_fails(tmp_path, monkeypatch, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    def boom(*args):
        raise RuntimeError("boom")

    ok = dict(name="fused vs cpu", ok=True, detail="fine")
    iris = [dict(networks=1, epochs=1, min_blocks_per_sm=None, seconds=1.0, network_epochs_per_s=1.0, compile_s=0.1,
                 registers=None, median_test_acc=0.5)]
    for name, fn in dict(check_fused=lambda *a: ok, check_pair=boom, check_batched=lambda *a: dict(ok, name="b"),
                         time_iris=lambda *a, **k: iris, time_bandwidth=boom, time_mnist=lambda *a: [],
                         time_macrospin=boom).items():
        monkeypatch.setattr(gpu_check, name, fn)
    monkeypatch.setenv("OUT", str(tmp_path / "new"))
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--simulate", "--seed", "3"])
    assert gpu_check.main() == 1
    report = json.loads((tmp_path / "new" / "gpu_check.json").read_text())
    assert [c["ok"] for c in report["checks"]] == [True, False, True]
    assert report["checks"][1] == dict(name="pair", ok=False, detail="error: RuntimeError: boom")
    assert report["iris"] == iris and report["mnist"] == [] and report["bandwidth"] is None
    assert report["errors"] == {"check_pair": "RuntimeError: boom", "bandwidth": "RuntimeError: boom",
                                "macrospin": "RuntimeError: boom"}
    assert report["skipped"] == {}
    assert "| bandwidth | ERROR: RuntimeError: boom | |" in capsys.readouterr().out


def _iris_only(tmp_path, monkeypatch, rates):
    """gpu_check's Iris part alone in the simulator, ``train`` replaced by one that returns the next
    of ``rates`` (None: it raises): (exit status, the JSON report, each run's (grad_mode, read noise,
    sigma_d2d, model name))."""
    import json

    gpu_check = _gpu_check_module()
    rates, runs = iter(rates), []

    class Result:
        def __init__(self, rate):
            self.attrs = dict(network_epochs_per_second=rate, train_seconds=1.0, compile_seconds=0.5)
            import xarray as xr

            self.train_loss = xr.DataArray(np.full((1, 2), rate))  # (network, epoch)
            self.test_acc = xr.DataArray(np.zeros(1))

    def train(ds, cfg, n_networks, backend, model):
        runs.append((cfg.grad_mode, cfg.readout.read_noise, cfg.variability.sigma_d2d, model.name))
        rate = next(rates)
        if rate is None:
            raise MemoryError("out of memory")
        return Result(rate)

    import spingpu.training

    ok = dict(name="c", ok=True, detail="fine")
    for name, fn in dict(check_fused=lambda *a: ok, check_pair=lambda *a: ok, check_batched=lambda *a: ok,
                         time_bandwidth=lambda *a: None, time_launch=lambda *a: None, time_mnist=lambda *a: [],
                         time_macrospin=lambda *a: None).items():
        monkeypatch.setattr(gpu_check, name, fn)
    monkeypatch.setattr(spingpu.training, "train", train)
    monkeypatch.setattr(gpu_check, "kernel_registers", lambda kernel: None)
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--simulate", "--budget", "1e9"])
    status = gpu_check.main()
    return status, json.loads((tmp_path / "gpu_check.json").read_text()), runs


def test_gpu_check_counts_iris_runs_that_raised_or_were_skipped_and_keeps_the_others(tmp_path, monkeypatch):
    """Each Iris run is saved as it ends; one that raised or was skipped makes the exit status 1."""
    # 1, 2 (raises), 3 networks; 2 in blocks of 128 threads, at 4 and 5 blocks/SM; 3 at 4, the
    # fastest; the attribution rows (1 network in the simulator): no read noise, oracle, tanh; 2 with
    # the readings one after the other; 2 with stt_compact_f32 (not timed at 3: the default at 2 has no rate)
    rates = [1.0, None, 3.0, 2.0, 2.5, 2.2, 2.5, 4.0, 5.0, 9.0, 2.6, 2.7]
    status, report, runs = _iris_only(tmp_path, monkeypatch, rates)
    assert status == 1
    assert [row.get("network_epochs_per_s") for row in report["iris"]] == rates
    assert [row["min_blocks_per_sm"] for row in report["iris"]] == [None] * 4 + [4, 5, 4] + [None] * 5
    assert [row.get("model") for row in report["iris"]] == [None] * 10 + [
        "stt_compact, readings one after the other", "stt_compact_f32"]
    assert [row.get("config") for row in report["iris"]][-6:] == [None, "no read noise", "oracle, no read noise", "tanh",
                                                                   None, None]
    assert runs[0] == ("fd_forward", 1e-3, 0.1, "stt_compact") and runs[-5:] == [
        ("fd_forward", 0.0, 0.1, "stt_compact"), ("oracle", 0.0, 0.1, "stt_compact"), ("tanh", 0.0, 0.0, "stt_compact"),
        ("fd_forward", 1e-3, 0.1, "stt_compact"), ("fd_forward", 1e-3, 0.1, "stt_compact_f32")]
    assert "same_as_paired" not in report["iris"][-2]  # no default row at 2 to compare with
    assert "test_acc_equal_to_stt_compact" not in report["iris"][-1]  # no default row at 2 to compare with
    assert report["errors"] == {"iris 2e+00 networks, default threads, min blocks/SM None": "MemoryError: out of memory"}
    assert report["skipped"] == {} and "running" not in report


@pytest.mark.parametrize("f32_rate, full_f32", [(2.1, True), (1.9, False)])
def test_gpu_check_times_the_target_with_float32_junctions_where_they_were_faster(tmp_path, monkeypatch, f32_rate,
                                                                                 full_f32):
    rates = [1.0, 2.0, 3.0, 1.0, 1.5, 1.2, 0.5, 0.5, 0.5, 2.0, f32_rate] + [4.0] * full_f32
    status, report, runs = _iris_only(tmp_path, monkeypatch, rates)
    assert status == 0 and [row.get("network_epochs_per_s") for row in report["iris"]] == rates
    f32 = [(row["networks"], row["block_threads"]) for row in report["iris"] if row.get("model") == "stt_compact_f32"]
    assert f32 == [(2, 32), (3, 32)][:1 + full_f32]  # the simulator's blocks of 32 threads
    assert [run[3] for run in runs][-1 - full_f32:] == ["stt_compact_f32"] * (1 + full_f32)
    # compared with the default's networks at 2 (stand-in losses: the rates; test accuracies: 0)
    # the readings one after the other: the same numbers as the default's (stand-in losses: equal rates)
    assert report["iris"][9]["same_as_paired"] is True and report["iris"][9]["block_threads"] == 32
    compared = report["iris"][10]
    assert compared["test_acc_equal_to_stt_compact"] == 1.0
    assert compared["max_rel_final_loss_diff"] == pytest.approx(abs(f32_rate / 2.0 - 1))


def _gpu_check_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_skips_what_follows_a_lost_cuda_context(tmp_path, monkeypatch, capsys):
    """After a part that leaves the device unusable (the preflight, run again, fails), the later parts
    are skipped and said to be, instead of each failing with the first part's error."""
    import json

    gpu_check = _gpu_check_module()
    calls = []

    def preflight(device, sim):  # works at the start, fails once check_pair has run
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")
        return dict(ok=True)

    def illegal(*args):
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    ok = dict(name="fused vs cpu", ok=True, detail="fine")
    for name, fn in dict(preflight=preflight, check_fused=lambda *a: ok, check_pair=illegal).items():
        monkeypatch.setattr(gpu_check, name, fn)
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--simulate"])
    assert gpu_check.main() == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {"check_pair": "RuntimeError: CUDA_ERROR_ILLEGAL_ADDRESS"}
    lost = "the CUDA context was lost in 'check_pair'"
    assert report["skipped"] == {k: lost for k in ("check_batched", "bandwidth", "launch", "mnist", "macrospin", "iris",
                                                  "precision")}
    assert [c["ok"] for c in report["checks"]] == [True, False, False] and len(calls) == 2
    assert f"| iris | skipped: {lost} | |" in capsys.readouterr().out


def test_gpu_check_stops_at_a_failed_preflight_and_at_its_deadline(tmp_path, monkeypatch):
    import json

    gpu_check = _gpu_check_module()
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--simulate", "--deadline", "0"])
    monkeypatch.setattr(gpu_check, "preflight", lambda *a: {}.pop("no GPU"))
    assert gpu_check.main() == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {"preflight": "KeyError: 'no GPU'"} and report["checks"] == []
    monkeypatch.setattr(gpu_check, "preflight", lambda *a: dict(ok=True))
    assert gpu_check.main() == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {} and set(report["skipped"]) == {"check_fused", "check_pair", "check_batched",
                                                                  "bandwidth", "launch", "mnist", "macrospin", "iris",
                                                                  "precision"}
    assert set(report["skipped"].values()) == {"past the deadline of 0 s"}


def test_gpu_check_launch_peer_compiles_with_nvrtc_and_assembles():
    """The CUDA C peer of gpu_check's launch timing must build on the GPU node at the first try."""
    import sys
    from pathlib import Path

    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    pytest.importorskip("cuda.bindings.nvjitlink")
    from spingpu.kernels.ptx import assemble

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from gpu_check import LAUNCH_PEER

    err, prog = nvrtc.nvrtcCreateProgram(LAUNCH_PEER.encode(), b"peer.cu", 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    (err,) = nvrtc.nvrtcCompileProgram(prog, 1, [b"--gpu-architecture=compute_90"])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, size = nvrtc.nvrtcGetPTXSize(prog)
    ptx = b" " * size
    (err,) = nvrtc.nvrtcGetPTX(prog, ptx)
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    assert assemble(ptx.decode().rstrip("\0"), (9, 0)).registers > 0




def test_gpu_check_predicts_a_rerun_without_scaling_its_compilation():
    """A variant's first run pays its compilation once; later runs pay set-up per network. The 1e6
    rerun with the fastest launch bound is predicted from that variant's rate, not skipped."""
    gpu_check = _gpu_check_module()
    predict = gpu_check.predicted_seconds
    assert predict([], 10**6, 200, None) is None
    runs = [dict(networks=10**4, variant=None, fixed_s=16.2, rate=2e7)]
    assert predict(runs, 10**5, 200, None) == pytest.approx(1e5 * 200 / 2e7)  # compiled: no set-up known yet
    assert predict(runs, 10**5, 200, 3) == pytest.approx(1e5 * 200 / 2e7 + 16.2)  # a new variant compiles
    runs += [dict(networks=10**5, variant=None, fixed_s=2.0, rate=2e7),
             dict(networks=10**6, variant=None, fixed_s=20.0, rate=2e7),
             dict(networks=10**5, variant=3, fixed_s=18.0, rate=2.5e7),
             dict(networks=10**5, variant=4, fixed_s=18.1, rate=2.2e7)]
    setup = 2e-5  # s per network, from the second and third runs of the compiler's choice
    assert predict(runs, 10**6, 200, 3) == pytest.approx(1e6 * 200 / 2.5e7 + setup * 1e6)  # 28 s, not 190
    compile_s = 18.1 - setup * 1e5  # the largest first-run time less its set-up
    assert predict(runs, 10**5, 200, 5) == pytest.approx(1e5 * 200 / 2.2e7 + setup * 1e5 + compile_s)



def test_the_pair_timings_problems_run_in_the_simulator(monkeypatch):
    """time_bandwidth's pair launches (stt_compact, and each attribution problem: no read noise, one
    reading, tanh) are built by pair_launch, which runs only where CuPy works: here with NumPy in
    CuPy's place, launched in the simulator, each must write every output and equal the CPU kernel
    on the same arguments."""
    import sys
    import types

    from spingpu.devices import get_model
    from spingpu.kernels import batched_cuda
    from spingpu.kernels.pair_neuron import NOISE_GAUSSIAN, NOISE_NONE
    from spingpu.training.batched_engine import pair_layer_kernel

    gpu_check = _gpu_check_module()
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(asarray=np.asarray, arange=np.arange,
                                                                   empty_like=np.empty_like, empty=np.empty))
    n, b, u = 2, 3, 5
    cpu_kernel = pair_layer_kernel(get_model("stt_compact"))
    outputs = {}
    for what, problem in {"timed": {}, **gpu_check.PAIR_ATTRIBUTION}.items():
        kernel, args = gpu_check.pair_launch(np.random.default_rng(), n, b, u, **problem)
        assert len(args) == 19
        for out in args[15:18]:
            out.fill(np.nan)
        args[18].fill(255)
        kernel[batched_cuda.blocks(n * b * ((u + 1) // 2)), batched_cuda.THREADS](*args)
        ref = [np.empty_like(o) for o in args[15:]]
        seed = np.uint64(int(args[7]) | (int(args[8]) << 32))
        cpu_kernel(*args[:7], seed, *args[9:15], *ref)
        assert not any(np.isnan(o).any() for o in args[15:18]) and (args[18] <= 2).all(), what
        for got, want in zip(args[15:], ref):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=what)
        outputs[what] = args
    assert [outputs[k][6][0] for k in outputs] == [NOISE_GAUSSIAN, NOISE_NONE, NOISE_NONE, NOISE_NONE]  # readout
    assert np.abs(outputs["timed"][16]).min() > 0 and not outputs["no read noise, one reading"][16].any()
    assert not np.array_equal(outputs["timed"][15], outputs["timed"][0])  # junction readings, not z
    tanh = outputs["tanh"]
    np.testing.assert_allclose(tanh[15], np.tanh(tanh[0]), rtol=1e-6)
    np.testing.assert_allclose(tanh[16], 1 - np.tanh(tanh[0]) ** 2, rtol=1e-5)


def test_the_precision_parts_float32_reading_compiles_to_float32_arithmetic(compiler_python):
    """gpu_check's precision part times a float32 junction reading against the engines' float64
    one; that says what float32 physics would buy only if the float32 kernel computes in float32.
    Compiled to PTX for sm_90 (the compiler, not the simulator), its float64 instructions are the
    few of libdevice's reduction of huge sine and cosine arguments (never reached: 0 <= 2 pi u <=
    2 pi), against hundreds in the float64 kernel."""
    from pathlib import Path

    code = ("import re, sys\n"
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent / 'benchmarks')!r})\n"
            "from float32_reading import reading_kernels\n"
            "from spingpu.kernels import ptx\n"
            "for kernel, t in zip(reading_kernels(), ('float64', 'float32')):\n"
            "    text = ptx.compile_ptx(kernel.py_func, f'(float64[::1], float64[:, ::1], {t}, uint64, uint64, {t}[::1])')\n"
            "    ops = re.findall(r'^\\s+(?:@%p\\d+\\s+)?((?:add|sub|mul|fma|div|sqrt|rcp|neg|abs)\\.\\S+)', text, re.M)\n"
            "    print(sum('f64' in op for op in ops), sum('f32' in op for op in ops))\n")
    out = compiler_python("-c", code)
    assert out.returncode == 0, out.stderr[-2000:]
    (f64_in_f64, f32_in_f64), (f64_in_f32, f32_in_f32) = (map(int, line.split()) for line in out.stdout.splitlines())
    assert f64_in_f64 > 100 and f64_in_f32 <= 4 and f32_in_f32 > 100, out.stdout
