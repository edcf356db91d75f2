"""Dask overhead of `spingpu run`: a 64-cell sweep on a LocalCluster against the same work run
in-process on the same cores (one after the other, same machine, same script).

    python benchmarks/dask_overhead.py [--networks 64] [--epochs 50] [--workers N]

In-process: every cell trained by `spingpu.train(..., backend="cpu")` with Numba using all cores.
Dask: `spingpu run` machinery (study file, LocalCluster of one single-threaded worker per core,
zarr store). Both include their compilation (the in-process run compiles once, each Dask worker
once). Also checks that both give identical test accuracies.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

STUDY = """
name = "overhead"
networks = {networks}
seed = 0
[dataset]
name = "iris"
[network]
hidden = [8]
[training]
epochs = {epochs}
lr = 0.05
[variability]
sigma_pair = 0.02
[readout]
read_noise = 1e-3
[sweep]
"variability.sigma_d2d" = {{linspace = [0.0, 0.2, 8]}}
"neuron.delta_i" = {{logspace = [-6, -4.5, 8]}}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--networks", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import spingpu
    from spingpu.studies.runner import RunOptions, run_study
    from spingpu.studies.spec import load_study
    from spingpu.studies.tasks import _dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.toml"
        path.write_text(STUDY.format(networks=args.networks, epochs=args.epochs))
        study = load_study(path)

        t0 = time.perf_counter()
        local = []
        for cell in range(study.n_cells):
            c = study.cell(cell)
            ds = _dataset('{"name": "iris"}', study.seed)
            local.append(spingpu.train(ds, c.config, n_networks=study.networks, model=c.model,
                                       backend="cpu").test_acc.values)
        t_local = time.perf_counter() - t0

        t0 = time.perf_counter()
        out = str(Path(tmp) / "overhead.zarr")
        run_study(study, RunOptions(out=out, workers=args.workers, backend="cpu"), progress=False, log=lambda *_: None)
        t_dask = time.perf_counter() - t0
        stored = spingpu.open_results(out).test_acc.values.reshape(study.n_cells, -1)

    same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(local, stored))
    work = study.n_cells * study.networks * args.epochs
    print(f"{study.n_cells} cells x {study.networks} networks x {args.epochs} epochs = {work} network-epochs, "
          f"{args.workers} workers / {os.cpu_count()} cores")
    print(f"{'run':<12}{'seconds':>10}{'network-epochs/s':>20}")
    print(f"{'in-process':<12}{t_local:>10.1f}{work / t_local:>20.0f}")
    print(f"{'dask':<12}{t_dask:>10.1f}{work / t_dask:>20.0f}")
    print(f"dask / in-process time: {t_dask / t_local:.3f} (goal <= 1.10); identical results: {same}")


if __name__ == "__main__":
    main()
