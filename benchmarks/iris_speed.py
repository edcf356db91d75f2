"""Network-epochs per second on Iris 4-8-3: spingpu's fused CPU engine, its NumPy engine and PyTorch.

Every engine trains N networks of 4-8-3 MTJ-pair neurons, full batch (90 training rows), with the
``fd_forward`` gradient (pair A at I, B at I + dI), stt_compact junctions with sigma_d2d = 0.1 and
sigma_pair = 0.02, Gaussian read noise of 1e-3 V and Adam (lr 0.01), one after the other in one
process, each after a warm-up:

  spingpu cpu    spingpu.train(..., backend="cpu") (the fused per-network engine at this width):
                 attrs["network_epochs_per_second"], which excludes compiling; the compile time of
                 the first call in the process is reported separately
  spingpu numpy  spingpu.train(..., backend="numpy"), for --numpy-epochs (its rate per
                 network-epoch does not depend on the number of epochs)
  torch NT       the batched PyTorch model of ``torch_mtj.py`` (float32) with torch.set_num_threads(N)

"vs torch" is each rate over the first torch row's. Then the memory of the fused engine: a fresh
subprocess per network count compiles on one network, resets its peak RSS (VmHWM) and trains n1,
then n2 networks for one epoch; per network = (growth at n2 - growth at n1) / (n2 - n1). With the
default n2 = 100,000 this is also the measured peak RSS of 100,000 networks x 1 epoch. An estimate
from the engine's arrays says how many networks fit in 24 GiB.

    python benchmarks/iris_speed.py                 # 4096 x 100 + memory runs: about 7 minutes on 2 cores
    python benchmarks/iris_speed.py --quick         # 256 x 20, memory at 2000/10000: about 1.5 minutes
    python benchmarks/iris_speed.py --threads 2,1   # torch with 2 and with 1 thread
    python benchmarks/iris_speed.py --networks 1024 --epochs 50 --memory-networks 0
    python benchmarks/iris_speed.py --engines ""    # memory runs only

Timings need a quiet machine: the "other cores" column says how many cores other processes kept
busy meanwhile. torch with 2 threads on 2 cores slows down many-fold when another process takes a
core (its OpenMP barriers wait for a descheduled thread); so, less so, do the Numba parallel loops
of spingpu's numpy and batched engines, while the fused engine (independent chunks of networks per
thread) only loses the stolen core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from benchutil import CpuMeter, environment  # noqa: E402

SIGMA_D2D, SIGMA_PAIR, READ_NOISE, LR, HIDDEN = 0.1, 0.02, 1e-3, 0.01, (8,)
GIB = 1024 ** 3


def config(epochs):
    import spingpu

    return spingpu.TrainConfig(hidden=HIDDEN, grad_mode="fd_forward", epochs=epochs, optimizer="adam", lr=LR,
                               variability=spingpu.Variability(sigma_d2d=SIGMA_D2D, sigma_pair=SIGMA_PAIR),
                               readout=spingpu.Readout(read_noise=READ_NOISE))


def iris():
    import spingpu

    return spingpu.load_dataset("iris")


def run_spingpu(backend, networks, epochs):
    """Train once (after a warm-up that compiles); return the row of the table."""
    import spingpu

    ds = iris()
    t0 = time.perf_counter()
    warm = spingpu.train(ds, config(1), n_networks=2, backend=backend)
    first_call = time.perf_counter() - t0
    with CpuMeter() as meter:
        res = spingpu.train(ds, config(epochs), n_networks=networks, backend=backend)
    return dict(engine=f"spingpu {backend}", networks=networks, epochs=epochs, seconds=res.attrs["train_seconds"],
                other=meter.other_cores,
                rate=res.attrs["network_epochs_per_second"], compile=warm.attrs["compile_seconds"],
                first_call=first_call, val_acc=float(np.nanmean(res.val_acc.values[:, -1])),
                derr=float(np.nanmedian(res.deriv_rel_err.values[:, -1])))


def run_torch(networks, epochs, threads, iters):
    import torch

    import spingpu
    from torch_mtj import TorchMTJNets

    torch.set_num_threads(threads)
    ds = iris()
    x, y = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    xv, yv = torch.as_tensor(ds.x_val), torch.as_tensor(ds.y_val)
    kw = dict(seed=0, sigma_d2d=SIGMA_D2D, sigma_pair=SIGMA_PAIR, read_noise=READ_NOISE, lr=LR,
              neuron=spingpu.PairNeuron(), newton_iters=iters)
    warm = TorchMTJNets((4, *HIDDEN, 3), 64, **kw)  # warm-up: allocator, thread pool, autograd
    for _ in range(3):
        warm.train_epoch(x, y, y.shape[0], xv, yv)
    del warm
    nets = TorchMTJNets((4, *HIDDEN, 3), networks, **kw)
    with CpuMeter() as meter:
        t0 = time.perf_counter()
        for _ in range(epochs):
            out = nets.train_epoch(x, y, y.shape[0], xv, yv)
        seconds = time.perf_counter() - t0
    return dict(engine=f"torch {threads}T ({iters} Newton)", networks=networks, epochs=epochs, seconds=seconds,
                other=meter.other_cores,
                rate=networks * epochs / seconds, compile=None, first_call=None,
                val_acc=float(out["val_acc"].mean()), derr=float(out["deriv_rel_err"].median()))


# --- memory -------------------------------------------------------------------------------------------

def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def memory_child(networks, epochs):
    """Run in a fresh process: compile on 1 network, reset the peak, train ``networks``; print JSON."""
    import spingpu

    ds = iris()
    t0 = time.perf_counter()
    spingpu.train(ds, config(epochs), n_networks=1, backend="cpu")
    compile_s = time.perf_counter() - t0
    base = _status_kib("VmRSS")
    compile_peak = _status_kib("VmHWM")  # imports + compiling the fused kernel
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS (Linux >= 4.0)
            f.write("5")
    except OSError:
        reset = False
    t0 = time.perf_counter()
    res = spingpu.train(ds, config(epochs), n_networks=networks, backend="cpu")
    wall = time.perf_counter() - t0
    hwm = _status_kib("VmHWM")
    print(json.dumps(dict(networks=networks, epochs=epochs, base_kib=base, hwm_kib=hwm, hwm_reset=reset,
                          compile_peak_kib=compile_peak, wall=wall,
                          compile=compile_s, rate=res.attrs["network_epochs_per_second"],
                          train_seconds=res.attrs["train_seconds"])))


def measure_memory(networks, epochs):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", str(networks), "--epochs", str(epochs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def array_estimate(epochs):
    """Bytes per network of the fused engine's arrays (float64, from spingpu/training/fused_engine.py):
    persistent ones (the packed weights w_init, the junction parameters, the per-epoch outputs, the
    network index) and the transient ones while packing (the list of initial weight arrays and the
    normals they are scaled from, the junction array before np.concatenate copies it)."""
    import spingpu

    sizes = (4, *HIDDEN, 3)
    n_weights = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    n_params = len(spingpu.get_model("stt_compact").parameters)
    parts = {"w_init": n_weights * 8, "junctions": sum(HIDDEN) * 2 * n_params * 8,
             "outputs": 5 * epochs * 8 + 8 + 1, "networks": 8}
    transient = 2 * n_weights * 8 + parts["junctions"]
    return dict(persistent=sum(parts.values()), transient=transient, parts=parts)


# --- report -------------------------------------------------------------------------------------------

def print_table(rows):
    torch_rate = next((r["rate"] for r in rows if r["engine"].startswith("torch")), None)  # the first torch row
    head = f"{'engine':24s} {'networks':>8s} {'epochs':>6s} {'seconds':>8s} {'net-epochs/s':>12s} {'vs torch':>8s}" \
           f" {'compile s':>9s} {'val acc':>7s} {'deriv err':>9s} {'other cores':>11s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = f"{r['rate'] / torch_rate:8.2f}" if torch_rate else f"{'-':>8s}"
        comp = f"{r['compile']:9.1f}" if r["compile"] is not None else f"{'-':>9s}"
        print(f"{r['engine']:24s} {r['networks']:8d} {r['epochs']:6d} {r['seconds']:8.1f} {r['rate']:12.0f} {ratio}"
              f" {comp} {r['val_acc']:7.3f} {r['derr']:9.4f} {r['other']:11.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", type=int, default=None, help="networks per engine (default 4096; quick 256)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default 100; quick 20)")
    ap.add_argument("--numpy-epochs", type=int, default=None,
                    help="epochs for the NumPy engine (default 20, quick 5; its rate does not depend on it)")
    ap.add_argument("--quick", action="store_true", help="256 networks x 20 epochs, small memory runs")
    ap.add_argument("--threads", default="2",
                    help="torch.set_num_threads; a comma list (e.g. 2,1) runs torch once per value (default 2)")
    ap.add_argument("--newton-iters", type=int, default=6, help="fixed Newton steps of the torch V(I) (default 6)")
    ap.add_argument("--engines", default="cpu,numpy,torch", help="comma list of cpu, numpy, torch")
    ap.add_argument("--memory-networks", default=None,
                    help="n1,n2 for the memory-per-network measurement (default 20000,100000; quick 2000,10000; "
                         "'0' skips)")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.memory_child is not None:
        memory_child(args.memory_child, args.epochs or 1)
        return

    networks = args.networks or (256 if args.quick else 4096)
    epochs = args.epochs or (20 if args.quick else 100)
    numpy_epochs = args.numpy_epochs or min(epochs, 5 if args.quick else 20)
    mem = args.memory_networks or ("2000,10000" if args.quick else "20000,100000")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    threads = [int(v) for v in args.threads.split(",")]
    print("\n".join(environment(args.threads)))
    print(f"Iris 4-8-3, full batch (90 rows), fd_forward, stt_compact sigma_d2d {SIGMA_D2D} sigma_pair {SIGMA_PAIR}, "
          f"read noise {READ_NOISE} V, Adam lr {LR}\n")
    rows = []
    for engine in engines:
        t0 = time.perf_counter()
        if engine in ("cpu", "numpy"):
            new = [run_spingpu(engine, networks, epochs if engine == "cpu" else numpy_epochs)]
        elif engine == "torch":
            new = [run_torch(networks, epochs, t, args.newton_iters) for t in threads]
        else:
            raise SystemExit(f"unknown engine {engine!r}")
        rows += new
        for row in new:
            print(f"  {row['engine']}: {row['rate']:.0f} network-epochs/s", flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s with warm-up)", flush=True)
    print()
    print_table(rows)
    for r in rows:
        if r["compile"] is not None:
            print(f"{r['engine']}: compile/setup {r['compile']:.1f} s, first call (1 epoch, 2 networks) "
                  f"{r['first_call']:.1f} s")
    print("other cores: mean number of cores other processes kept busy during the engine's run (0 = clean).")
    print("val acc: mean validation accuracy after the last epoch; deriv err: median over networks of the "
          "last batch's median |used - exact| / |exact|.")
    print("torch computes train loss/acc, deriv err and val acc per epoch like spingpu, but not spingpu's "
          "per-epoch gradient cosine (a second backward pass) nor the test accuracy.")

    if mem != "0":
        n1, n2 = (int(v) for v in mem.split(","))
        print("\nMemory of the fused engine (a fresh subprocess per count, 1 epoch; VmHWM reset after compiling):")
        runs = []
        for n in (n1, n2):
            m = measure_memory(n, 1)
            runs.append(m)
            grow = (m["hwm_kib"] - m["base_kib"]) * 1024
            print(f"  {n:7d} networks: peak RSS {m['hwm_kib'] / 1024:7.1f} MiB while training (growth "
                  f"{grow / 2**20:6.1f} MiB over the {m['base_kib'] / 1024:.0f} MiB before), peak while compiling "
                  f"{m['compile_peak_kib'] / 1024:.0f} MiB; train {m['train_seconds']:.1f} s "
                  f"({m['rate']:.0f} network-epochs/s), compile {m['compile']:.1f} s", flush=True)
        a, b = runs
        per = ((b["hwm_kib"] - b["base_kib"]) - (a["hwm_kib"] - a["base_kib"])) * 1024 / (n2 - n1)
        print(f"  measured: {per:.0f} bytes per network (1 epoch)")
        est1, est100 = array_estimate(1), array_estimate(100)
        print(f"  from the arrays: persistent {est1['persistent']:.0f} B/network at 1 epoch "
              f"({', '.join(f'{k} {v:.0f}' for k, v in est1['parts'].items())}), "
              f"+{est1['transient']:.0f} B transient while packing; outputs grow by 40 B per epoch")
        for label, est in (("1 epoch", est1), ("100 epochs", est100)):
            need = (est["persistent"] + est["transient"]) * 100_000
            print(f"  100,000 networks x {label}: about {need / 2**20:.0f} MiB of arrays "
                  f"(+ the ~{a['base_kib'] / 1024:.0f} MiB process) -> {'fits' if need < 20 * GIB else 'does NOT fit'} "
                  f"in 24 GiB; 24 GiB holds about {20 * GIB / (est['persistent'] + est['transient']) / 1e6:.0f} "
                  f"million networks (20 GiB usable)")


if __name__ == "__main__":
    main()
