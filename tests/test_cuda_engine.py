"""The fused CUDA engine, run in Numba's CUDA simulator (tests/conftest.py), against the fused CPU
engine: the simulator executes the kernel's arithmetic on the CPU, so the numbers must agree to
rounding. On a GPU, ``benchmarks/gpu_check.py`` compares the same engines."""

import dataclasses
import sys

import numpy as np
import pytest

from spingpu import ConfigError, Readout, Variability
from spingpu.backends import Backend
from spingpu.kernels.fused_cuda import SHARED_BYTES, fused_cuda_layout
from spingpu.training import Distillation, PairNeuron, Schedule, TrainConfig, cuda_engine, teacher_logits, train

METRICS = ("train_loss", "train_acc", "val_acc", "grad_cosine", "deriv_rel_err", "test_acc", "extrapolated_readings")
SIM = Backend("cuda", simulator=True, block_threads=32)


@pytest.fixture(scope="module")
def blobs(make_blobs):
    return make_blobs(123, 70, 4, 5)


def assert_same(a, b):
    """Bit for bit: in the simulator the kernel's arithmetic is the CPU engine's, operation for
    operation (on a GPU, gpu_check.py allows for FMA contraction and CUDA's libm)."""
    for name in METRICS:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    np.testing.assert_array_equal(a.diverged.values, b.diverged.values)


VAR = Variability(sigma_chip=0.03, sigma_d2d=0.1, sigma_pair=0.02)
CASES = {
    # batch 16 of 42 training rows: sub-batches of 32 threads, a short last batch
    "fd_forward-noise-adam-minibatch": dict(grad_mode="fd_forward", batch_size=16, readout=Readout(read_noise=2e-3)),
    # noise loud enough to change predictions: each evaluation must read its own noise streams
    "fd_forward-loud-noise": dict(grad_mode="fd_forward", epochs=3, readout=Readout(read_noise=0.1)),
    "fd_symmetric-adc-dac-sgd-step-full": dict(grad_mode="fd_symmetric", optimizer="sgd", lr=0.2,
                                               lr_schedule=Schedule("step", every=1, gamma=0.5),
                                               readout=Readout(adc_bits=10, adc_range=(-1.5, 1.5), dac_bits=12,
                                                               dac_range=(-2e-3, 2e-3))),
    "fd_single-johnson-momentum-2layers": dict(grad_mode="fd_single", optimizer="momentum", hidden=(5, 4),
                                               batch_size=20, readout=Readout(noise_model="johnson_shot",
                                                                              temperature=300, bandwidth=1e9)),
    "model-bridge-cosine-decay": dict(grad_mode="model", lr_schedule=Schedule("cosine"), weight_decay=1e-3,
                                      neuron=PairNeuron(readout="bridge", r_ref=1200.0, i_bias=-30e-6)),
    "oracle-exp": dict(grad_mode="oracle", lr_schedule=Schedule("exp", gamma=0.9), batch_size=30),
    "tanh": dict(grad_mode="tanh", hidden=(7,)),
    "relu-momentum": dict(grad_mode="relu", optimizer="momentum", hidden=(5,)),
    "sigmoid-sgd-minibatch": dict(grad_mode="sigmoid", optimizer="sgd", lr=0.5, batch_size=20),
}


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # digital cases share MTJ settings
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_cuda_kernel_equals_fused_cpu_engine(blobs, case):
    kw = dict(hidden=(6,), epochs=2, lr=0.05, seed=7, variability=VAR)
    kw.update(CASES[case])
    cfg = TrainConfig(**kw)
    nets = np.array([3, 11])
    cpu = train(blobs, cfg, networks=nets, backend="cpu")
    gpu = train(blobs, cfg, networks=nets, backend=SIM)
    assert gpu.attrs["backend"] == "cuda" and gpu.attrs["device"] == "Numba CUDA simulator"
    assert_same(cpu, gpu)
    assert np.all(np.isfinite(gpu.grad_cosine.values)) and np.all(np.isfinite(gpu.deriv_rel_err.values))


def test_a_block_of_three_warps_equals_the_cpu(blobs):
    """Blocks of 96 threads, the default for Iris's batch of 90 (test_layout_fits_...), are not a
    power of two: weights owned tid, tid + 96, ...; the median's select in strides of 96. Here 42
    training samples in one sub-batch, the other 54 threads idle."""
    cfg = TrainConfig(hidden=(3,), epochs=1, lr=0.05, seed=9, variability=VAR, readout=Readout(read_noise=2e-3))
    nets = np.array([4])
    assert_same(train(blobs, cfg, networks=nets, backend="cpu"),
                train(blobs, cfg, networks=nets, backend=Backend("cuda", simulator=True, block_threads=96)))


def test_a_batch_of_one_equals_the_cpu(make_blobs):
    """The compiling launch ran two samples per step, overrunning the relative-error row of a run
    whose batch holds one (an IndexError here; past the row's end on a GPU)."""
    data = make_blobs(8, 16, 3, 4)
    cfg = TrainConfig(hidden=(3,), epochs=1, batch_size=1, lr=0.05, seed=2, variability=VAR,
                      readout=Readout(read_noise=2e-3))
    nets = np.array([1])
    assert_same(train(data, cfg, networks=nets, backend="cpu"), train(data, cfg, networks=nets, backend=SIM))

def test_deriv_rel_err_median_selected_in_global_memory_equals_the_cpu(blobs, monkeypatch):
    """The fallback for a scratch row beyond the activation rows: the median read from global memory."""
    from spingpu.kernels import fused_cuda

    layouts = []
    shared = fused_cuda.fused_cuda_layout

    def global_median(*args, **kwargs):
        layouts.append(dataclasses.replace(shared(*args, **kwargs), shared_median=False))
        return layouts[-1]

    monkeypatch.setattr(fused_cuda, "fused_cuda_layout", global_median)
    cfg = TrainConfig(hidden=(6,), epochs=1, lr=0.05, seed=7, variability=VAR, batch_size=16,
                      readout=Readout(read_noise=2e-3))
    nets = np.array([11])
    gpu = train(blobs, cfg, networks=nets, backend=SIM)
    assert layouts and not layouts[-1].median_in_shared
    assert_same(train(blobs, cfg, networks=nets, backend="cpu"), gpu)


@pytest.mark.parametrize("shape", [(3, 21, 66), (2, 128, 5), (1, 7, 1)])
def test_bias_gradient_kernel_sums_in_numpys_order(shape):
    """The batched CUDA engine's per-network sum over samples equals NumPy's bit for bit (sample
    order), whatever the number of networks: network k alone gives the same bits."""
    from spingpu.kernels import batched_cuda as kern

    delta = np.random.default_rng().normal(0, 1, shape).astype(np.float32) * np.float32(1e3)
    out = np.full(shape[::2], np.nan, dtype=np.float32)
    kern.sample_sum[kern.blocks(out.size), kern.THREADS](delta, out)
    np.testing.assert_array_equal(out, delta.sum(axis=1))
    alone = np.full((1, shape[2]), np.nan, dtype=np.float32)
    kern.sample_sum[kern.blocks(alone.size), kern.THREADS](delta[-1:], alone)
    np.testing.assert_array_equal(alone[0], out[-1])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the zero gradient's 0 / 0
def test_grad_cosine_kernels_equal_numpy_and_give_a_network_alone_its_bits_among_others():
    """grad_cosine of the batched CUDA engine (chunked in-order float64 sums) equals the NumPy
    engine's to rounding, and network k alone gets the bits it gets among N (CuPy's row sums would
    not promise it); a zero gradient gives NaN, as NumPy's."""
    from types import SimpleNamespace

    from spingpu.training.batched_cuda_engine import BatchedCudaEngine
    from spingpu.training.cuda_engine import Device
    from spingpu.training.numpy_engine import NumpyEngine

    rng = np.random.default_rng()
    n = 5
    shapes = [(n, 3, 300), (n, 300), (n, 300, 7), (n, 7)]  # a hidden layer wider than a chunk, odd widths
    used = [rng.normal(0, 1, s).astype(np.float32) for s in shapes]
    exact = [u + rng.normal(0, 0.5, u.shape).astype(np.float32) for u in used]
    for g in (used, exact):
        g[0][2] = 0.0  # network 2: a zero first layer, the rest not
    used[1][3], used[0][3], used[2][3], used[3][3] = 0.0, 0.0, 0.0, 0.0  # network 3: all zero
    gpu = SimpleNamespace(xp=np, device=Device(simulator=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        got = BatchedCudaEngine.grad_cosine(gpu, used, exact)
        want = NumpyEngine.grad_cosine(None, used, exact)
        alone = BatchedCudaEngine.grad_cosine(gpu, [u[-1:] for u in used], [e[-1:] for e in exact])
    assert np.isnan(got[3]) and np.isnan(want[3])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert alone.tobytes() == got[-1:].tobytes()


def test_divergence_kernel_flags_the_networks_the_generic_test_flags():
    """One launch over the flat gradient buffer flags a network whose loss or any gradient element
    is NaN, infinite or beyond DIVERGED_ABOVE, as NumpyEngine.flag_diverged does per weight array;
    float32's largest value is not beyond."""
    from types import SimpleNamespace

    from spingpu.kernels import batched_cuda as kern
    from spingpu.training.numpy_engine import NumpyEngine

    rng = np.random.default_rng()
    n, shapes = 6, [(3, 4), (4,), (4, 2), (2,)]
    grads = [rng.normal(0, 1, (n,) + shape).astype(np.float32) for shape in shapes]
    loss = rng.uniform(0.1, 3, n)
    grads[2][1, 3, 0] = np.nan
    grads[0][3, 2, 1] = np.inf
    grads[3][5, 1] = -np.inf
    loss[4] = np.inf
    grads[1][0, 2] = np.finfo(np.float32).max  # the largest float32: not diverged
    flat = np.concatenate([g.reshape(-1) for g in grads])
    block_start = np.cumsum([0] + [g.size for g in grads]).astype(np.int64)
    alive = np.ones(n, dtype=bool)
    alive[2] = False  # already dead: stays so
    kern.flag_diverged[kern.blocks(flat.size), kern.THREADS](flat, block_start, loss, alive)
    generic = SimpleNamespace(xp=np, networks=np.arange(n), alive=np.arange(n) != 2)
    NumpyEngine.flag_diverged(generic, loss, grads)
    np.testing.assert_array_equal(alive, generic.alive)
    np.testing.assert_array_equal(alive, [True, False, False, False, False, False])


def test_distillation_on_the_gpu(blobs):
    teacher_cfg = TrainConfig(hidden=(8,), epochs=3, grad_mode="tanh", lr=0.05, seed=1)
    logits, _ = teacher_logits(blobs, teacher_cfg)
    cfg = TrainConfig(hidden=(3,), epochs=2, lr=0.05, seed=2, variability=VAR,
                      distillation=Distillation(temperature=3.0, alpha=0.7))
    cpu = train(blobs, cfg, networks=[4], backend="cpu", teacher_logits=logits)
    gpu = train(blobs, cfg, networks=[4], backend=SIM, teacher_logits=logits)
    assert_same(cpu, gpu)


def test_divergence_is_isolated_on_the_gpu(blobs, fragile_model):
    var = Variability(per_parameter={"r": (0.0, 0.3, 0.0), "r_max": (0.0, 0.0, 0.0)})
    # the NumPy reference (float64) among 30 networks: the fused CPU engine would compile a trainer
    # for this registered model first (~15 s), and equals the reference to ~1e-16 here
    cfg = TrainConfig(hidden=(8,), grad_mode="oracle", epochs=2, lr=0.05, variability=var, dtype="float64")
    cpu = train(blobs, cfg, n_networks=30, model=fragile_model, backend="numpy")
    div = np.flatnonzero(cpu.diverged.values)
    assert div.size >= 2
    nets = [div[0], int(np.flatnonzero(~cpu.diverged.values)[0]), div[1]]
    gpu = train(blobs, cfg, networks=nets, model=fragile_model, backend=SIM)
    assert gpu.diverged.values.tolist() == [True, False, True]
    assert_same(cpu.sel(network=nets), gpu)


def test_chunks_that_fit_a_tiny_memory_budget_change_nothing(blobs, monkeypatch):
    from spingpu.training import cuda_engine

    cfg = TrainConfig(hidden=(3,), epochs=1, lr=0.05, seed=9, variability=VAR, readout=Readout(read_noise=1e-3))
    nets = np.arange(3)
    blocks = []  # of each launch: the compiling probe's 1, then the chunks'
    launch = cuda_engine.Device.launch
    monkeypatch.setattr(cuda_engine.Device, "launch", lambda self, kernel, n, *args: blocks.append(n) or
                        launch(self, kernel, n, *args))
    whole = train(blobs, cfg, networks=nets, backend=SIM)
    # the data take ~3.2 kB, a network's arrays ~1.6 kB: one network per chunk, each read back before
    # the next is launched (two would not fit)
    tiny = Backend("cuda", simulator=True, block_threads=32, gpu_memory_bytes=5_000)
    chunked = train(blobs, cfg, networks=nets, backend=tiny)
    # chunks of two networks: the first read back while the second, the last network alone, trains
    monkeypatch.setattr(cuda_engine, "LAUNCH_BLOCKS", 2)
    overlapped = train(blobs, cfg, networks=nets, backend=Backend("cuda", simulator=True, block_threads=32))
    assert blocks == [1, 3] + [1, 1, 1, 1] + [1, 2, 1]
    for name in METRICS:
        np.testing.assert_array_equal(whole[name].values, chunked[name].values, err_msg=name)
        np.testing.assert_array_equal(whole[name].values, overlapped[name].values, err_msg=name)


def test_one_network_too_big_for_the_memory_is_a_clear_error(blobs):
    cfg = TrainConfig(hidden=(3,), epochs=1)
    with pytest.raises(ConfigError, match=r"^networks: one network needs [\d,]+ bytes of GPU memory with the "
                                          r"dataset, and 100 are available$"):
        train(blobs, cfg, n_networks=1, backend=Backend("cuda", simulator=True, gpu_memory_bytes=100))


def test_layout_fits_shared_memory_and_refuses_networks_that_do_not():
    small = fused_cuda_layout((4, 8, 3), 6, 90)
    assert small.threads == 96 and 8 * small.shared_words <= SHARED_BYTES  # whole warps for 90 samples
    assert [fused_cuda_layout((4, 8, 3), 6, b).threads for b in (1, 32, 33, 128, 129, 5000)] == [32, 32, 64, 128,
                                                                                                  128, 128]
    assert small.n_weights == 4 * 8 + 8 + 8 * 3 + 3 and small.errs_len == 90 * 8
    # deriv_rel_err's 720-word scratch row fits the 2 x 96 x 9 words of activation rows, a batch of
    # 300 (2400 words) does not: its median reads the global row
    assert small.median_in_shared and not fused_cuda_layout((4, 8, 3), 6, 300).median_in_shared
    assert not dataclasses.replace(small, shared_median=False).median_in_shared
    # 3 x 8,970 float64 weights alone are 215 kB: no block of threads fits; 16-8-3 at a full batch of
    # 1000 fits in blocks of 64 (128 would not), its median read from the global row
    assert fused_cuda_layout((64, 64, 64, 10), 6, 128) is None
    large_batch = fused_cuda_layout((16, 8, 3), 6, 1000)
    assert large_batch.threads == 64 and not large_batch.median_in_shared
    assert 8 * large_batch.shared_words <= SHARED_BYTES < 8 * dataclasses.replace(large_batch, threads=128).shared_words
    assert fused_cuda_layout((784, 256, 10), 6, 128) is None


def test_a_launch_bound_no_multiprocessor_can_meet_is_refused(blobs):
    """Blocks of the Iris-size layout (96 threads for its batch of 90): 31,984 B of shared memory
    each (+1 KiB reserved) fit 7 to a multiprocessor's 228 KiB; 2048 threads fit 21 blocks of 96.
    Blocks of 128 threads take 41,456 B (ptxas's 42,480 with the reserve) and fit 5. A larger bound
    is an error before anything is compiled (ptxas would ignore it): here for the test's small
    network in blocks of 32 threads, where shared memory allows 27 blocks and threads 64."""
    from spingpu.devices import get_model
    from spingpu.kernels.fused_cuda import max_resident_blocks
    from spingpu.training.trainer import fused_cuda_layout_for

    iris = fused_cuda_layout((4, 8, 3), 6, 90)
    assert iris.threads == 96 and 8 * iris.shared_words == 31_984
    assert max_resident_blocks(iris) == 233_472 // 33_008 == 7
    iris_128 = fused_cuda_layout((4, 8, 3), 6, 90, threads=128)
    assert 8 * iris_128.shared_words == 41_456 and max_resident_blocks(iris_128) == 233_472 // 42_480 == 5
    cfg = TrainConfig(hidden=(3,), epochs=1)
    layout = fused_cuda_layout_for(blobs, cfg, get_model("stt_compact"), SIM)
    most = min(2048 // 32, 233_472 // (8 * layout.shared_words + 1024))
    assert most == 27
    ok = Backend("cuda", simulator=True, block_threads=32, min_blocks_per_sm=most)
    assert fused_cuda_layout_for(blobs, cfg, get_model("stt_compact"), ok).min_blocks == most
    with pytest.raises(ConfigError) as err:
        train(blobs, cfg, n_networks=1, backend=Backend("cuda", simulator=True, block_threads=32,
                                                       min_blocks_per_sm=most + 1))
    assert str(err.value) == (f"min_blocks_per_sm: {most + 1} blocks of 32 threads and {8 * layout.shared_words:,} "
                              f"B of shared memory cannot be resident on one multiprocessor of any GPU; allowed "
                              f"here: 1 <= value <= {most}")


@pytest.mark.parametrize("bad, message", [
    (dict(gpu_memory_bytes=0), "gpu_memory_bytes: 0 is out of range"),
    (dict(block_threads=48), "block_threads: 48; allowed: a multiple of 32 from 32 to 256"),
    (dict(min_blocks_per_sm=0), "min_blocks_per_sm: 0 is out of range; allowed: 1 <= value <= 32"),
    (dict(min_blocks_per_sm=2.5), "min_blocks_per_sm: expected an integer, got 2.5"),
])
def test_bad_backend_settings(bad, message):
    with pytest.raises(ConfigError) as err:
        Backend("cuda", **bad)
    assert str(err.value).startswith(message)


# --- the batched engine (large layers) -------------------------------------------------------------

BATCHED = Backend("cuda", simulator=True, cuda_engine="batched")


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # digital cases share MTJ settings
@pytest.mark.parametrize("mode, dtype, rtol, optimizer", [
    ("fd_forward", "float64", 1e-10, "adam"), ("fd_symmetric", "float64", 1e-10, "momentum"),
    ("model", "float32", 2e-5, "sgd"), ("sigmoid", "float32", 2e-5, "adam"), ("relu", "float32", 2e-5, "momentum")])
def test_batched_cuda_engine_equals_numpy_reference(blobs, mode, dtype, rtol, optimizer):
    cfg = TrainConfig(hidden=(5, 4), epochs=2, lr=0.05, seed=4, grad_mode=mode, dtype=dtype, batch_size=20,
                      optimizer=optimizer, weight_decay=1e-3 if optimizer != "adam" else 0.0,
                      variability=VAR, readout=Readout(read_noise=2e-3, adc_bits=12, adc_range=(-2.0, 2.0)))
    nets = np.array([2, 8])
    ref = train(blobs, cfg, networks=nets, backend="numpy")
    gpu = train(blobs, cfg, networks=nets, backend=BATCHED)
    for name in METRICS:
        np.testing.assert_allclose(gpu[name].values, ref[name].values, rtol=rtol, atol=rtol * 1e-2, err_msg=name)


@pytest.mark.parametrize("optimizer, weight_decay", [("adam", 0.0), ("momentum", 1e-3)])
def test_the_batched_cpu_and_cuda_engines_take_the_same_steps(blobs, monkeypatch, optimizer, weight_decay):
    """Both batched engines evaluate the pair neurons, the loss and the optimiser's step with the
    same scalar functions (kernels/batched_cpu is batched_cuda's update): in the simulator, where
    both take their matrix products from NumPy, a float32 run of one equals the other's bit for bit."""
    from spingpu.training import trainer

    monkeypatch.setattr(trainer, "FUSED_MAX_WIDTH", 0)  # the batched CPU engine for narrow layers too
    cfg = TrainConfig(hidden=(5, 4), epochs=2, lr=0.05, seed=4, dtype="float32", batch_size=20, optimizer=optimizer,
                      weight_decay=weight_decay, variability=VAR, readout=Readout(read_noise=2e-3))
    nets = np.array([2, 8])
    cpu = train(blobs, cfg, networks=nets, backend="cpu")
    gpu = train(blobs, cfg, networks=nets, backend=BATCHED)
    assert cpu.attrs["engine"] == gpu.attrs["engine"] == "batched"
    for name in METRICS:
        if name == "grad_cosine":  # a metric, summed by the CUDA engine in chunks, by NumPy pairwise
            np.testing.assert_allclose(cpu[name].values, gpu[name].values, rtol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(cpu[name].values, gpu[name].values, err_msg=name)


@pytest.mark.filterwarnings("ignore::spingpu.ExtrapolationWarning")  # counted, and compared
def test_both_cuda_engines_train_a_tabulated_model_as_the_cpu_engines(blobs):
    from spingpu.devices.tabulated import tabulated_model

    current = np.linspace(-2e-4, 2e-4, 17)  # some of the readings beyond it: counted alike
    model = tabulated_model(table=(current, 0.4 * np.tanh(current / 4e-4) + 200.0 * current))
    # two hidden layers, as test_tabulated's engine comparison: one compiled fused CPU trainer for both
    cfg = TrainConfig(hidden=(4, 3), epochs=2, lr=0.05, seed=9, dtype="float64", batch_size=16, variability=VAR,
                      readout=Readout(read_noise=1e-3))
    nets = np.array([1, 5])
    ref = train(blobs, cfg, networks=nets, model=model, backend="numpy")
    cpu = train(blobs, cfg, networks=nets, model=model, backend="cpu")
    fused = train(blobs, cfg, networks=nets, model=model, backend=SIM)
    batched = train(blobs, cfg, networks=nets, model=model, backend=BATCHED)
    assert_same(cpu, fused)
    for name in METRICS:
        np.testing.assert_allclose(batched[name].values, ref[name].values, rtol=1e-10, atol=1e-13, err_msg=name)
    assert np.all(np.isfinite(ref.train_loss.values)) and ref.attrs["device_model"] == "tabulated"
    assert np.all((0.05 < ref.extrapolated_readings) & (ref.extrapolated_readings < 0.95))


def test_every_engine_trains_the_float32_junction_model_alike(blobs):
    """stt_compact_f32 through every engine: the CPU engines call the same compiled float32
    function (equal to the NumPy engine as for stt_compact); the simulator runs the device
    functions as Python, where math.tanh, cos and sin of a float32 return Python floats, rounded
    to float32 at the next operation with NumPy 2 and not with NumPy 1.26: a float32 rounding or
    two apart per reading, not bits."""
    cfg = TrainConfig(hidden=(4,), epochs=2, lr=0.05, seed=9, dtype="float64", batch_size=16, variability=VAR,
                      readout=Readout(read_noise=1e-3))
    nets = np.array([2, 7])
    runs = {engine: train(blobs, cfg, networks=nets, model="stt_compact_f32", backend=backend)
            for engine, backend in (("numpy", "numpy"), ("cpu", "cpu"), ("fused", SIM), ("batched", BATCHED))}
    float64 = train(blobs, cfg, networks=nets, model="stt_compact", backend="cpu")
    for name in ("train_loss", "grad_cosine", "deriv_rel_err"):
        for engine in ("cpu", "fused", "batched"):
            np.testing.assert_allclose(runs[engine][name].values, runs["numpy"][name].values,
                                       rtol=1e-10 if engine != "fused" else 1e-5, err_msg=f"{engine} {name}")
        np.testing.assert_allclose(runs["cpu"][name].values, float64[name].values, rtol=1e-4, err_msg=name)
        assert not np.array_equal(runs["cpu"][name].values, float64[name].values), name  # float32, not float64
    assert runs["fused"].attrs["device_model"] == "stt_compact_f32" and np.isfinite(runs["cpu"].train_loss).all()


def test_batched_loop_reads_the_device_back_once_per_epoch_not_per_step(blobs, monkeypatch):
    """The data, batch order and running metrics stay on the device: the host-device transfers of
    a run do not grow with the steps per epoch (42 training rows: 2 steps of 21, or 6 of 7)."""
    from spingpu.training.cuda_engine import Device

    transfers = {}

    def counting(name):
        original = getattr(Device, name)

        def method(self, array):
            transfers[name] = transfers.get(name, 0) + 1
            return original(self, array)

        return method

    for name in ("put", "get"):
        monkeypatch.setattr(Device, name, counting(name))
    counts, results = [], []
    for batch in (21, 7):
        transfers.clear()
        cfg = TrainConfig(hidden=(5,), epochs=3, lr=0.05, seed=4, batch_size=batch, variability=VAR,
                          readout=Readout(read_noise=2e-3))
        results.append(train(blobs, cfg, networks=np.array([1, 6]), backend=BATCHED))
        counts.append(dict(transfers))
    assert counts[0] == counts[1], counts
    # per epoch: loss, accuracy, cosine, derivative error, validation, alive; at the end: test, readings beyond the table
    assert counts[0]["get"] == 6 * 3 + 2
    assert results[0].train_loss.values.tolist() != results[1].train_loss.values.tolist()  # the batches did differ


@pytest.mark.parametrize("stream_ptr, stream", [(0, ("legacy default stream",)), (0x5A17, ("external", 0x5A17))])
def test_device_launch_queues_on_cupys_stream_without_synchronising(monkeypatch, stream_ptr, stream):
    """On a GPU, ``Device.launch`` hands CuPy arrays to Numba as unsynchronised views and launches on
    CuPy's current stream (faked here: CI has no GPU); other arguments pass as they are."""
    from types import SimpleNamespace

    from numba import cuda

    from spingpu.training.cuda_engine import Device

    monkeypatch.setattr(cuda, "as_cuda_array", lambda a, sync=True: ("view", a.name, sync), raising=False)
    monkeypatch.setattr(cuda, "external_stream", lambda ptr: ("external", ptr), raising=False)
    monkeypatch.setattr(cuda, "legacy_default_stream", lambda: ("legacy default stream",), raising=False)

    class CupyLike:
        __cuda_array_interface__ = {"stream": 1}

        def __init__(self, name):
            self.name = name

    class Kernel:
        def __getitem__(self, config):
            return lambda *args: launches.append((config, args))

    launches = []
    device = Device(simulator=True)
    device.simulator = False
    device.xp = SimpleNamespace(cuda=SimpleNamespace(get_current_stream=lambda: SimpleNamespace(ptr=stream_ptr)))
    z, h = CupyLike("z"), CupyLike("h")
    device.array_passing = cuda_engine.WRAP_ARRAYS
    device.launch(Kernel(), 7, 128, z, 3, np.uint64(5), h)
    assert launches == [((7, 128, stream), (("view", "z", False), 3, np.uint64(5), ("view", "h", False)))]
    device.array_passing = cuda_engine.PASS_ARRAYS  # numba-cuda >= 0.30: DLPack on the launch stream
    device.launch(Kernel(), 7, 128, z, 3, np.uint64(5), h)
    assert launches[1] == ((7, 128, stream), (z, 3, np.uint64(5), h))


def test_arrays_pass_as_they_are_only_where_a_launch_computes_the_right_numbers(monkeypatch):
    """The check behind ``Device.array_passing``, run in the simulator: a right launch passes CuPy
    arrays as they are; a launch that raises or computes wrong numbers, or a numba-cuda before
    0.30, wraps them (with a warning where a check failed)."""
    from importlib import metadata

    from spingpu.errors import SpingpuWarning
    from spingpu.kernels import batched_cuda

    assert cuda_engine._checked_array_passing(cuda_engine.Device(simulator=True)) == cuda_engine.PASS_ARRAYS
    from numba import cuda

    @cuda.jit
    def zeros(rows, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = 0.0

    real = batched_cuda.network_mean
    for broken in (lambda: None, zeros):  # not a kernel; a kernel of other numbers
        monkeypatch.setattr(batched_cuda, "network_mean", broken)
        with pytest.warns(SpingpuWarning, match=r"^launching a kernel with CuPy arrays failed its check \("):
            assert cuda_engine._checked_array_passing(cuda_engine.Device(simulator=True)) == cuda_engine.WRAP_ARRAYS
    monkeypatch.setattr(batched_cuda, "network_mean", real)
    monkeypatch.setattr(metadata, "version", lambda name: "0.29.1")
    assert cuda_engine._checked_array_passing(cuda_engine.Device(simulator=True)) == cuda_engine.WRAP_ARRAYS


class RecordingDevice:
    """The simulator's device, recording of every GEMM call its network count, whether cuBLAS can
    read each operand in place (no copy), and whether the operands and product sit at 256-byte
    multiples or are arrays of their own."""

    def __init__(self):
        from spingpu.training.cuda_engine import Device

        self.device = Device(True)
        self.batches, self.in_place, self.aligned, self.layouts = [], [], [], []

    def gemm(self, a, b, out):
        from spingpu.training.batched_cuda_engine import GEMM_ALIGN_BYTES
        from spingpu.training.gemm import _reading, address, gemm_call

        call = gemm_call(np, a, b, out)
        self.layouts.append(tuple((op.transposed, op.ld) for op in (call.first, call.second)) + (call.ldc,))
        self.batches.append(out.shape[0])
        self.in_place += [_reading(x) is not None for x in (a, b)]
        self.aligned += [address(x) % GEMM_ALIGN_BYTES == 0 or x.flags.owndata for x in (a, b, out)]
        self.device.gemm(a, b, out)

    def __getattr__(self, name):
        return getattr(self.device, name)


@pytest.mark.parametrize("n", [1, 3, 8, 13, 24])
def test_grouped_matmul_calls_gemm_on_exactly_group_networks_and_equals_per_network_products(n):
    from spingpu.training.batched_cuda_engine import grouped_matmul

    rng = np.random.default_rng()
    shared, a, w = rng.normal(size=(5, 7)), rng.normal(size=(n, 5, 7)), rng.normal(size=(n, 7, 3))
    for left, right, expect in [(shared, w, [shared @ w[i] for i in range(n)]), (a, w, [a[i] @ w[i] for i in range(n)]),
                                (a.swapaxes(1, 2), a, [a[i].T @ a[i] for i in range(n)]),
                                (shared.T, a, [shared.T @ a[i] for i in range(n)]),
                                (a, a.swapaxes(1, 2), [a[i] @ a[i].T for i in range(n)])]:
        device = RecordingDevice()
        out = grouped_matmul(device, left, right, group=8)
        assert out.shape == (n,) + expect[0].shape
        np.testing.assert_allclose(out, np.stack(expect), rtol=1e-13, atol=1e-13)
        assert device.batches and set(device.batches) == {8}
        assert len(device.batches) == max(1, -(-n // 8))
        given = np.full(out.shape, np.nan)
        assert grouped_matmul(device, left, right, group=8, out=given) is given
        np.testing.assert_array_equal(given, out)


def test_every_matrix_product_of_a_batched_step_is_a_gemm_call_of_group_networks(blobs):
    """Forward (L + 1 products), backward (L + 1 weight gradients, L deltas through the weights):
    all through ``grouped_matmul``, so all GEMM calls hold GEMM_NETWORKS networks (3 padded to 128);
    and with more than GEMM_NETWORKS networks, every operand, transposed ones included, is read in
    place."""
    from spingpu.devices import get_model
    from spingpu.kernels import streams
    from spingpu.training.batched_cuda_engine import GEMM_NETWORKS, BatchedCudaEngine
    from spingpu.training.numpy_engine import NoiseSource, NumpyEngine

    cfg = TrainConfig(hidden=(5, 4, 6), epochs=1, lr=0.05, seed=4, variability=VAR)
    layers = len(cfg.hidden)
    x, y = blobs.x_train[:8], blobs.y_train[:8]
    layouts = None  # the calls of the group of 3 networks (the first case), for the second to equal
    for nets in (np.array([0, 5, 9]), np.arange(GEMM_NETWORKS + 2)):
        device = RecordingDevice()
        engine = BatchedCudaEngine(get_model("stt_compact"), cfg, nets, blobs.n_features, blobs.n_classes,
                                   device=device)
        noise = NoiseSource(cfg.seed, nets, streams.PURPOSE_NOISE, 0, 0)
        logits, cache = engine.forward(x, noise)
        _, dlogits = engine.loss_and_dlogits(logits, y)
        grads = engine.backward(dlogits, cache)
        groups = 1 if nets.size <= GEMM_NETWORKS else 2
        assert device.batches == [GEMM_NETWORKS] * (groups * (3 * layers + 2))
        if groups > 1:
            assert all(device.in_place)
            # every call as cuBLAS reads it (ops, leading dimensions) is that of the padded group of 3
            # networks: a network's products do not depend on how many it is trained among
            assert layouts is not None and device.layouts[::2] == device.layouts[1::2] == layouts
        layouts = device.layouts
        # the gradients used are the optimiser's flat buffer itself: apply() copies nothing
        assert all(g is v for g, v in zip(grads, engine.gradient_buffers()))
        assert np.array_equal(engine.grad_flat, np.concatenate([g.reshape(-1) for g in grads]))
        reference = NumpyEngine(get_model("stt_compact"), cfg, nets, blobs.n_features, blobs.n_classes)
        ref_logits, ref_cache = reference.forward(x, NoiseSource(cfg.seed, nets, streams.PURPOSE_NOISE, 0, 0))
        for g, r in zip(grads, reference.backward(reference.loss_and_dlogits(ref_logits, y)[1], ref_cache)):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7)


def test_the_direct_gemm_is_used_only_once_it_equals_cupy_matmul(monkeypatch):
    """On a GPU the first GEMM checks the direct cuBLAS call against cupy.matmul (here: NumPy in
    CuPy's place, the emulation in cuBLAS's); a wrong or failing call is said in one warning and
    cupy.matmul multiplies instead, to the same numbers."""
    import warnings

    from spingpu import SpingpuWarning
    from spingpu.training import cuda_engine, gemm

    monkeypatch.setattr(gemm, "run_cublas", gemm.emulate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cuda_engine._checked_gemm_path(np) == cuda_engine.DIRECT_GEMM

    def off_by_one(call):
        gemm.emulate(call)
        call.out[0, 0, 0] += 1.0

    def unsupported(call):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")

    for broken, why in ((off_by_one, "ArithmeticError: float32 (3, 5, 7) @ (3, 7, 4): largest difference 1"),
                        (unsupported, "RuntimeError: CUBLAS_STATUS_NOT_SUPPORTED")):
        monkeypatch.setattr(gemm, "run_cublas", broken)
        with pytest.warns(SpingpuWarning) as record:
            assert cuda_engine._checked_gemm_path(np) == cuda_engine.CUPY_MATMUL
        assert len(record) == 1 and str(record[0].message) == (
            f"the direct strided batched GEMM failed its check ({why}); the batched CUDA engine multiplies "
            "with cupy.matmul instead")
    device = cuda_engine.Device(True)
    rng = np.random.default_rng()
    a, b = rng.normal(size=(4, 6, 5)).swapaxes(1, 2), rng.normal(size=(6, 3))
    expect = np.empty((4, 5, 3))
    device.gemm(a, np.broadcast_to(b, (4, 6, 3)), expect)
    device.gemm_path = cuda_engine.CUPY_MATMUL
    out = np.empty((4, 5, 3))
    device.gemm(a, np.broadcast_to(b, (4, 6, 3)), out)
    np.testing.assert_allclose(out, expect, rtol=1e-13)


def test_grouped_matmul_hands_cublas_only_aligned_or_fresh_operands():
    """Networks 100 to 399: the full block of networks 128-255 starts at row 28, 4,480 bytes into a
    (300, 4, 5) float64 array (not a multiple of 256): cuBLAS may pick another kernel for another
    alignment, so such operands are copied."""
    from spingpu.training.batched_cuda_engine import gemm_blocks, grouped_matmul

    rng = np.random.default_rng()
    a, w = rng.normal(size=(300, 4, 5)), rng.normal(size=(300, 5, 3))
    device = RecordingDevice()
    blocks = gemm_blocks(np.arange(100, 400))
    assert [(b.rows, b.full) for b in blocks] == [(slice(0, 28), False), (slice(28, 156), True),
                                                  (slice(156, 284), True), (slice(284, 300), False)]
    out = grouped_matmul(device, a, w, blocks)
    np.testing.assert_allclose(out, np.stack([a[i] @ w[i] for i in range(300)]), rtol=1e-13, atol=1e-13)
    assert len(device.aligned) == 12 and all(device.aligned)


class SlotDependentDevice(RecordingDevice):
    """A GEMM whose rounding depends on where a product sits in the call (as cuBLAS's stream-K
    scheduling may make it): slot s of every call gets s * 2**-20 added."""

    def gemm(self, a, b, out):
        super().gemm(a, b, out)
        out += np.arange(out.shape[0])[:, None, None] * 2.0**-20


def test_a_network_takes_the_slot_of_its_global_index_whatever_the_others():
    """Network g is computed in slot g % 128 of its call: with a slot-dependent GEMM, its product
    is the same bits alone, among 130, in networks 100-399, or among others in any order."""
    from spingpu.training.batched_cuda_engine import gemm_blocks, grouped_matmul

    rng = np.random.default_rng()
    n_all = 400
    shared, a, w = rng.normal(size=(6, 5)), rng.normal(size=(n_all, 6, 5)), rng.normal(size=(n_all, 5, 3))
    expect = np.stack([shared @ w[g] for g in range(n_all)]) + (np.arange(n_all) % 128)[:, None, None] * 2.0**-20
    for nets in (np.array([129]), np.arange(130), np.arange(100, 400), np.array([300, 3, 130, 129, 1])):
        device = SlotDependentDevice()
        got = grouped_matmul(device, shared, w[nets], gemm_blocks(nets))
        assert set(device.batches) == {128} and len(device.batches) == len({g // 128 for g in nets})
        np.testing.assert_array_equal(got, expect[nets])
        got = grouped_matmul(device, a[nets].swapaxes(1, 2), a[nets], gemm_blocks(nets))  # transposed, 3-D
        np.testing.assert_array_equal(got[-1], grouped_matmul(SlotDependentDevice(), a[nets[-1:]].swapaxes(1, 2),
                                                              a[nets[-1:]], gemm_blocks(nets[-1:]))[0])


def test_wide_layers_take_the_batched_engine_in_memory_sized_chunks(blobs, monkeypatch):
    from spingpu.training import trainer
    from spingpu.devices import get_model
    from spingpu.training.batched_cuda_engine import bytes_per_network, gemm_scratch_bytes

    cfg = TrainConfig(hidden=(66,), epochs=1, lr=0.05, seed=6, dtype="float64", batch_size=21, variability=VAR,
                      readout=Readout(read_noise=1e-3))
    nets = np.array([1, 4, 7])
    ref = train(blobs, cfg, networks=nets, backend="numpy")
    # room for the data, the padded GEMM call and 2.5 networks at the batch of 21 (evaluation too): two chunks
    sizes, rows = (blobs.n_features, 66, blobs.n_classes), 21
    data = 8 * (blobs.x_train.size + blobs.x_val.size + blobs.x_test.size)
    budget = data + gemm_scratch_bytes(cfg, sizes, rows) + int(2.5 * bytes_per_network(cfg, sizes, rows, get_model("stt_compact")))
    chunks, train_chunk = [], trainer._train_batched
    monkeypatch.setattr(trainer, "_train_batched", lambda *a: chunks.append(a[3].tolist()) or train_chunk(*a))
    gpu = train(blobs, cfg, networks=nets, backend=Backend("cuda", simulator=True, gpu_memory_bytes=budget))
    assert chunks == [[1, 4], [7]]
    for name in METRICS:
        np.testing.assert_allclose(gpu[name].values, ref[name].values, rtol=1e-10, atol=1e-12, err_msg=name)


def test_memory_sizing_covers_what_a_batched_run_allocates_per_network():
    """The peak memory of a run (traced: in the simulator the device arrays are NumPy arrays) grows
    by at most ``bytes_per_network`` per network (measured: ~85 % of it, the estimate being an upper
    bound of what is alive at once), and by more than 40 % of it (not a gross overestimate). Wide
    layers and a batch of 3, so the weights' share (flat buffers, gradients, moments) dominates, as at
    MNIST size."""
    import tracemalloc

    from spingpu import from_arrays
    from spingpu.devices import get_model
    from spingpu.kernels import batched_cuda
    from spingpu.training.batched_cuda_engine import BatchedCudaEngine, bytes_per_network
    from spingpu.training.cuda_engine import Device
    from spingpu.training.trainer import _train_batched

    class NoOptimizerDevice(Device):
        """Skips the optimiser and divergence kernels, which allocate nothing (in the simulator, one
        Python call per weight makes them the slowest part; their arithmetic is tested elsewhere)."""

        def launch(self, kernel, *args):
            if kernel not in (batched_cuda.optimizer_update, batched_cuda.flag_diverged):
                super().launch(kernel, *args)

    rng = np.random.default_rng()
    # the fewest rows that split: 9 to train (3 steps of the batch), 3 to validate, 3 to test
    data = from_arrays(rng.normal(size=(15, 4)), np.arange(15) % 3, seed=1)
    model = get_model("stt_compact")
    cfg = TrainConfig(hidden=(66, 66), epochs=1, lr=0.05, seed=6, optimizer="adam", batch_size=3, variability=VAR)

    def engine(*args, **kwargs):
        made = BatchedCudaEngine(*args, device=NoOptimizerDevice(True), eval_rows=3, **kwargs)
        # on a GPU one kernel that allocates nothing; in the simulator NumPy's test, with temporaries
        made.flag_diverged = lambda loss, grads: None
        return made

    _train_batched(engine, data, cfg, np.arange(1), model, None, False)  # compiles (allocations of its own)
    peaks = {}
    for n in (2, 6):
        tracemalloc.start()
        _train_batched(engine, data, cfg, np.arange(n), model, None, False)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_network = (peaks[6] - peaks[2]) / 4
    estimate = bytes_per_network(cfg, (4, 66, 66, 3), 3, model)
    assert 0.4 * estimate < per_network <= estimate, (per_network, estimate)


def test_fused_engine_refuses_networks_it_cannot_hold(blobs):
    cfg = TrainConfig(hidden=(66,), epochs=1)
    with pytest.raises(ConfigError, match="^cuda_engine: 'fused' needs layers of at most 64 units"):
        train(blobs, cfg, n_networks=1, backend=Backend("cuda", simulator=True, cuda_engine="fused"))


def test_cuda_without_a_gpu_is_a_clear_error(blobs, monkeypatch):
    from spingpu import backends

    monkeypatch.setattr(backends, "cuda_simulator_enabled", lambda: False)
    monkeypatch.setattr(backends, "cuda_gpus", lambda: ())
    cfg = TrainConfig(hidden=(3,), epochs=1)
    with pytest.raises(ConfigError, match=r"^backend: 'cuda' needs a CUDA GPU, and none is visible; "
                                          r"allowed here: auto, numpy, cpu$"):
        train(blobs, cfg, n_networks=1, backend=Backend("cuda"))


def test_cuda_without_the_gpu_packages_is_a_clear_error_and_auto_takes_the_cpu(blobs, monkeypatch, capsys):
    """A GPU is visible but numba-cuda is missing (Numba's own numba.cuda lacks launch bounds) or
    CuPy is: ``cuda`` says which to install, ``auto`` takes the CPU, ``info`` says why."""
    from spingpu import backends
    from spingpu.cli.main import main

    monkeypatch.setattr(backends, "cuda_simulator_enabled", lambda: False)
    monkeypatch.setattr(backends, "cuda_gpus", lambda: ("NVIDIA H200 (cc 9.0, 139.8 GiB)",))
    for missing in (["numba-cuda"], ["cupy"], ["numba-cuda", "cupy"]):
        monkeypatch.setattr(backends, "missing_cuda_packages", lambda need_cupy=True, m=missing: m)
        needs = " and ".join(missing)
        with pytest.raises(ConfigError, match=rf"^backend: 'cuda' needs {needs}: pip install 'spingpu\[gpu\]' "):
            backends.get_backend("cuda")
        with pytest.raises(ConfigError, match=rf"^backend: 'cuda' needs {needs}: "):
            train(blobs, TrainConfig(hidden=(3,), epochs=1), n_networks=1, backend=Backend("cuda"))
        assert backends.get_backend("auto") == Backend("cpu")
        cuda_row = [row for row in backends.available_backends() if row[0] == "cuda"][0]
        assert cuda_row[1] is False and cuda_row[2].endswith(f"; {needs} not installed")
    monkeypatch.setattr(backends, "missing_cuda_packages", lambda need_cupy=True: ["numba-cuda"])
    assert main(["info", "--check-kernels"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "spingpu info: error: check-kernels: needs numba-cuda and nvJitLink: pip install 'spingpu[gpu]' "
        "(or 'spingpu[test]')")


def test_a_gpu_whose_cupy_cannot_load_cublas_names_it(monkeypatch):
    """CuPy's wheels load cuBLAS but do not bring it: where a GPU is visible and CuPy is installed
    but ``cupy_backends.cuda.libs.cublas`` cannot be imported (CuPy raises ImportError naming
    libcublas), ``cuda`` says so in one line, before any kernel is compiled; without a GPU
    nothing is loaded."""
    import importlib.util

    from spingpu import backends

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: object() if name == "cupy" else real_find_spec(name, *args))
    monkeypatch.setitem(sys.modules, "cupy_backends", None)  # its import raises ImportError, as a missing library does
    monkeypatch.setattr(backends, "cuda_simulator_enabled", lambda: False)
    backends._cublas_loads.cache_clear()
    backends._nvrtc_loads.cache_clear()
    try:
        monkeypatch.setattr(backends, "gpu_devices", lambda: ())
        assert "cuBLAS (libcublas)" not in backends.missing_cuda_packages()
        assert backends._cublas_loads.cache_info().currsize == 0  # not even tried
        monkeypatch.setattr(backends, "gpu_devices", lambda: (("NVIDIA H200", (9, 0), 150 * 2**30),))
        monkeypatch.setattr(backends, "cuda_gpus", lambda: ("NVIDIA H200 (cc 9.0, 150.0 GiB)",))
        # (cupy_backends cannot be imported at all here, so NVRTC cannot be loaded either)
        assert backends.missing_cuda_packages()[-2:] == ["cuBLAS (libcublas)", "NVRTC (libnvrtc)"]
        with pytest.raises(ConfigError, match=r"^backend: 'cuda' needs (numba-cuda and )?cuBLAS \(libcublas\) and "
                                              r"NVRTC \(libnvrtc\): pip "
                                              r"install 'spingpu\[gpu\]' \(or 'spingpu\[gpu-cuda12\]' for a CUDA 12 "
                                              r"driver\); allowed here: auto, numpy, cpu$"):
            backends.get_backend("cuda")
        assert backends.get_backend("auto") == Backend("cpu")
    finally:
        backends._cublas_loads.cache_clear()
        backends._nvrtc_loads.cache_clear()


def test_a_gpu_whose_cupy_cannot_load_nvrtc_names_it(monkeypatch):
    """CuPy links NVRTC at its first use: where cuBLAS loads but NVRTC's version cannot be read
    (CuPy raises naming the library), ``cuda`` names NVRTC in one line and ``auto`` takes the CPU."""
    import importlib.util
    import types

    from spingpu import backends

    def unloadable():
        raise RuntimeError("CuPy failed to load libnvrtc.so.13")

    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = types.ModuleType("cublas")
    libs.nvrtc = types.SimpleNamespace(getVersion=unloadable)
    for name, module in (("cupy_backends", types.ModuleType("cupy_backends")),
                         ("cupy_backends.cuda", types.ModuleType("cupy_backends.cuda")),
                         ("cupy_backends.cuda.libs", libs)):
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules["cupy_backends"].cuda = sys.modules["cupy_backends.cuda"]
    sys.modules["cupy_backends.cuda"].libs = libs
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: object() if name == "cupy" else real_find_spec(name, *args))
    monkeypatch.setattr(backends, "cuda_simulator_enabled", lambda: False)
    monkeypatch.setattr(backends, "gpu_devices", lambda: (("NVIDIA H200", (9, 0), 150 * 2**30),))
    monkeypatch.setattr(backends, "cuda_gpus", lambda: ("NVIDIA H200 (cc 9.0, 150.0 GiB)",))
    backends._cublas_loads.cache_clear()
    backends._nvrtc_loads.cache_clear()
    try:
        assert backends.missing_cuda_packages()[-1:] == ["NVRTC (libnvrtc)"]
        with pytest.raises(ConfigError, match=r"^backend: 'cuda' needs (numba-cuda and )?NVRTC \(libnvrtc\): pip "):
            backends.get_backend("cuda")
        assert backends.get_backend("auto") == Backend("cpu")
        backends._nvrtc_loads.cache_clear()
        libs.nvrtc = types.SimpleNamespace(getVersion=lambda: (13, 0))  # loads: nothing missing
        assert backends.missing_cuda_packages() == []
    finally:
        backends._cublas_loads.cache_clear()
        backends._nvrtc_loads.cache_clear()


def test_each_gpu_is_checked_once_per_process(monkeypatch):
    """The GEMM and launch checks run at a GPU's first use in a process: later runs (each makes its
    Device) take their answers, and a failed check warns once, not once per run; another GPU is
    checked for itself, and a benchmark's setting stays its Device's."""
    from spingpu.training import cuda_engine

    monkeypatch.setattr(cuda_engine, "_CHECKED", {})
    calls = []
    monkeypatch.setattr(cuda_engine, "_checked_gemm_path", lambda xp: calls.append("gemm") or cuda_engine.CUPY_MATMUL)
    monkeypatch.setattr(cuda_engine, "_checked_array_passing",
                        lambda device: calls.append(f"launch {device.gpu}") or cuda_engine.WRAP_ARRAYS)

    def gpu_device(gpu):  # a Device as on a GPU, without one
        device = cuda_engine.Device(simulator=True)
        device.simulator, device.gpu = False, gpu
        return device

    for gpu in (0, 0, 1, 0):
        device = gpu_device(gpu)
        assert (device.gemm_path, device.array_passing) == (cuda_engine.CUPY_MATMUL, cuda_engine.WRAP_ARRAYS)
    assert calls == ["gemm", "launch 0", "gemm", "launch 1"]
    timed = gpu_device(0)
    timed.gemm_path = cuda_engine.DIRECT_GEMM
    assert timed.gemm_path == cuda_engine.DIRECT_GEMM and gpu_device(0).gemm_path == cuda_engine.CUPY_MATMUL


def test_the_next_chunk_is_packed_while_one_trains(blobs, monkeypatch):
    """The fused CUDA engine packs chunk k + 1 on the host after launching chunk k and before
    reading back chunk k - 1: the host's set-up of a chunk overlaps the GPU's training of the one
    before, and only the first chunk's is part of the set-up."""
    from spingpu.training import cuda_engine

    events = []
    real_pack, real_copy = cuda_engine.FusedCudaRun.pack_chunk, cuda_engine.Device.copy_to_host
    real_launch = cuda_engine.Device.launch

    def pack_chunk(self, lo, hi):
        events.append(f"pack {lo}")
        return real_pack(self, lo, hi)

    def launch(self, kernel, blocks, threads, *args):
        events.append(f"launch {blocks}")
        return real_launch(self, kernel, blocks, threads, *args)

    def copy_to_host(self, pairs, after):
        events.append("read back")
        return real_copy(self, pairs, after)

    monkeypatch.setattr(cuda_engine.FusedCudaRun, "pack_chunk", pack_chunk)
    monkeypatch.setattr(cuda_engine.Device, "launch", launch)
    monkeypatch.setattr(cuda_engine.Device, "copy_to_host", copy_to_host)
    monkeypatch.setattr(cuda_engine, "LAUNCH_BLOCKS", 2)
    cfg = TrainConfig(hidden=(3,), epochs=1, lr=0.05, seed=9, variability=VAR, readout=Readout(read_noise=1e-3))
    train(blobs, cfg, networks=np.arange(5), backend=Backend("cuda", simulator=True, block_threads=32))
    assert events == ["pack 0", "launch 1",  # the probe (compiles)
                      "pack 0", "launch 2", "pack 2", "launch 2", "pack 4", "read back", "launch 1", "read back",
                      "read back"]



class OnDevice(np.ndarray):
    """A NumPy array marked as made on the device (by ``put`` or the device's ``xp``)."""


class MarkingDevice(cuda_engine.Device):
    """The simulator's Device, whose arrays are marked: a launch given a host array fails. The
    simulator takes NumPy arrays anywhere, where numba-cuda on a GPU would copy a host array there
    and back around the launch, blocking the host until the kernel ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        marked = lambda make: lambda *a, **k: make(*a, **k).view(OnDevice)  # noqa: E731
        self.xp = type("MarkedNumpy", (), {"__getattr__": lambda _, name: getattr(np, name),
                                           "full": staticmethod(marked(np.full)),
                                           "empty": staticmethod(marked(np.empty)),
                                           "zeros": staticmethod(marked(np.zeros))})()

    def put(self, array):
        return np.asarray(array).view(OnDevice)

    def launch(self, kernel, blocks, threads, *args):
        host = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and not isinstance(a, OnDevice)]
        assert not host, f"host arrays at arguments {host}"
        super().launch(kernel, blocks, threads, *args)


@pytest.mark.parametrize("model", ["stt_compact", "tabulated"])
def test_every_array_a_fused_launch_takes_is_on_the_device(blobs, monkeypatch, model):
    from spingpu.devices.tabulated import tabulated_model

    if model == "tabulated":
        current = np.linspace(-1e-3, 1e-3, 33)
        model = tabulated_model(table=(current, 0.4 * np.tanh(current / 4e-4) + 200.0 * current))
    monkeypatch.setattr(cuda_engine, "Device", MarkingDevice)
    monkeypatch.setattr(cuda_engine, "LAUNCH_BLOCKS", 2)
    cfg = TrainConfig(hidden=(3,), epochs=1, lr=0.05, seed=9, variability=VAR, readout=Readout(read_noise=1e-3))
    marked = train(blobs, cfg, networks=np.arange(3), model=model, backend=SIM)
    monkeypatch.undo()
    plain = train(blobs, cfg, networks=np.arange(3), model=model, backend=SIM)
    for name in METRICS:
        np.testing.assert_array_equal(marked[name].values, plain[name].values, err_msg=name)
