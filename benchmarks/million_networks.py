"""A 10^6-network study through `spingpu run`'s machinery with bounded driver memory.

    python benchmarks/million_networks.py [--networks 1000000] [--per-task 10000] [--epochs 1]

Trains Iris 4-2-3 networks (fd_forward, variability and read noise on) for a few epochs each, in
tasks of --per-task networks on a LocalCluster, and reports the wall time, the driver's peak RSS
(worker processes excluded) and the store's size. The driver holds at most a few tasks' results at
a time, so its memory does not grow with the number of networks.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

STUDY = """
name = "million"
networks = {networks}
seed = 0
[dataset]
name = "iris"
[network]
hidden = [2]
[training]
epochs = {epochs}
lr = 0.05
[variability]
sigma_d2d = 0.1
sigma_pair = 0.02
[readout]
read_noise = 1e-3
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--networks", type=int, default=1_000_000)
    ap.add_argument("--per-task", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import numpy as np

    import spingpu
    from spingpu.studies.runner import RunOptions, run_study
    from spingpu.studies.spec import load_study

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "million.toml"
        path.write_text(STUDY.format(networks=args.networks, epochs=args.epochs))
        study = load_study(path)
        out = str(Path(tmp) / "million.zarr")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        run_study(study, RunOptions(out=out, workers=args.workers, backend="cpu", networks_per_task=args.per_task),
                  progress=True, log=print)
        seconds = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        acc = spingpu.open_results(out).test_acc.values
        size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()) / 2**20
    print(f"{args.networks} networks x {args.epochs} epochs in tasks of {args.per_task}: {seconds:.0f} s, "
          f"{args.networks * args.epochs / seconds:.0f} network-epochs/s with {args.workers} workers")
    print(f"driver peak RSS: {rss1:.0f} MiB (before the run {rss0:.0f} MiB); store {size:.1f} MiB")
    print(f"stored networks: {np.isfinite(acc).sum()} of {acc.size}; median test accuracy {np.nanmedian(acc):.3f}")


if __name__ == "__main__":
    main()
