"""Seconds per network-step of an MNIST-size MLP: spingpu's engines against a batched PyTorch model.

Architecture 784-256-256-256-256-10 of MTJ-pair neurons, batch 128, ``fd_forward`` gradient,
stt_compact junctions (sigma_d2d 0.1, sigma_pair 0.02), Gaussian read noise 1e-3 V, Adam (lr 0.01).
The data are random, of MNIST shape (784 standardised features, 10 balanced classes), made with
``spingpu.from_arrays`` so that the training split is exactly ``steps`` batches of 128 and the
validation and test splits have 20 rows each (speed does not depend on the pixel values).

  spingpu numpy  spingpu.train(..., backend="numpy"), one epoch of ``steps`` batches; the time is
                 attrs["train_seconds"], which also holds, once per epoch, spingpu's gradient-cosine
                 backward pass, the derivative-error median and a validation pass over the 20-row
                 validation split.
  spingpu cpu    spingpu.train(..., backend="cpu"), timed the same way. For layers wider than
                 spingpu.training.trainer.FUSED_MAX_WIDTH (64) this is the batched CPU engine (the NumPy
                 engine's BLAS matmuls over networks with each hidden layer's pair neurons, noise and
                 ADC in one parallel Numba pass); the fused per-network engine serves narrow networks
                 only (see iris_speed.py).
  torch NT       the batched model of ``torch_mtj.py`` (torch.bmm over networks, float32) with
                 torch.set_num_threads(N), timed over the same epoch after one warm-up step: ``steps``
                 optimiser steps, the derivative error on the last batch and a validation pass (no
                 gradient cosine: spingpu's once-per-epoch extra backward pass, about 1/3 of a step,
                 makes its per-step times a few per cent high at 8 steps per epoch).

Each spingpu engine is warmed up first (1 network, 1 step: compiles its Numba kernels).

    python benchmarks/mnist_step.py            # 4 and 16 networks, 8 steps: about 1 minute on 2 cores
    python benchmarks/mnist_step.py --quick    # 2 and 4 networks, 2 steps: about 20 s
    python benchmarks/mnist_step.py --networks 4,16,64 --steps 8 --engines cpu,torch --threads 2,1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from benchutil import CpuMeter, environment  # noqa: E402

SIZES = (784, 256, 256, 256, 256, 10)
BATCH = 128
SIGMA_D2D, SIGMA_PAIR, READ_NOISE, LR = 0.1, 0.02, 1e-3, 0.01
SPLIT_ROWS = 20  # rows of the validation and of the test split (2 per class)


def config(hidden=SIZES[1:-1]):
    import spingpu

    return spingpu.TrainConfig(hidden=hidden, grad_mode="fd_forward", epochs=1, batch_size=BATCH,
                               optimizer="adam", lr=LR,
                               variability=spingpu.Variability(sigma_d2d=SIGMA_D2D, sigma_pair=SIGMA_PAIR),
                               readout=spingpu.Readout(read_noise=READ_NOISE))


def random_mnist(steps, seed=0):
    """A Dataset of MNIST shape whose training split has exactly ``steps * 128`` rows."""
    import spingpu

    want = steps * BATCH
    rows = want + 2 * SPLIT_ROWS
    fraction = SPLIT_ROWS / rows  # splits are rounded fractions of the whole table (spingpu.datasets)
    rng = np.random.default_rng(seed)
    x = rng.random((rows, SIZES[0]), dtype=np.float32)
    y = np.arange(rows) % SIZES[-1]
    ds = spingpu.from_arrays(x, y, name="random-mnist", seed=seed, val_fraction=fraction, test_fraction=fraction)
    assert ds.y_train.size == want, (ds.y_train.size, want)
    return ds


def run_spingpu(backend, networks, ds, steps):
    import spingpu

    with CpuMeter() as meter:
        res = spingpu.train(ds, config(), n_networks=networks, backend=backend)
    seconds = res.attrs["train_seconds"]
    return dict(engine=f"spingpu {backend}", networks=networks, steps=steps, seconds=seconds,
                other=meter.other_cores,
                per_step=seconds / (networks * steps), compile=res.attrs["compile_seconds"])


def warm_spingpu(backend):
    """Compile the numba kernels (Philox, junction sampling, the pair-layer kernel) by training one
    network for one step of the real architecture; returns the seconds it took."""
    t0 = time.perf_counter()
    run_spingpu(backend, 1, random_mnist(1), 1)
    return time.perf_counter() - t0


def run_torch(networks, ds, steps, threads, iters):
    import torch

    import spingpu
    from torch_mtj import TorchMTJNets

    torch.set_num_threads(threads)
    x, y = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    xv, yv = torch.as_tensor(ds.x_val), torch.as_tensor(ds.y_val)
    nets = TorchMTJNets(SIZES, networks, seed=0, sigma_d2d=SIGMA_D2D, sigma_pair=SIGMA_PAIR, read_noise=READ_NOISE,
                        lr=LR, neuron=spingpu.PairNeuron(), newton_iters=iters)
    nets.step(x[:BATCH], y[:BATCH], metrics=True)  # warm-up step (allocations, thread pool), not timed
    with CpuMeter() as meter:
        t0 = time.perf_counter()
        nets.train_epoch(x, y, BATCH, xv, yv)
        seconds = time.perf_counter() - t0
    return dict(engine=f"torch {threads}T ({iters} Newton)", networks=networks, steps=steps, seconds=seconds,
                other=meter.other_cores,
                per_step=seconds / (networks * steps), compile=None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default=None, help="comma list of network counts (default 4,16; quick 2,4)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps of 128 samples (default 8; quick 2)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--engines", default="numpy,cpu,torch", help="comma list of numpy, cpu, torch")
    ap.add_argument("--threads", default="2",
                    help="torch.set_num_threads; a comma list (e.g. 2,1) runs torch once per value (default 2)")
    ap.add_argument("--newton-iters", type=int, default=6, help="fixed Newton steps of the torch V(I)")
    args = ap.parse_args()
    counts = [int(v) for v in (args.networks or ("2,4" if args.quick else "4,16")).split(",")]
    steps = args.steps or (2 if args.quick else 8)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    threads = [int(v) for v in args.threads.split(",")]
    print("\n".join(environment(args.threads)))
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, {steps} steps, fd_forward, stt_compact sigma_d2d "
          f"{SIGMA_D2D} sigma_pair {SIGMA_PAIR}, read noise {READ_NOISE} V, Adam lr {LR}; random MNIST-shaped data\n")
    ds = random_mnist(steps)
    rows, notes = [], []
    for engine in engines:
        if engine in ("numpy", "cpu"):
            notes.append(f"spingpu {engine}: warm-up (1 network, 1 step; compiles the numba kernels) "
                         f"{warm_spingpu(engine):.1f} s")
        elif engine != "torch":
            raise SystemExit(f"unknown engine {engine!r}")
        for n in counts:
            new = [run_torch(n, ds, steps, t, args.newton_iters) for t in threads] if engine == "torch" else \
                [run_spingpu(engine, n, ds, steps)]
            rows += new
            for row in new:
                print(f"  {row['engine']}, {n} networks: {row['per_step']:.3f} s per network-step", flush=True)

    torch_by_n = {}  # the first torch row (first thread count) of each network count
    for r in rows:
        if r["engine"].startswith("torch"):
            torch_by_n.setdefault(r["networks"], r["per_step"])
    print()
    head = (f"{'engine':24s} {'networks':>8s} {'steps':>5s} {'seconds':>8s} {'s/network-step':>14s} "
            f"{'speed vs torch':>14s} {'other cores':>11s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ref = torch_by_n.get(r["networks"])
        ratio = f"{ref / r['per_step']:14.2f}" if ref else f"{'-':>14s}"
        print(f"{r['engine']:24s} {r['networks']:8d} {r['steps']:5d} {r['seconds']:8.2f} {r['per_step']:14.4f} "
              f"{ratio} {r['other']:11.2f}")
    print("speed vs torch: torch's s/network-step divided by the engine's, at the same network count (>1: faster "
          "than torch).")
    print("other cores: mean number of cores other processes kept busy during the run (0 = clean).")
    for note in notes:
        print(note)
    print("spingpu numpy is the readable reference engine; for large layers backend='cpu' runs the batched CPU "
          "engine (BLAS matmuls + one fused Numba pass per pair-neuron layer, DESIGN.md 6), which is meant to "
          "replace it for speed. The fused per-network cpu engine is used only up to width 64 (Iris-size).")


if __name__ == "__main__":
    main()
