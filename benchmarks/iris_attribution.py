"""Where an Iris network-epoch's time goes in the fused CPU engine: the same training with parts of
the pair neuron taken away, one after the other in one process.

Rows (Iris 4-8-3, full batch, Adam, stt_compact, sigma_d2d 0.1, sigma_pair 0.02):

  fd_forward, 1 mV noise      the benchmark's model (iris_speed.py, gpu_check.py's Iris rows)
  fd_forward, no noise        without the read noise's Philox draws and Box-Muller transforms
  fd_forward, tabulated       junctions read from a 64-knot table of stt_compact (a Hermite
                              evaluation in place of the Newton solve), with the noise
  fd_forward, stt_compact_f32 the same junctions evaluated in float32, with the noise
  tanh                        no junctions at all: the network, the loss, the optimiser and the
                              per-epoch metrics (gradient cosine, median derivative error, validation)

Differences between rows are CPU microseconds per network-epoch per thread (rate x threads); with
about 1,700 junction readings per network-epoch (90 x 8 x 2 training, 30 x 8 validation) they give
the cost of a reading's junction and of its noise. gpu_check.py's attribution rows ask the same of
the GPU kernel.

    python benchmarks/iris_attribution.py                 # 1024 networks x 20 epochs a row: ~1 min on 2 cores
    python benchmarks/iris_attribution.py --networks 4096 --epochs 20
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from benchutil import CpuMeter, environment  # noqa: E402

READINGS_PER_NETWORK_EPOCH = 90 * 8 * 2 + 30 * 8


def rows():
    import numpy as np

    import spingpu
    from spingpu.devices.tabulated import tabulated_model

    current = np.linspace(-1e-3, 1e-3, 64)
    v, d = spingpu.get_model("stt_compact").iv(current)
    table = tabulated_model(table=(current, v, d))
    return [("fd_forward, 1 mV noise", "fd_forward", 1e-3, None),
            ("fd_forward, no noise", "fd_forward", 0.0, None),
            ("fd_forward, tabulated, 1 mV noise", "fd_forward", 1e-3, table),
            ("fd_forward, stt_compact_f32, 1 mV noise", "fd_forward", 1e-3, "stt_compact_f32"),
            ("tanh (no junctions)", "tanh", 0.0, None)]


def main(argv=None):
    import warnings

    import numba

    import spingpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    threads = numba.get_num_threads()
    print("\n".join(environment(threads)))
    data = spingpu.load_dataset("iris")
    results = []
    for label, mode, noise, model in rows():
        kw = dict(hidden=(8,), grad_mode=mode, optimizer="adam", lr=0.01)
        if mode != "tanh":
            kw.update(variability=spingpu.Variability(sigma_d2d=0.1, sigma_pair=0.02),
                      readout=spingpu.Readout(read_noise=noise))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", spingpu.SpingpuWarning)  # readings beyond the table's ends
            spingpu.train(data, spingpu.TrainConfig(epochs=1, **kw), n_networks=2, backend="cpu", model=model)
            with CpuMeter() as meter:
                res = spingpu.train(data, spingpu.TrainConfig(epochs=args.epochs, **kw), n_networks=args.networks,
                                    backend="cpu", model=model)
        rate = res.attrs["network_epochs_per_second"]
        results.append((label, rate, 1e6 * threads / rate, meter.other_cores))
    print(f"\n{args.networks} networks x {args.epochs} epochs a row, {threads} threads\n")
    print("| row | network-epochs/s | CPU us per network-epoch | other cores |")
    print("| --- | ---: | ---: | ---: |")
    for label, rate, us, other in results:
        print(f"| {label} | {rate:.0f} | {us:.0f} | {other:.2f} |")
    us = {label: value for label, _, value, _ in results}
    base, quiet, table, single, digital = (us[label] for label, *_ in rows())
    n = READINGS_PER_NETWORK_EPOCH
    print(f"\nper reading ({n} a network-epoch): noise {1e3 * (base - quiet) / n:.0f} ns, stt_compact junction and "
          f"readout {1e3 * (quiet - digital) / n:.0f} ns, tabulated junction saves {1e3 * (base - table) / n:.0f} ns, "
          f"float32 junction {1e3 * (base - single) / n:.0f} ns; "
          f"without junctions {digital:.0f} us of {base:.0f} us ({100 * digital / base:.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
