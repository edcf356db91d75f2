"""One script for a GPU node: the CUDA engines checked against the CPU engines, then timed.

Needs NumPy, Numba, numba-cuda, CuPy and xarray; no Dask, no scikit-learn, no SciPy, no threadpoolctl,
no network, installs nothing (a test runs it with those hidden). From a source checkout (the
repository root is put on sys.path):

    python benchmarks/gpu_check.py                 # about 3-4 minutes on an H100/H200-class GPU
    OUT=/some/dir python benchmarks/gpu_check.py   # also writes /some/dir/gpu_check.json
    python benchmarks/gpu_check.py --simulate      # tiny sizes in Numba's CUDA simulator (CI's smoke test)

Checks (fresh random inputs, seed printed; outputs poisoned with a sentinel beforehand and every
element required to be overwritten):

  fused      the fused block-per-network kernel against the fused CPU engine: 4-8-3 networks, fd_forward,
             read noise, Adam, float64 on both sides, so they differ by FMA contraction and libm ulps only;
             and the fraction of readings beyond a narrow tabulated curve (extrapolated_readings)
  pair       the batched engine's pair-neuron kernel against the CPU kernel, stt_compact and a
             tabulated junction, normwise (max |diff| / max |value| < 1e-12; stt_compact_f32's float32
             junctions < 1e-5), and its count of readings beyond the table element by element
  batched    the batched CUDA engine against the NumPy engine, float32, on a 784-64-64-10 problem, and
             its last network trained alone against the same network among 130 (bit-identical); the
             same for networks 1 and 129 of an odd-sized 7-66-3 problem, whose GEMM operands sit at
             offsets that are not multiples of 256 bytes (grouped_matmul's aligned copies), and that
             problem run twice (bit-identical); where they differ, the metrics that do, and each
             per-network operation of a step that gives other bits alone than among 130

First a preflight of a few seconds (one Numba kernel on CuPy arrays through Device.launch, one CuPy
matmul): if the GPU stack does not work, the script says so and stops at once.

Timings (copy, pair kernel and SGEMM: CUDA events, best of 5, each behind a ~50 ms spinning
kernel, so the host has queued every launch before the GPU reaches them and the time is the GPU's
alone (a timing whose launches were still being queued when the spin ended is counted in the JSON's
"timings_queued_late" and flagged in the table); the rest: wall time with the GPU synchronised at
both ends; compilation excluded and reported; Iris's "compile" also holds the host-side set-up,
sampling every network's junctions and initial weights):

  copy       device-to-device copy bandwidth of a 1 GiB buffer, (read + write bytes) / s
  pair       the pair kernel on (N, B, U) = (512, 128, 256) float32: bytes of z in, h / used / exact out,
             the readings beyond the table out (one byte each), junction parameters in, over its time,
             and that over the copy bandwidth; then a tabulated junction, stt_compact_f32 (float32
             junctions), stt_compact with the two readings one after the other (as before
             2026-12-02), and stt_compact without read
             noise, with one reading per neuron and in its tanh branch (no junction), which attribute
             its time
  sgemm      cuBLAS SGEMM 8192^3 through cupy.matmul: TFLOP/s
  mnist      batched training 784-256-256-256-256-10, batch 128, 128 and 1024 networks: network-steps/s,
             the host's time to queue a step against the step's time, and the
             TFLOP/s of its matrix products over SGEMM's (2 B (3 sum(fan_in fan_out) - F_0 U_1) flop per
             network-step: forward, weight gradients, and deltas through every layer but the first);
             each with the engine's direct strided batched GEMM (transposed and shared operands read
             in place) and again with cupy.matmul (which copies them) as its peer
  iris       4-8-3 fd_forward, full batch of 90 samples, 200 epochs, at 1e4, 1e5 and 1e6 networks
             (blocks of 96 threads), 1e5 again in blocks of 128 threads and with the kernel compiled
             for >= 4 and >= 5 resident blocks per SM (launch bounds; whether the numbers equal the
             compiler's choice is shown, not required: ptxas may contract multiplies and adds
             differently), 1e6 again with the fastest if that is not the default, then 1e5 without
             read noise, with the oracle derivative (one reading per neuron) and with tanh neurons
             (no junctions), which attribute an epoch's time, 1e5 with each pair neuron's two readings
             evaluated one after the other (the kernel before 2026-12-02; same numbers required: the
             default evaluates them side by side, two chains per thread), and last 1e5 with the stt_compact_f32
             model (float32 junctions; its test accuracies and final losses against the default's)
             and, if faster, 1e6 with it: network-epochs/s and registers (a run predicted to exceed
             --budget seconds or the time left before --deadline is skipped and said so)
  launch     the host's time to queue one pair-kernel launch (numba-cuda, through Device.launch: the
             cost the engine pays; CuPy arrays passed as they are where that passed its check, and
             then again each wrapped for numba-cuda, the way older numba-cuda needs) against a CuPy
             RawKernel (CUDA C) with the same 19 arguments
  precision  junction readings per second (2 per thread, a Philox normal pair shared by them, 2^24
             readings) of the engines' float64 device functions against the stt_compact_f32 model's
             junction with float32 noise (benchmarks/float32_reading.py), and the largest
             |V_f32 - V_f64|: what float32 physics buys per reading
  macrospin  the LLGS kernel: junction-steps/s, and its resistances against the CPU kernel's; the
             junction tables of training as the CUDA engines compute them, against the CPU's

The parts run in the order above (checks, then timings): the three targets (pair kernel, MNIST
GEMMs, Iris) first, and each Iris run is sized to the time left. Each part runs on its own: one
that raises is recorded under "errors" (traceback printed) and the others still run, unless the
CUDA context no longer works after it (the preflight is run again to see), when the later parts
are skipped and said to be; the GPU is synchronised at the end of each part, so that an
asynchronous kernel error is charged to the part that caused it. No part starts after --deadline
seconds (skipped, and said so), and a hang ends the script with every thread's stack after
--hang-after seconds. The JSON is rewritten after every part and every Iris run. Exit status 1 if
a check fails, a part or an Iris run raised or was skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTINEL = -12345.0
IRIS_SIZES = (4, 8, 3)
# under --simulate, where the simulator runs every CUDA thread as a Python thread: few rows, small blocks
SIM_IRIS_ROWS = 24
SIM_THREADS = 32


MNIST_SIZES = (784, 256, 256, 256, 256, 10)


def fused_backend(sim, min_blocks=None, threads=None):
    """The CUDA backend of the fused-kernel runs (small blocks in the simulator)."""
    from spingpu.backends import Backend

    return Backend("cuda", simulator=sim, block_threads=SIM_THREADS if sim else threads, min_blocks_per_sm=min_blocks)


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--simulate", action="store_true", help="tiny sizes in Numba's CUDA simulator")
    p.add_argument("--budget", type=float, default=90.0, help="skip an Iris run predicted to take longer (s)")
    p.add_argument("--deadline", type=float, default=270.0,
                   help="seconds after the start past which no further part or Iris run starts (default 270)")
    p.add_argument("--hang-after", type=float, default=None,
                   help="print every thread's stack and exit (status 1) after this many seconds: a kernel "
                        "that never ends (default: the deadline + 150)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random inputs (default: from the clock)")
    args = p.parse_args()
    if not args.deadline >= 0:
        p.error(f"--deadline: {args.deadline} must be >= 0")
    if args.hang_after is None:
        args.hang_after = args.deadline + 150
    if not args.hang_after > 0:
        p.error(f"--hang-after: {args.hang_after} must be > 0")
    return args


def blobs(rng, n, features, classes, name):
    """Gaussian blobs, one centre per class, split 60 / 20 / 20 (Iris's 90 / 30 / 30 at n = 150) as
    drawn: ``from_splits`` needs no scikit-learn, which a bare GPU node may lack."""
    from spingpu import from_splits

    centres = rng.normal(0, 1.5, (classes, features))
    parts = []
    for rows in (n - 2 * (n // 5), n // 5, n // 5):
        y = np.arange(rows) % classes
        parts += [centres[y] + rng.normal(0, 1.0, (rows, features)), y]
    return from_splits(*parts, name=name)


def versions():
    """The versions of what the GPU code runs on (None where a package is missing)."""
    import platform
    from importlib import metadata

    out = dict(python=platform.python_version(),
               # CuPy's reductions (CUB or not) and matmul precision (TF32) follow these
               env={k: os.environ.get(k) for k in ("CUPY_ACCELERATORS", "CUPY_TF32") if k in os.environ})
    for name in ("numpy", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "xarray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import cupy

        out["cupy"] = cupy.__version__
        out["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as err:  # no CuPy, or no driver: said, not fatal here
        out["cupy"] = f"unavailable ({type(err).__name__}: {err})"
    return out


def preflight(device, sim):
    """A few seconds' proof that kernels run at all before the long parts: a Numba kernel of the
    batched engine (``network_mean``) launched on CuPy arrays through ``Device.launch``, and a CuPy
    ``matmul``, both checked against NumPy; and xarray, which every ``train`` returns its results in."""
    importlib.import_module("xarray")  # an ImportError here stops the script before any part needs it

    from spingpu.kernels import batched_cuda

    xp = device.xp
    rows = np.arange(3000.0).reshape(300, 10)
    means = xp.full(300, np.nan)
    device.launch(batched_cuda.network_mean, batched_cuda.blocks(300), batched_cuda.THREADS, device.put(rows), means)
    m = np.arange(6.0).reshape(2, 3)
    prod = device.get(xp.matmul(device.put(m), device.put(m.T.copy())))
    device.synchronize()
    if not (np.array_equal(device.get(means), rows.mean(axis=1)) and np.array_equal(prod, m @ m.T)):
        raise RuntimeError("a Numba kernel or a CuPy matmul gave wrong numbers")
    return dict(ok=True)


def attempt(fn, *fn_args, **fn_kwargs):
    """(fn(...), None), or (None, the error in a line) with its traceback printed: one failing part
    must not lose the others' numbers."""
    try:
        return fn(*fn_args, **fn_kwargs), None
    except Exception as err:
        traceback.print_exc()
        return None, f"{type(err).__name__}: {err}"


class Timer:
    """Wall time of a block, with the GPU synchronised at both ends."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        self.device.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.device.synchronize()
        self.seconds = time.perf_counter() - self.t0
        return False


# --- checks --------------------------------------------------------------------------------------


def check_fused(rng, device, sim):
    from spingpu import Readout, Variability
    from spingpu.kernels.fused_cuda import fused_cuda_layout
    from spingpu.devices import get_model
    from spingpu.errors import ExtrapolationWarning
    from spingpu.training import TrainConfig, train
    from spingpu.training.cuda_engine import FusedCudaRun, fused_cuda_kernel

    n, epochs = (2, 1) if sim else (256, 20)
    ds = blobs(rng, SIM_IRIS_ROWS if sim else 150, 4, 3, "iris-shaped")
    cfg = TrainConfig(hidden=(8,), epochs=epochs, lr=0.02, seed=int(rng.integers(1 << 30)), grad_mode="fd_forward",
                      variability=Variability(sigma_d2d=0.1, sigma_pair=0.02), readout=Readout(read_noise=1e-3))
    cpu = train(ds, cfg, n_networks=n, backend="cpu")
    gpu = train(ds, cfg, n_networks=n, backend=fused_backend(sim))
    loss_rel = float(np.nanmax(np.abs(gpu.train_loss.values - cpu.train_loss.values) /
                               np.abs(cpu.train_loss.values)))
    acc_diff = float(np.mean(gpu.test_acc.values != cpu.test_acc.values))
    # a measured curve narrower than the drive: the readings beyond it counted alike (to a reading
    # or two moved across an end of the table by the GPU's rounding)
    narrow = tabulated_stt_compact(span=2e-4)
    few = 1 if sim else min(n, 64)  # the simulator runs each CUDA thread as a Python thread
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)  # the point of this run
        beyond_cpu, beyond_gpu = (train(ds, cfg, n_networks=few, model=narrow, backend=b).extrapolated_readings.values
                                  for b in ("cpu", fused_backend(sim)))
    beyond_diff = float(np.max(np.abs(beyond_gpu - beyond_cpu)))
    # poisoned outputs: every element of a network that did not diverge must be written
    model = get_model("stt_compact")
    layout = fused_cuda_layout(IRIS_SIZES, len(model.parameters), ds.y_train.size, fused_backend(sim).block_threads)
    run = FusedCudaRun(ds, cfg, np.arange(few), model, None, layout, device)
    out = {k: device.put(np.full((few, epochs) if k not in ("test", "div") else few, SENTINEL)) for k in
           ("loss", "acc", "val", "cos", "derr", "test")}
    out["div"] = device.put(np.zeros(few, dtype=bool))
    out["beyond"] = device.put(np.full(few, -1, dtype=np.int64))
    device.launch(fused_cuda_kernel(model, layout), few, layout.threads, *run.arguments(0, few, out))  # as the engine
    unwritten = sum(int((device.get(v) == SENTINEL).sum()) for k, v in out.items() if k not in ("div", "beyond"))
    unwritten += int((device.get(out["beyond"]) < 0).sum())
    ok = bool(loss_rel < 1e-6 and acc_diff <= 0.02 and unwritten == 0 and beyond_diff < 1e-3 and beyond_cpu.min() > 0)
    return dict(name="fused vs cpu", ok=ok, detail=f"max rel loss diff {loss_rel:.1e}, test acc differs for "
                f"{100 * acc_diff:.1f} % of {n}, unwritten outputs {unwritten}; readings beyond a narrow table: "
                f"{100 * beyond_cpu.mean():.1f} % on the cpu, largest difference {beyond_diff:.1e}")


def tabulated_stt_compact(knots=64, span=1e-3):
    """The ``tabulated`` model of the nominal stt_compact curve at ``knots`` currents over +-``span``
    (A) with its exact dV/dI as the slopes (no SciPy on the GPU node): the pair kernel with a cheap
    junction (a cubic Hermite evaluation), for its rate with cheap junctions."""
    from spingpu.devices import get_model

    current = np.linspace(-span, span, knots)
    return get_model("tabulated", iv_table=(current, *get_model("stt_compact").iv(current)))


def pair_problem(rng, n, b, u, dtype, model=None, read_noise=1e-3):
    from spingpu import Readout, Variability
    from spingpu.devices import get_model
    from spingpu.devices.variability import sample_layer
    from spingpu.training import PairNeuron
    from spingpu.training.fused_engine import neuron_vector, readout_vector

    model = model or get_model("stt_compact")
    params = sample_layer(model, Variability(sigma_d2d=0.1, sigma_pair=0.02), int(rng.integers(1 << 30)),
                          np.arange(n), 0, u)
    model, (junc,) = model.bind([params])  # the kernels' rows, as the engines give them
    z = rng.normal(0, 1, (n, b, u)).astype(dtype)
    readout = readout_vector(Readout(read_noise=read_noise))
    return model, np.ascontiguousarray(junc), z, neuron_vector(PairNeuron()), readout


def pair_launch(rng, n, b, u, model=None, mode="fd_forward", read_noise=1e-3, derivatives=True):
    """The pair kernel of ``model`` (default stt_compact) and its 19 launch arguments on the GPU
    (CuPy arrays; float32 z of shape (n, b, u), ``mode`` (default fd_forward), ``read_noise``,
    purpose 5, layer 0, slot 0, row 0, ``derivatives``; outputs h, used, exact and the uint8
    readings beyond the table)."""
    import cupy

    from spingpu.kernels.pair_neuron import MODE_CODES
    from spingpu.kernels.philox import split_seed
    from spingpu.training.batched_cuda_engine import pair_layer_cuda_kernel

    model, junc, z, neuron, readout = pair_problem(rng, n, b, u, np.float32, model, read_noise)
    dz = cupy.asarray(z)
    args = (dz, cupy.asarray(junc.reshape(-1, junc.shape[-1])), cupy.asarray(model.nominal),
            cupy.asarray(np.ascontiguousarray(model.aux_table)), MODE_CODES[mode], cupy.asarray(neuron),
            cupy.asarray(readout), *split_seed(np.uint64(7)), cupy.arange(n), 5, 0, 0, 0, derivatives,
            *(cupy.empty_like(dz) for _ in range(3)), cupy.empty(dz.shape, dtype=np.uint8))
    return pair_layer_cuda_kernel(model), args


def check_pair(rng, device, sim):
    from spingpu.devices import get_model
    from spingpu.kernels import batched_cuda
    from spingpu.kernels.pair_neuron import FD_FORWARD
    from spingpu.kernels.philox import split_seed
    from spingpu.training.batched_cuda_engine import pair_layer_cuda_kernel
    from spingpu.training.batched_engine import pair_layer_kernel

    n, b, u = (2, 3, 5) if sim else (64, 128, 256)

    def compare(model):
        """(max |diff| / max |value| over h, used, exact; elements left unwritten, counts of readings
        beyond the table that differ, readings beyond the table)."""
        model, junc, z, neuron, readout = pair_problem(rng, n, b, u, np.float64, model)
        seed, nets = np.uint64(rng.integers(1 << 62)), np.arange(n, dtype=np.int64)
        ref = [np.empty_like(z) for _ in range(3)] + [np.empty(z.shape, dtype=np.uint8)]
        junc = junc.reshape(-1, junc.shape[-1])  # (N U 2, P) rows
        pair_layer_kernel(model)(z, junc, model.nominal, model.aux_table, FD_FORWARD, neuron,
                                 readout, seed, nets, 5, 0, 0, 17, True, *ref)
        outs = [device.put(np.full_like(z, SENTINEL)) for _ in range(3)] + [device.put(np.full(z.shape, 255, np.uint8))]
        k0, k1 = split_seed(seed)
        device.launch(pair_layer_cuda_kernel(model), batched_cuda.blocks(n * b * ((u + 1) // 2)), batched_cuda.THREADS,
            device.put(z), device.put(junc), device.put(model.nominal),
            device.put(np.ascontiguousarray(model.aux_table)), FD_FORWARD, device.put(neuron), device.put(readout),
            k0, k1, device.put(nets), 5, 0, 0, 17, True, *outs)
        got = [device.get(o) for o in outs]
        beyond, ref_beyond = got.pop(), ref.pop()
        unwritten_beyond = int((beyond == 255).sum())
        # normwise: used = gain (r_b - r_a) / dI is a difference of two readings of ~0.2 V, and the
        # GPU's FMA contraction and libdevice's tanh/cos/sin/log differ from the CPU's by an ulp or
        # two, which makes small elements of used differ by ~1e-9 relatively (the CPU kernel with its
        # inputs moved by 1 ulp: 4e-9 elementwise, 9e-15 normwise); a wrong row, stream or element
        # differs by O(1)
        rel = max(float(np.max(np.abs(g - r)) / np.max(np.abs(r))) for g, r in zip(got, ref))
        return (rel, sum(int((g == SENTINEL).sum()) for g in got) + unwritten_beyond,
                int((beyond != ref_beyond).sum()), int(ref_beyond.sum()))

    (rel, unwritten, _, _), (rel_tab, unwritten_tab, differ, beyond) = compare(None), \
        compare(tabulated_stt_compact(span=2e-4))  # some readings beyond the table
    # float32 junctions: CUDA's tanhf, cosf and sinf and the CPU's differ by an ulp or two of float32,
    # which moves used = gain (r_b - r_a) / dI by ~2 ulp(V) / dI = 6e-8 V / 20 uA = 3e-3 ohm against
    # |used| up to ~2 kohm x gain: ~1.5e-6 normwise (a wrong row or stream: O(1))
    rel_f32, unwritten_f32, _, _ = compare(get_model("stt_compact_f32"))
    unwritten += unwritten_tab + unwritten_f32
    ok = bool(unwritten == differ == 0 and beyond > 0 and rel < 1e-12 and rel_tab < 1e-12 and rel_f32 < 1e-5)
    return dict(name="pair kernel vs cpu", ok=ok, detail=f"{3 * n * b * u:,d} values per model (no ADC): max |diff| "
                f"/ max |value| {rel:.1e} stt_compact, {rel_tab:.1e} tabulated, {rel_f32:.1e} stt_compact_f32 "
                f"(< 1e-5); unwritten {unwritten}; readings beyond the table {beyond:,d}, counted differently {differ}")


def split_primitives(rng, device, sim):
    """Which of the batched engine's per-network operations give network k other bits alone than
    among 130 (k = 1 and 129; float32), with the engine's GEMM slots (``gemm_blocks`` of the
    networks' global indices): each of grouped_matmul's five operand layouts (forward with
    the shared input or a 3-D one, a^T delta shared or 3-D, delta W^T), the bias gradients' kernel
    (``sample_sum``), CuPy's ``sum(axis=1)`` (the reduction it replaced), the engine's
    ``grad_cosine`` kernels and CuPy's row sums and norms (what it replaced); networks n - 2 and
    n - 1 as a pair too; and a product whose networks all sit one GEMM slot further (does cuBLAS
    give a slot other bits?). A list of the names that differ (empty: none)."""
    from types import SimpleNamespace

    from spingpu.kernels import batched_cuda as kern
    from spingpu.training.batched_cuda_engine import BatchedCudaEngine, gemm_blocks, grouped_matmul
    from spingpu.training.numpy_engine import NumpyEngine

    xp, n = device.xp, 2 if sim else 130
    differ = []
    engine = SimpleNamespace(xp=xp, device=device)  # what BatchedCudaEngine.grad_cosine uses
    # the output layer (10 < 32 units: CuPy's reductions chose another tree alone than among 130)
    for b, f, u in ((5, 4, 3),) if sim else ((21, 7, 66), (128, 784, 64), (128, 64, 10)):
        def put(*shape):
            return xp.asarray(rng.normal(0, 1, shape).astype(np.float32))

        x, a, w, delta = put(b, f), put(n, b, f), put(n, f, u), put(n, b, u)

        def bias_sum(d):
            out = xp.empty((d.shape[0], d.shape[2]), dtype=d.dtype)
            device.launch(kern.sample_sum, kern.blocks(out.size), kern.THREADS, xp.ascontiguousarray(d), out)
            return out

        def slots(k):  # the engine's calls for networks k (global indices 0 .. n - 1)
            return gemm_blocks(np.arange(n)[k])

        ops = {"forward shared input": lambda k: grouped_matmul(device, x, w[k], slots(k)),
               "forward": lambda k: grouped_matmul(device, a[k], w[k], slots(k)),
               "a^T delta shared input": lambda k: grouped_matmul(device, x.T, delta[k], slots(k)),
               "a^T delta": lambda k: grouped_matmul(device, a[k].swapaxes(1, 2), delta[k], slots(k)),
               "delta W^T": lambda k: grouped_matmul(device, delta[k], w[k].swapaxes(1, 2), slots(k)),
               "bias kernel": lambda k: bias_sum(delta[k]),
               "cupy sum(axis=1)": lambda k: delta[k].sum(axis=1),
               "grad_cosine": lambda k: BatchedCudaEngine.grad_cosine(engine, [w[k], delta[k]],
                                                                      [w[k] * 1.5 + 0.25, delta[k] - 0.5]),
               "cupy grad_cosine": lambda k: NumpyEngine.grad_cosine(None, [w[k], delta[k]],
                                                                     [w[k] * 1.5 + 0.25, delta[k] - 0.5])}
        for name, op in ops.items():
            among = device.get(op(slice(None)))
            alone = all(np.array_equal(device.get(op(slice(k, k + 1)))[0], among[k]) for k in (1, n - 1))
            if not (alone and np.array_equal(device.get(op(slice(n - 2, n))), among[n - 2:])):
                differ.append(f"{name} ({b}x{f}x{u})")
        unshifted = device.get(grouped_matmul(device, a, w, gemm_blocks(np.arange(n))))
        if not np.array_equal(device.get(grouped_matmul(device, a, w, gemm_blocks(np.arange(n) + 1))), unshifted):
            differ.append(f"GEMM slot shift ({b}x{f}x{u})")
    return differ


def gemm_error(rng, device):
    """Normwise relative error of the engine's float32 product (``grouped_matmul``, 128 networks of
    128 x 784 @ 784 x 64) against float64 on the same inputs: ~1e-6 for FP32 arithmetic, ~1e-3
    if cuBLAS used TF32 tensor cores (which would explain a loss that strays from NumPy's by 1e-3)."""
    from spingpu.training.batched_cuda_engine import grouped_matmul

    a = rng.normal(0, 1, (128, 128, 784)).astype(np.float32)
    b = rng.normal(0, 1, (128, 784, 64)).astype(np.float32)
    got = device.get(grouped_matmul(device, device.put(a), device.put(b)))
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    return float(np.abs(got - exact).max() / np.abs(exact).max())


def check_batched(rng, device, sim):
    from spingpu import Readout, Variability
    from spingpu.backends import Backend
    from spingpu.training import TrainConfig, train

    n, rows, hidden = (2, 24, (6, 5, 4)) if sim else (130, 600, (64, 64))  # GEMM groups 0-127, 2-129
    features = 5 if sim else 784
    ds = blobs(rng, rows, features, 10 if not sim else 3, "mnist-shaped")
    cfg = TrainConfig(hidden=hidden, epochs=2, lr=0.01, batch_size=128 if not sim else 8, seed=3,
                      variability=Variability(sigma_d2d=0.1, sigma_pair=0.02), readout=Readout(read_noise=1e-3))
    backend = Backend("cuda", simulator=sim, cuda_engine="batched")
    ref = train(ds, cfg, n_networks=n, backend="numpy")
    gpu = train(ds, cfg, n_networks=n, backend=backend)
    rel = float(np.nanmax(np.abs(gpu.train_loss.values - ref.train_loss.values) / np.abs(ref.train_loss.values)))

    def differing(a, b, k):
        """The metrics of network 0 of ``a`` that are not the bits of network k of ``b``, with the
        largest difference."""
        out = []
        for v in ("train_loss", "val_acc", "grad_cosine", "test_acc"):
            x, y = a[v].values[0], b[v].values[k]
            if not np.array_equal(x, y, equal_nan=True):
                out.append(f"{v} {np.nanmax(np.abs(x - y)):.1e}")
        return out

    # the last network trained alone: the same bits (every GEMM call holds the same number of networks)
    alone = differing(train(ds, cfg, networks=[n - 1], backend=backend), gpu, -1)
    # odd sizes, so that group and weight-block offsets are not multiples of 256 bytes (aligned copies)
    odd_ds = blobs(rng, rows, 7, 3, "odd-sized")
    odd_cfg = TrainConfig(hidden=(9,) if sim else (66,), epochs=1, lr=0.01, batch_size=21, seed=3,
                          readout=Readout(read_noise=1e-3))
    among = train(odd_ds, odd_cfg, n_networks=n, backend=backend)
    odd = [f"network {k}: {', '.join(d)}" for k in (1, n - 1)
           if (d := differing(train(odd_ds, odd_cfg, networks=[k], backend=backend), among, k))]
    repeat = train(odd_ds, odd_cfg, n_networks=n, backend=backend)  # run to run: no race, no atomics
    again = [v for v in ("train_loss", "val_acc", "grad_cosine", "test_acc")
             if not np.array_equal(repeat[v].values, among[v].values, equal_nan=True)]
    primitives = split_primitives(rng, device, sim)
    error = gemm_error(rng, device)
    ok = rel < 1e-3 and not alone and not odd and not again and not primitives
    return dict(name="batched vs numpy", ok=bool(ok),
                detail=f"float32, max rel loss diff {rel:.1e}; network {n - 1} alone "
                       f"{'bit-identical' if not alone else 'DIFFERS: ' + ', '.join(alone)}; odd sizes "
                       f"(7-{odd_cfg.hidden[0]}-3) networks 1, {n - 1} alone "
                       f"{'bit-identical' if not odd else 'DIFFER: ' + '; '.join(odd)}; a second run "
                       f"{'bit-identical' if not again else 'DIFFERS: ' + ', '.join(again)}; per-network "
                       f"operations that depend on the networks beside: {', '.join(primitives) or 'none'}; "
                       f"float32 GEMM vs float64: {error:.1e} (FP32 ~1e-6, TF32 ~1e-3)")


# --- timings -------------------------------------------------------------------------------------


def kernel_registers(kernel):
    """Registers per thread of a compiled Numba CUDA kernel on this GPU (None in the simulator)."""
    try:
        regs = kernel.get_regs_per_thread()
    except AttributeError:
        return None
    return max(regs.values(), default=None) if isinstance(regs, dict) else regs


def predicted_seconds(runs, n, epochs, variant):
    """Seconds a fused Iris run of ``n`` networks of kernel ``variant`` (its launch bound and block
    size) should take, from the earlier ``runs`` (dicts of networks, variant, fixed_s = the run's
    compile_seconds, rate);
    None before the first. Its network-epochs at that variant's rate (else the latest), plus set-up
    per network times n, plus a compilation if the variant is new: a variant's first run pays its
    kernel's compilation (constant), later runs only the set-up (sampling and packing, ~ n). Until a
    variant has run twice the set-up is taken as 0 and the first run's fixed time as compilation:
    scaling a compilation by n would skip the 1e6 row the target is about.
    """
    if not runs:
        return None
    variant_rates = [r["rate"] for r in runs if r["variant"] == variant]
    rate = (variant_rates or [runs[-1]["rate"]])[-1]
    seen, firsts, later = set(), [], []
    for r in runs:
        (later if r["variant"] in seen else firsts).append(r)
        seen.add(r["variant"])
    setup_per_network = max((r["fixed_s"] / r["networks"] for r in later), default=0.0)
    compile_s = max(max(r["fixed_s"] - setup_per_network * r["networks"], 0.0) for r in firsts)
    return n * epochs / rate + setup_per_network * n + (0.0 if variant in seen else compile_s)


def unpaired(model):
    """``model`` whose pair neurons evaluate their two junction readings one after the other (its
    kernel form without ``scalar_pair``), as the kernels did before 2026-12-02: the same numbers,
    to time the paired form (two independent chains of arithmetic per thread, and more registers)
    against."""
    kernel_form = dataclasses.replace(model.kernel_form, scalar_pair=None, _compiled={})
    return dataclasses.replace(model, kernel_form=kernel_form, _compiled={})


def time_iris(rng, device, sim, budget, remaining, on_row=lambda rows: None):
    """Network-epochs/s of the fused kernel: 1e4, 1e5 and 1e6 networks with the default block (the
    batch in whole warps: 96 threads) and the compiler's register choice (the target's row first),
    then 1e5 with blocks of 128 threads (the default before the batch set it), and with each launch
    bound of FUSED_MIN_BLOCKS (same numbers expected: only the block size or the register allocation
    differs; an informational comparison, since ptxas may contract multiplies and adds
    differently), and 1e6 again with the fastest of them if that is not the default; 1e5 with the
    pair neurons' readings one after the other (:func:`unpaired`). A run predicted (:func:`predicted_seconds`) to exceed
    ``budget`` seconds or the ``remaining()`` time is skipped, and a run that raises is recorded as
    an error row. ``on_row(rows)`` is called after every run (the script saves there)."""
    from spingpu import Readout, Variability
    from spingpu.cuda_kernels import FUSED_MIN_BLOCKS
    from spingpu.devices import get_model
    from spingpu.kernels.fused_cuda import fused_cuda_layout
    from spingpu.training import TrainConfig, train
    from spingpu.training.cuda_engine import fused_cuda_kernel

    ds = blobs(rng, SIM_IRIS_ROWS if sim else 150, 4, 3, "iris-shaped")
    epochs = 1 if sim else 200
    cfg = TrainConfig(hidden=(8,), epochs=epochs, lr=0.05, seed=1, grad_mode="fd_forward",
                      variability=Variability(sigma_d2d=0.1, sigma_pair=0.02), readout=Readout(read_noise=1e-3))
    rows, state = [], dict(reference=None, runs=[])

    def run(n, min_blocks=None, threads=None, config=None, model_name="stt_compact", paired=True):
        row = dict(networks=n, epochs=epochs, min_blocks_per_sm=min_blocks, block_threads=threads)
        if config is not None:  # an attribution row: the default kernel on a cheaper configuration
            row["config"] = config
        if model_name != "stt_compact":  # the same junctions evaluated in float32: a kernel of its own
            row["model"] = model_name
        model = get_model(model_name)
        if not paired:  # the same numbers from a kernel of its own
            row["model"], model = f"{model_name}, readings one after the other", unpaired(model)
        left = remaining()
        predicted = predicted_seconds(state["runs"], n, epochs, (min_blocks, threads, row.get("model")))
        if left <= 0 or (predicted is not None and predicted > min(budget, left)):
            row["skipped"] = ("past the deadline" if left <= 0 else f"predicted {predicted:.0f} s > "
                              f"{'budget' if budget <= left else 'time left'} {min(budget, left):.0f} s")
            rows.append(row)
            on_row(rows)
            return row
        backend = fused_backend(sim, min_blocks, threads)
        r, error = attempt(train, ds, ATTRIBUTION[config](cfg) if config else cfg, n_networks=n, backend=backend,
                           model=model)
        if error is not None:  # one variant failing must not lose the other rows
            row["error"] = error
            rows.append(row)
            on_row(rows)
            return row
        layout = fused_cuda_layout(IRIS_SIZES, model.kernel_width, ds.y_train.size, backend.block_threads,
                                   min_blocks)
        state["runs"].append(dict(networks=n, variant=(min_blocks, threads, row.get("model")), fixed_s=r.attrs["compile_seconds"],
                                  rate=r.attrs["network_epochs_per_second"]))
        row["block_threads"] = layout.threads
        row.update(seconds=r.attrs["train_seconds"], network_epochs_per_s=r.attrs["network_epochs_per_second"],
                   compile_s=r.attrs["compile_seconds"], registers=kernel_registers(fused_cuda_kernel(model, layout)),
                   median_test_acc=float(r.test_acc.median()))
        numbers = (r.train_loss.values, r.test_acc.values)
        if model_name != "stt_compact" and n == large and state["reference"] is not None:
            # the same networks with float32 junctions: how far apart (shown, not required; on the
            # CPU, 500 Iris networks x 200 epochs: every test accuracy equal, losses within 1e-5)
            loss, acc = (np.asarray(a) for a in state["reference"])
            row["test_acc_equal_to_stt_compact"] = float(np.mean(numbers[1] == acc))
            with np.errstate(all="ignore"):
                ratio = np.ravel(numbers[0][..., -1] / loss[..., -1])
            finite = ratio[np.isfinite(ratio)]  # diverged networks have no final loss
            row["max_rel_final_loss_diff"] = float(np.max(np.abs(finite - 1))) if finite.size else float("nan")
        elif not paired and n == large and state["reference"] is not None:
            row["same_as_paired"] = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(numbers, state["reference"]))
        elif config is not None or model_name != "stt_compact" or not paired:
            pass
        elif n == large and min_blocks is None and threads is None:
            state["reference"] = numbers
        elif n == large and state["reference"] is not None:
            row["same_as_compiler_choice"] = all(np.array_equal(a, b, equal_nan=True)
                                                 for a, b in zip(numbers, state["reference"]))
        rows.append(row)
        on_row(rows)
        print(f"  iris {iris_variant(row)}: "
              f"{row['network_epochs_per_s']:.3g} network-epochs/s, {row['registers']} registers", flush=True)
        return row

    small, large, full = (1, 2, 3) if sim else (10**4, 10**5, 10**6)
    run(small)
    default = run(large)
    timed = [(default, None)]
    run(full)
    timed += [(run(large, threads=128), 128)] + [(run(large, k), None) for k in FUSED_MIN_BLOCKS]
    timed = [(row, threads) for row, threads in timed if "network_epochs_per_s" in row]
    if timed:
        best, threads = max(timed, key=lambda pair: pair[0]["network_epochs_per_s"])
        if best["min_blocks_per_sm"] is not None or threads is not None:
            run(full, best["min_blocks_per_sm"], threads)
    for config in ATTRIBUTION:  # where an epoch's time goes: what each part of the physics costs
        run(small if sim else large, config=config)
    run(large, paired=False)  # the kernel before the paired readings: which is faster decides the default
    # last (a kernel of its own to compile): stt_compact_f32's float32 junctions, and if they were
    # faster at 1e5, the target's 1e6 with them
    single = run(large, model_name="stt_compact_f32")
    if single.get("network_epochs_per_s", 0.0) > default.get("network_epochs_per_s", np.inf):
        run(full, model_name="stt_compact_f32")
    return rows


# Cheaper configurations of the Iris run, each timed with the default kernel (its mode and read
# noise are arguments, not compiled in): the differences between rows attribute the time. Without
# read noise: the Philox normals and the noisy readings' arithmetic; "oracle": one junction reading
# per neuron (the exact derivative) instead of two; "tanh": no junctions at all, so what is left is
# the network's arithmetic, the block's barriers and the once-per-epoch median sort.
ATTRIBUTION = {
    "no read noise": lambda cfg: dataclasses.replace(cfg, readout=dataclasses.replace(cfg.readout, read_noise=0.0)),
    "oracle, no read noise": lambda cfg: dataclasses.replace(cfg, grad_mode="oracle",
                                                             readout=dataclasses.replace(cfg.readout, read_noise=0.0)),
    "tanh": lambda cfg: dataclasses.replace(cfg, grad_mode="tanh", variability=type(cfg.variability)(),
                                            readout=type(cfg.readout)()),
}


def iris_variant(row):
    """An Iris row's networks and kernel variant (and configuration, if not the default), in words."""
    text = (f"{row['networks']:.0e} networks, {row.get('block_threads') or 'default'} threads, "
            f"min blocks/SM {row['min_blocks_per_sm']}")
    return text + "".join(f", {row[key]}" for key in ("model", "config") if row.get(key))


def time_bandwidth(rng, device, sim):
    """Copy bandwidth, the pair kernel's achieved bandwidth (stt_compact; a tabulated junction for
    the kernel's rate with cheap junctions; stt_compact_f32, float32 junctions) and SGEMM; None in
    the simulator."""
    if sim:
        return dict(copy_GBps=None, pair_GBps=None, pair_over_copy=None, sgemm_TFLOPs=None)
    import cupy

    from spingpu.devices import get_model
    from spingpu.kernels import batched_cuda

    timer = EventTimer()
    best_of = timer.best_of

    a = cupy.empty(1 << 28, dtype=cupy.float32)
    b = cupy.empty_like(a)
    copy_s = best_of(lambda: b.__setitem__(Ellipsis, a))
    copy_bw = 2 * a.nbytes / copy_s
    a = b = None  # 2 GiB back to CuPy's pool

    n, bs, u = 512, 128, 256
    grid = batched_cuda.blocks(n * bs * ((u + 1) // 2))

    def pair_rate(model=None, **problem):
        """(bytes/s, elements/s): z read, h / used / exact written (float32), readings beyond the
        table written (uint8), the junction rows read once."""
        kernel, args = pair_launch(rng, n, bs, u, model, **problem)
        dz, dj = args[:2]
        seconds = best_of(lambda: [device.launch(kernel, grid, batched_cuda.THREADS, *args) for _ in range(10)]) / 10
        return (dz.size * (4 * 4 + 1) + dj.nbytes) / seconds, dz.size / seconds

    pair_bw, pair_elements = pair_rate()
    tabulated_bw, _ = pair_rate(tabulated_stt_compact())
    f32_bw, _ = pair_rate(get_model("stt_compact_f32"))
    unpaired_bw, _ = pair_rate(unpaired(get_model("stt_compact")))
    # the same stt_compact kernel with less to do, to attribute its time (same bytes counted):
    # without read noise (no Philox normals), one reading per neuron (no finite difference), and
    # the tanh branch (no junction: the kernel's memory traffic and index arithmetic alone)
    attribution = {what: pair_rate(**problem)[0] / copy_bw for what, problem in PAIR_ATTRIBUTION.items()}

    m = 8192
    x = cupy.asarray(rng.standard_normal((m, m), dtype=np.float32))
    y = cupy.empty_like(x)
    sgemm_s = best_of(lambda: cupy.matmul(x, x, out=y))
    return dict(copy_GBps=copy_bw / 1e9, pair_GBps=pair_bw / 1e9, pair_over_copy=pair_bw / copy_bw,
                pair_elements_per_s=pair_elements, tabulated_pair_GBps=tabulated_bw / 1e9,
                tabulated_pair_over_copy=tabulated_bw / copy_bw, f32_pair_GBps=f32_bw / 1e9,
                f32_pair_over_copy=f32_bw / copy_bw, unpaired_pair_GBps=unpaired_bw / 1e9,
                unpaired_pair_over_copy=unpaired_bw / copy_bw, sgemm_TFLOPs=2 * m**3 / sgemm_s / 1e12,
                timings_queued_late=timer.queued_late, pair_over_copy_attribution=attribution)


class EventTimer:
    """Best GPU time of a function's work, between two CUDA events (``best_of``). A kernel that
    spins for ~50 ms runs first, so the host queues all of the function's launches while it spins
    and the time is the GPU's alone, not the host's time to launch them (Device.launch wraps and
    types its arguments on every call). A timing whose spin had ended when the host finished
    queuing may include host time: ``queued_late`` counts them."""

    def __init__(self):
        import cupy

        self.cupy, self.hold, self.queued_late = cupy, cupy.RawKernel(HOLD_KERNEL, "hold"), 0

    def best_of(self, fn, repeats=5):
        cupy = self.cupy
        fn()
        times = []
        for _ in range(repeats):
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            self.hold((1,), (1,), (np.int64(HOLD_CYCLES),))
            start.record()
            fn()
            self.queued_late += start.done  # the spin had ended before the last launch was queued
            stop.record()
            stop.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        return min(times)


PAIR_ATTRIBUTION = {"no read noise": dict(read_noise=0.0),
                    "no read noise, one reading": dict(read_noise=0.0, derivatives=False),
                    "tanh": dict(mode="tanh", read_noise=0.0)}


HOLD_KERNEL = r"""
extern "C" __global__ void hold(long long cycles) {
    long long t0 = clock64();
    while (clock64() - t0 < cycles) { }
}
"""
HOLD_CYCLES = 100_000_000  # ~50 ms at the ~2 GHz of an H100/H200's SMs


LAUNCH_PEER = r"""
extern "C" __global__ void pair_arguments(const float* z, const double* junc, const double* nominal,
        const double* table, long long mode, const double* neuron, const double* readout, unsigned long long k0,
        unsigned long long k1, const long long* networks, long long purpose, long long layer, long long slot0,
        long long row0, bool derivatives, float* h, float* used, float* exact, unsigned char* beyond) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        h[0] = z[0];
        used[0] = (float)junc[0];
        exact[0] = (float)(nominal[0] + table[0] + neuron[0] + readout[0] + networks[0] + mode + purpose + layer
                           + slot0 + row0 + k0 + k1 + derivatives);
    }
}
"""


def time_precision(rng, device, sim):
    """What float32 physics would buy: junction readings per second of the engines' float64
    reading (stt_compact_prepared and a Box-Muller normal per reading) against its float32
    transcription, with 1 mV of read noise, and the largest |V_f32 - V_f64| without noise over
    +-600 uA and 10 % spreads (in the simulator: the float64 kernel checked against the CPU's
    device functions, nothing timed)."""
    from spingpu.devices import get_model
    from spingpu.kernels import batched_cuda
    from spingpu.kernels.philox import normal_pair
    from spingpu.kernels.stt_compact import stt_compact_prepared

    n = 256 if sim else 1 << 24
    model = get_model("stt_compact")
    params = model.nominal * np.exp(rng.normal(0.0, 0.1, (n, len(model.nominal))))
    params[:, 3] = model.nominal[3] + 0.1 * rng.normal(size=n)  # theta0 is a normal parameter
    rows64 = np.ascontiguousarray(model.prepared(params))
    current64 = rng.uniform(-600e-6, 600e-6, n)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from float32_reading import reading_kernels

    read64, read32 = reading_kernels()
    grid = batched_cuda.blocks(n // 2)
    k0, k1 = np.uint64(rng.integers(1 << 32)), np.uint64(rng.integers(1 << 32))
    put = device.put
    inputs = dict.fromkeys((np.float64, np.float32), (put(current64), put(rows64)))  # the engines' rows
    out = {dtype: device.xp.full(n, SENTINEL, dtype=dtype) for dtype in inputs}

    def run(dtype, noise):
        kernel = read64 if dtype is np.float64 else read32
        device.launch(kernel, grid, batched_cuda.THREADS, *inputs[dtype], dtype(noise), k0, k1, out[dtype])

    for dtype in inputs:
        run(dtype, 0.0)
    v64, v32 = (device.get(out[dtype]).astype(np.float64) for dtype in (np.float64, np.float32))
    if (v64 == SENTINEL).any() or (v32 == SENTINEL).any():
        raise ArithmeticError("a reading kernel left outputs unwritten")
    run(np.float64, 1e-3)
    noisy = device.get(out[np.float64])
    m = min(n, 4096)  # the float64 kernel against the CPU's device functions, with and without noise
    reference = np.array([stt_compact_prepared(c, *row)[0] for c, row in zip(current64[:m], rows64[:m])])
    xi = np.array([normal_pair(t, 9, 0, 0, k0, k1) for t in range(m // 2)]).ravel()
    scale = np.max(np.abs(reference))
    diff = max(np.max(np.abs(v64[:m] - reference)), np.max(np.abs(noisy[:m] - (reference + 1e-3 * xi)))) / scale
    if not diff < 1e-12:
        raise ArithmeticError(f"the float64 reading kernel differs from the CPU's by {diff:.1e} relative")
    result = dict(readings=n, f64_max_rel_diff_from_cpu=float(diff), f32_max_abs_dv=float(np.max(np.abs(v32 - v64))),
                  f64_readings_per_s=None, f32_readings_per_s=None, f32_speedup=None)
    if sim:
        return result
    timer = EventTimer()
    for dtype, key in ((np.float64, "f64_readings_per_s"), (np.float32, "f32_readings_per_s")):
        result[key] = n / timer.best_of(lambda: run(dtype, 1e-3))
    result["f32_speedup"] = result["f32_readings_per_s"] / result["f64_readings_per_s"]
    result["timings_queued_late"] = timer.queued_late
    return result


def time_launch(rng, device, sim, launches=200, rounds=5):
    """Host time to queue one launch of the pair kernel through Device.launch (19 arguments, 11 of
    them arrays, which numba-cuda passes as several words each) against a CuPy RawKernel taking the
    same arguments as plain pointers and scalars (CUDA C: the path the issue names for where Numba is
    weak). Both launch one block on a one-element problem; ``rounds`` of ``launches`` launches, the
    GPU drained between rounds (so the driver's launch queue never fills and the host's cost per
    launch is what is timed), best round. The peer writes the sum of its scalar arguments, read back
    to show they arrived. None in the simulator."""
    if sim:
        return None
    import cupy

    from spingpu.kernels import batched_cuda
    from spingpu.training.cuda_engine import PASS_ARRAYS, WRAP_ARRAYS

    kernel, numba_args = pair_launch(rng, 1, 1, 2)
    dz, dj, nominal, table, mode, dneuron, dreadout, k0, k1, nets, purpose, layer, slot0, row0, derivatives = \
        numba_args[:15]
    outs = numba_args[15:]
    # the same arguments with the C types of LAUNCH_PEER's parameters
    raw_args = (dz, dj, nominal, table, np.int64(mode), dneuron, dreadout, np.uint64(k0), np.uint64(k1), nets,
                *map(np.int64, (purpose, layer, slot0, row0)), np.bool_(derivatives), *outs)
    raw = cupy.RawKernel(LAUNCH_PEER, "pair_arguments")

    def per_launch(launch):
        launch()  # compiles
        device.synchronize()
        best = np.inf
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(launches):
                launch()
            best = min(best, (time.perf_counter() - t0) / launches)
            device.synchronize()
        return best

    checked = device.array_passing  # as they are (numba-cuda >= 0.30), unless that failed its check
    numba_s = per_launch(lambda: device.launch(kernel, 1, batched_cuda.THREADS, *numba_args))
    wrapped_s = None
    if checked == PASS_ARRAYS:  # the other way, as its peer
        device.array_passing = WRAP_ARRAYS
        try:
            wrapped_s = per_launch(lambda: device.launch(kernel, 1, batched_cuda.THREADS, *numba_args))
        finally:
            device.array_passing = checked
    raw_s = per_launch(lambda: raw((1,), (batched_cuda.THREADS,), raw_args))
    scalars = (float(nominal[0] + table.ravel()[0] + dneuron[0] + dreadout[0]) + int(nets[0]) + mode + purpose
               + layer + slot0 + row0 + k0 + k1 + derivatives)
    arrived = bool(np.isclose(float(outs[2][0, 0, 0]), scalars, rtol=1e-6))
    return dict(arguments=len(numba_args), array_passing=checked, numba_us=1e6 * numba_s,
                wrapped_us=None if wrapped_s is None else 1e6 * wrapped_s, cupy_raw_us=1e6 * raw_s,
                ratio=numba_s / raw_s, peer_arguments_arrived=arrived)


def time_mnist(rng, device, sim, sgemm_tflops):
    """Batched training steps at MNIST size, as the training loop runs them (data on the device);
    for each network count, the wall time per step and the host's time to queue one step: a step
    whose queueing takes as long as its GPU work is launch-bound (where CUDA graphs would pay)."""
    from spingpu import Readout, Variability
    from spingpu.kernels import streams
    from spingpu.training import TrainConfig
    from spingpu.training.batched_cuda_engine import BatchedCudaEngine
    from spingpu.training.cuda_engine import CUPY_MATMUL, DIRECT_GEMM
    from spingpu.training.numpy_engine import NoiseSource
    from spingpu.devices import get_model

    sizes = (5, 6, 3) if sim else MNIST_SIZES
    batch, steps = (4, 2) if sim else (128, 20)
    cfg = TrainConfig(hidden=sizes[1:-1], epochs=1, lr=0.001, batch_size=batch, grad_mode="fd_forward",
                      variability=Variability(sigma_d2d=0.1, sigma_pair=0.02), readout=Readout(read_noise=1e-3))
    x = rng.normal(0, 1, (batch * (steps + 1), sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch * (steps + 1))
    # forward and weight-gradient products of every layer, delta products of all but the first
    flops = 2 * batch * (3 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) - sizes[0] * sizes[1])
    rows = []
    checked = device.gemm_path  # the direct cuBLAS call, unless it failed its check; cupy.matmul is its peer
    paths = (checked,) + ((CUPY_MATMUL,) if checked == DIRECT_GEMM else ())
    try:
        for n in ((2,) if sim else (128, 1024)):
            engine = BatchedCudaEngine(get_model("stt_compact"), cfg, np.arange(n), sizes[0], sizes[-1], device=device)
            xd, yd = engine.put(x), engine.put(y)

            def step(s):
                idx = slice(s * batch, (s + 1) * batch)
                noise = NoiseSource(cfg.seed, engine.networks, streams.PURPOSE_NOISE, 0, s * batch)
                logits, cache = engine.forward(xd[idx], noise)
                loss, dl = engine.loss_and_dlogits(logits, yd[idx])
                engine.apply(engine.backward(dl, cache), cfg.lr)

            for path in paths:  # one engine, timed with each path (its weights train on: same work per step)
                device.gemm_path = path
                with Timer(device) as t_first:
                    step(steps)  # compiles the kernels (the first path), warms the other
                with Timer(device) as t:
                    for s in range(steps):
                        step(s)
                    queued = time.perf_counter() - t.t0
                rate = n * steps / t.seconds
                tflops = rate * flops / 1e12
                rows.append(dict(sizes="-".join(map(str, sizes)), networks=n, batch=batch, gemm=path,
                                 network_steps_per_s=rate, seconds_per_step=t.seconds / steps,
                                 host_queue_seconds_per_step=queued / steps, matmul_TFLOPs=tflops,
                                 over_sgemm=None if not sgemm_tflops else tflops / sgemm_tflops,
                                 first_step_s=t_first.seconds))
            engine = xd = yd = None  # its arrays back to CuPy's pool before the next size
    finally:  # the checked path again, whatever happened
        device.gemm_path = checked
    return rows


def time_macrospin(device, sim):
    """The macrospin LLGS kernel (benchmarks/macrospin_vs_cmtj.py): 2^20 junctions x 2000 steps;
    and the junction tables of training as the CUDA engines compute them (MacrospinModel.simulate
    on the device, in launches of GPU_RUNS_PER_LAUNCH runs) against the CPU's, at 300 K (thermal
    field, Heun): ``tables_max_rel_diff`` (max |R - R_cpu| / max |R_cpu|), ``tables_ok`` below 1e-9."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from macrospin_vs_cmtj import time_macrospin_gpu

    from spingpu.devices import get_model
    from spingpu.devices.macrospin import coefficients, simulate_on_gpu

    timing = time_macrospin_gpu(junctions=4, steps=3, repeats=1, threads_per_block=4) if sim else time_macrospin_gpu()
    model = get_model("macrospin", temperature=300.0, table_points=3 if sim else 9,
                      settle_time=10e-12 if sim else 0.2e-9, average_time=6e-12 if sim else 0.1e-9)
    n = 2 if sim else 256
    rng = np.random.default_rng(17)
    params = model.nominal * np.exp(rng.normal(0, 0.05, (n, len(model.parameters))))
    keys = np.stack([np.arange(n), np.zeros(n, int), np.arange(n) % 8, np.arange(n) % 2], axis=1)
    currents, seed = model.settings.table_currents, 5
    cpu_r, _ = model.simulate(currents, params, keys, seed)
    if sim:  # the simulator device keeps the CPU kernel in simulate: launch the CUDA kernel directly
        gpu_r, gpu_m = np.full(cpu_r.shape, np.nan), np.full(cpu_r.shape + (3,), np.nan)
        simulate_on_gpu(device, currents, coefficients(params, model.settings), keys, seed, gpu_r, gpu_m)
    else:
        gpu_r, _ = model.simulate(currents, params, keys, seed, device=device)
    rel = float(np.max(np.abs(gpu_r - cpu_r)) / np.max(np.abs(cpu_r)))
    return dict(timing, tables_runs=int(cpu_r.size), tables_max_rel_diff=rel, tables_ok=bool(rel < 1e-9))


def main():
    args = parse()
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    # numba-cuda warns (and pays for the warning) at every launch of fewer than 128 blocks: the
    # preflight, the probes and the one-block launches timed against CuPy
    os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
    import faulthandler

    import spingpu
    from spingpu.training.cuda_engine import Device

    # a kernel that never ends: every thread's stack, and an exit well inside the device's per-command limit
    faulthandler.dump_traceback_later(args.hang_after, exit=True, file=sys.__stderr__)
    try:
        return checked_and_timed(args, spingpu, Device)
    finally:
        faulthandler.cancel_dump_traceback_later()


def checked_and_timed(args, spingpu, Device):
    """The checks and timings; the exit status."""
    seed = args.seed if args.seed is not None else int(time.time_ns() % (1 << 31))
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    results = dict(spingpu=spingpu.__version__, versions=versions(), device=None, seed=seed, checks=[], errors={},
                   skipped={})
    out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None
    print(f"spingpu {spingpu.__version__}; {results['versions']}; random inputs seed {seed}", flush=True)

    def save():
        """The JSON so far: a section that crashes or a run cut short keeps what came before."""
        results["seconds"] = time.perf_counter() - t0
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_suffix(".json.part")
            part.write_text(json.dumps(results, indent=2, default=float))
            part.replace(out)

    def remaining():
        return args.deadline - (time.perf_counter() - t0)

    device, error = attempt(Device, simulator=args.simulate)
    if error is None:
        results["device"] = device.name
        print(f"device: {device.name}", flush=True)
        _, error = attempt(preflight, device, args.simulate)
    if error is not None:  # nothing else can run: say so at once, without spending the device's time
        results["errors"]["preflight"] = error
        save()
        print(f"preflight FAILED: {error}")
        return 1
    results["gemm_path"] = device.gemm_path  # the direct cuBLAS call checked against cupy.matmul (a warning if not)
    print(f"batched GEMMs: {results['gemm_path']}", flush=True)
    state = dict(lost=None)  # the part after which the CUDA context no longer works

    def note_if_lost(key):
        """After part ``key`` raised: if the device is now unusable (an illegal address or a launch
        failure is sticky: every later CUDA call fails with it), the later parts are skipped, not
        blamed for it."""
        if state["lost"] is None:
            _, error = attempt(preflight, device, args.simulate)
            if error is not None:
                state["lost"] = key

    def section(key, fn, *fn_args, **fn_kwargs):
        if state["lost"] is not None or remaining() <= 0:
            results["skipped"][key] = (f"the CUDA context was lost in '{state['lost']}'" if state["lost"]
                                       else f"past the deadline of {args.deadline:.0f} s")
            print(f"  {key}: skipped, {results['skipped'][key]}", flush=True)
            save()
            return None
        results["running"] = key  # what a JSON left by a hang was doing
        save()
        value, error = attempt(fn, *fn_args, **fn_kwargs)
        results[key] = value  # kept even if the synchronisation below fails
        if error is None:  # an asynchronous kernel error belongs to this part, not the next
            _, error = attempt(device.synchronize)
        if error is not None:
            results["errors"][key] = error
            note_if_lost(key)
        del results["running"]
        save()
        return value

    for key in ("fused", "pair", "batched"):
        check = section(f"check_{key}", globals()[f"check_{key}"], rng, device, args.simulate)
        if check is None:
            error = results["errors"].get(f"check_{key}") or results["skipped"].get(f"check_{key}")
            check = dict(name=key, ok=False, detail=f"error: {error}")
        results.pop(f"check_{key}", None)
        results["checks"].append(check)
        save()
        print(f"  check {check['name']:<20} {'ok' if check['ok'] else 'FAILED'}: {check['detail']}", flush=True)
    checks = results["checks"]
    none = dict(copy_GBps=None, pair_GBps=None, pair_over_copy=None, sgemm_TFLOPs=None)
    bandwidth = section("bandwidth", time_bandwidth, rng, device, args.simulate) or none
    mnist = section("mnist", time_mnist, rng, device, args.simulate, bandwidth["sgemm_TFLOPs"]) or []

    def iris_rows(rows):
        results["iris"] = list(rows)
        save()

    iris = section("iris", time_iris, rng, device, args.simulate, args.budget, remaining, on_row=iris_rows) or []
    for row in iris:  # a run that raised or was skipped is said in the exit status too
        what = f"iris {iris_variant(row)}"
        if "error" in row:
            results["errors"][what] = row["error"]
        if "skipped" in row:
            results["skipped"][what] = row["skipped"]
    precision = section("precision", time_precision, rng, device, args.simulate)
    launch = section("launch", time_launch, rng, device, args.simulate)
    macrospin = section("macrospin", time_macrospin, device, args.simulate)
    if macrospin is not None and not macrospin["tables_ok"]:
        results["errors"]["macrospin tables"] = (f"junction tables on the GPU differ from the CPU's by "
                                                 f"{macrospin['tables_max_rel_diff']:.1e} relative")

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    print("\n| measurement | value | target |")
    print("| --- | --- | --- |")
    for c in checks:
        print(f"| check: {c['name']} | {'ok' if c['ok'] else 'FAILED'}: {c['detail']} | pass |")
    for row in iris:
        what = f"Iris 4-8-3, {iris_variant(row)}"
        if "skipped" in row or "error" in row:
            print(f"| {what} | {'skipped: ' + row['skipped'] if 'skipped' in row else 'ERROR: ' + row['error']} | |")
        else:
            same = row.get("same_as_compiler_choice", row.get("same_as_paired"))
            versus = ("" if "test_acc_equal_to_stt_compact" not in row else
                      f"; test accuracy equal to stt_compact's for {row['test_acc_equal_to_stt_compact']:.1%} of "
                      f"the networks, final losses within {row['max_rel_final_loss_diff']:.1e} relative")
            print(f"| {what} x {row['epochs']} epochs | {row['network_epochs_per_s']:.3g} network-epochs/s "
                  f"({row['seconds']:.1f} s; compile {row['compile_s']:.1f} s; {row['registers']} registers"
                  f"{'' if same is None else '; same numbers' if same else '; numbers DIFFER'}{versus}) | "
                  f"1e6 x 200 in < 10 s |")
    print(f"| copy bandwidth | {fmt(bandwidth['copy_GBps'], '.0f')} GB/s | |")
    print(f"| pair kernel | {fmt(bandwidth['pair_GBps'], '.0f')} GB/s = {fmt(bandwidth['pair_over_copy'], '.0%')} "
          f"of copy | >= 70 % |")
    print(f"| pair kernel, tabulated junction (cheap junctions) | {fmt(bandwidth.get('tabulated_pair_GBps'), '.0f')} "
          f"GB/s = {fmt(bandwidth.get('tabulated_pair_over_copy'), '.0%')} of copy | |")
    print(f"| pair kernel, stt_compact_f32 (float32 junctions) | {fmt(bandwidth.get('f32_pair_GBps'), '.0f')} "
          f"GB/s = {fmt(bandwidth.get('f32_pair_over_copy'), '.0%')} of copy | >= 70 % |")
    print(f"| pair kernel, stt_compact, readings one after the other (before 2026-12-02) | "
          f"{fmt(bandwidth.get('unpaired_pair_GBps'), '.0f')} GB/s = {fmt(bandwidth.get('unpaired_pair_over_copy'), '.0%')} "
          "of copy | |")
    for what, share in (bandwidth.get("pair_over_copy_attribution") or {}).items():
        print(f"| pair kernel, stt_compact, {what} | {share:.0%} of copy | |")
    print(f"| SGEMM 8192^3 | {fmt(bandwidth['sgemm_TFLOPs'], '.1f')} TFLOP/s | |")
    if bandwidth.get("timings_queued_late"):
        print(f"| (the event timings above) | {bandwidth['timings_queued_late']} of them were still being queued "
              f"when the GPU reached them: they may include host time | |")
    if precision is not None and precision["f32_speedup"] is not None:
        print(f"| junction readings (stt_compact, 1 mV Gaussian noise), float64 as the engines / float32 | "
              f"{precision['f64_readings_per_s']:.3g} / {precision['f32_readings_per_s']:.3g} readings/s "
              f"({precision['f32_speedup']:.2f}x); float32 V within {precision['f32_max_abs_dv']:.1e} V | |")
    if launch is not None:
        wrapped = launch.get("wrapped_us")
        print(f"| host time per launch, {launch['arguments']} arguments | Device.launch (numba-cuda, "
              f"{launch['array_passing']}) {launch['numba_us']:.1f} us"
              f"{'' if wrapped is None else f' (wrapping each array: {wrapped:.1f} us)'}, "
              f"CuPy RawKernel {launch['cupy_raw_us']:.1f} us ({launch['ratio']:.1f}x)"
              f"{'' if launch['peer_arguments_arrived'] else '; the RawKernel MISREAD its arguments'} | |")
    for row in mnist:
        print(f"| MLP {row['sizes']}, batch {row['batch']}, {row['networks']} networks, {row['gemm']} | "
              f"{row['network_steps_per_s']:.3g} network-steps/s, {row['matmul_TFLOPs']:.2f} TFLOP/s = "
              f"{fmt(row['over_sgemm'], '.0%')} of SGEMM; {1e3 * row['seconds_per_step']:.2f} ms per step, "
              f"{1e3 * row['host_queue_seconds_per_step']:.2f} ms to queue it | >= 50 % |")
    if macrospin is not None:
        print(f"| macrospin LLGS, {macrospin['runs']:,d} junctions x {macrospin['steps']} steps | "
              f"{macrospin['junction_steps_per_s']:.3g} junction-steps/s (max |R - R_cpu| "
              f"{macrospin['max_abs_diff_ohm']:.1e} ohm) | >= 1e10 |")
        print(f"| macrospin junction tables on the GPU, {macrospin['tables_runs']} runs at 300 K | max relative "
              f"difference from the CPU's {macrospin['tables_max_rel_diff']:.1e} | < 1e-9 |")
    for key, error in results["errors"].items():
        if not key.startswith("iris "):  # those have their rows above
            print(f"| {key} | ERROR: {error} | |")
    for key, why in results["skipped"].items():
        if not key.startswith("iris "):
            print(f"| {key} | skipped: {why} | |")
    save()
    print(f"\ntotal {results['seconds']:.0f} s" + (f"; wrote {out}" if out is not None else ""))
    return 0 if all(c["ok"] for c in checks) and not results["errors"] and not results["skipped"] else 1


if __name__ == "__main__":
    sys.exit(main())
