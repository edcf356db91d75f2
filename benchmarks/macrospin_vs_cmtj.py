"""Junction-steps per second of the batched macrospin LLGS kernel against cmtj, same problem.

The problem (both codes, T = 0, RK4, fixed dt = 1 ps): an in-plane free layer (Ms = 1e6 A/m,
1.5 nm x 4000 nm^2, K_u = 2e4 J/m^3 along x, demag (0.02, 0.05, 0.9)), reference along x, a
hard-axis bias field of 0.6 H_k, currents from -1.2 mA to 1.2 mA (static tilts, switching to AP),
landau_lifshitz torque form, resistance linear in cos theta, no TMR bias dependence. cmtj's constants
are set to spingpu's. Each junction at each current is one run of ``--steps`` steps; a junction-step
is one RK4 step of one run. cmtj runs one junction after the other from Python (as a user would,
logging only the last step); spingpu runs every (junction, current) of the batch in one call of
``spingpu.kernels.macrospin.mean_resistance`` over ``numba.get_num_threads()`` threads. Before
timing, both codes' final magnetisations (and the resistances r_p (1 + tmr0 (1 - m.p)/2)
they give) are compared on cmtj's runs.

    python benchmarks/macrospin_vs_cmtj.py            # ~1 min on 2 cores
    python benchmarks/macrospin_vs_cmtj.py --quick

``time_macrospin_gpu`` times the CUDA kernel (for ``benchmarks/gpu_check.py``).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from benchutil import CpuMeter, environment


def problem(steps, dt=1e-12):
    """The benchmark's macrospin model (spingpu) with ``steps`` steps per run."""
    import spingpu

    model = spingpu.get_model("macrospin", alpha=0.05, k_u=2e4, v_h=math.inf, demag=(0.02, 0.05, 0.9),
                              reference=(1, 0, 0), m0=(1, 0, 0), eta_form="constant",
                              torque_form="landau_lifshitz", resistance_form="resistance", dt=dt,
                              settle_time=(steps - 1) * dt, average_time=dt)
    h_k = 2 * 2e4 / (4e-7 * math.pi * 1e6)
    return model.with_nominal(h_ext=(0.0, 0.6 * h_k, 0.0))


def run_spingpu(model, params, currents, seed=0):
    """(seconds, final magnetisations (J, K, 3)) of one batched call."""
    from spingpu.devices.macrospin import coefficients
    from spingpu.kernels import macrospin as k

    coefs = coefficients(params, model.settings)
    keys = np.zeros((params.shape[0], 4), dtype=np.int64)
    out_r = np.empty((params.shape[0], currents.size))
    out_m = np.empty((params.shape[0], currents.size, 3))
    t0 = time.perf_counter()
    k.mean_resistance(currents, coefs, keys, np.uint64(seed), out_r, out_m)
    return time.perf_counter() - t0, out_m


def run_cmtj(cmtj, model, params, currents, steps):
    """(seconds, final magnetisations (J, K, 3)) of cmtj, one junction and current after the other."""
    from spingpu.kernels import macrospin as k

    st = model.settings
    names = model.parameter_names
    demag = [cmtj.CVector(st.demag[0], 0, 0), cmtj.CVector(0, st.demag[1], 0), cmtj.CVector(0, 0, st.demag[2])]
    out = np.empty((params.shape[0], currents.size, 3))
    t0 = time.perf_counter()
    for j, row in enumerate(params):
        p = dict(zip(names, row))
        for i, current in enumerate(currents):
            layer = cmtj.Layer.createSTTLayer("free", cmtj.CVector(*st.m0), cmtj.CVector(*st.easy_axis),
                                              k.MU0 * p["ms"], p["t_free"], p["area"], demag, damping=p["alpha"],
                                              SlonczewskiSpacerLayerParameter=1.0, beta=-p["beta_fl"],
                                              spinPolarisation=p["spin_polarization"])
            layer.setReferenceLayer(cmtj.CVector(*st.reference))
            junction = cmtj.Junction([layer], p["r_p"], p["r_p"] * (1 + p["tmr0"]))
            junction.setLayerAnisotropyDriver("free", cmtj.constantDriver(p["k_u"]))
            junction.setLayerCurrentDriver("free", cmtj.constantDriver(current / p["area"]))
            junction.setLayerExternalFieldDriver("free", cmtj.AxialDriver(*st.h_ext))
            junction.runSimulation(steps * st.dt, st.dt, steps * st.dt)
            m = junction.getLayerMagnetisation("free")
            out[j, i] = m.x, m.y, m.z
    return time.perf_counter() - t0, out


def sample(model, n, seed=1):
    """``n`` junctions with a 5 % spread of every positive parameter around the nominal."""
    rng = np.random.default_rng(seed)
    params = np.repeat(model.nominal[None], n, axis=0)
    positive = np.array([p.distribution == "lognormal" for p in model.parameters])
    params[:, positive] *= np.exp(rng.normal(0.0, 0.05, (n, positive.sum())))
    params[:, model.parameter_names.index("spin_polarization")] = np.minimum(
        params[:, model.parameter_names.index("spin_polarization")], 0.99)
    return params


def time_macrospin_gpu(junctions=1 << 20, currents=1, steps=2000, temperature=0.0, repeats=3, threads_per_block=128):
    """Junction-steps per second of the CUDA kernel ``macrospin_mean_resistance`` on this GPU.

    ``junctions`` x ``currents`` runs of ``steps`` steps each (the benchmark problem, 5 % spreads;
    ``temperature`` > 0 uses the thermal field and Heun). The first launch compiles and is not
    timed; the best of ``repeats`` launches is. Returns a dict with ``junction_steps_per_s``,
    ``seconds``, ``runs``, ``steps`` and ``max_abs_diff_ohm``: the largest difference of the first
    64 runs' resistances from the CPU kernel (float64 on both; FMA contraction on the GPU).
    """
    from numba import cuda

    from spingpu.devices.macrospin import coefficients
    from spingpu.kernels import cuda_devices
    from spingpu.kernels.philox import split_seed

    model = problem(steps).with_nominal(temperature=temperature)
    params = sample(model, junctions)
    grid = np.linspace(-1.2e-3, 1.2e-3, currents) if currents > 1 else np.array([-3e-4])
    coefs = coefficients(params, model.settings)
    keys = np.zeros((junctions, 4), dtype=np.int64)
    keys[:, 0] = np.arange(junctions)
    d_cur, d_coefs, d_keys = cuda.to_device(grid), cuda.to_device(coefs), cuda.to_device(keys)
    d_r = cuda.device_array((junctions, currents))
    d_m = cuda.device_array((junctions, currents, 3))
    k0, k1 = split_seed(np.uint64(0))
    runs = junctions * currents
    blocks = (runs + threads_per_block - 1) // threads_per_block
    kernel = cuda_devices.macrospin_mean_resistance[blocks, threads_per_block]
    kernel(d_cur, d_coefs, d_keys, k0, k1, d_r, d_m)
    cuda.synchronize()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        kernel(d_cur, d_coefs, d_keys, k0, k1, d_r, d_m)
        cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    gpu_r = d_r.copy_to_host()
    from spingpu.kernels import macrospin as k

    n_check = min(64, junctions)
    cpu_r = np.empty((n_check, currents))
    k.mean_resistance(grid, coefs[:n_check], keys[:n_check], np.uint64(0), cpu_r, np.empty((n_check, currents, 3)))
    return dict(junction_steps_per_s=runs * sum(model.settings.steps) / best, seconds=best, runs=runs,
                steps=sum(model.settings.steps), max_abs_diff_ohm=float(np.abs(gpu_r[:n_check] - cpu_r).max()))


def main(argv=None):
    import numba

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10000, help="RK4 steps per run (default 10000 = 10 ns)")
    parser.add_argument("--junctions", type=int, default=256, help="spingpu junctions (default 256)")
    parser.add_argument("--cmtj-junctions", type=int, default=8, help="cmtj junctions (default 8)")
    parser.add_argument("--currents", type=int, default=13, help="currents per junction (default 13)")
    parser.add_argument("--quick", action="store_true", help="2000 steps, 64 and 4 junctions")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.junctions, args.cmtj_junctions = 2000, 64, 4
    for line in environment(numba.get_num_threads()):
        print(line)
    import cmtj

    from spingpu.devices.macrospin import set_cmtj_constants

    set_cmtj_constants(cmtj)
    print(f"cmtj {cmtj.__version__}")
    model = problem(args.steps)
    currents = np.linspace(-1.2e-3, 1.2e-3, args.currents)
    params = sample(model, max(args.junctions, args.cmtj_junctions))

    run_spingpu(model, params[:1], currents[:1])  # compile (cached after the first process)
    _, ours = run_spingpu(model, params[:args.cmtj_junctions], currents)
    with CpuMeter() as meter_c:
        t_c, ref = run_cmtj(cmtj, model, params[:args.cmtj_junctions], currents, args.steps)
    r_p = params[:args.cmtj_junctions, model.parameter_names.index("r_p"), None]
    tmr0 = params[:args.cmtj_junctions, model.parameter_names.index("tmr0"), None]
    resistance = lambda m: r_p * (1 + tmr0 * (1 - m[..., 0]) / 2)  # noqa: E731  (reference along x)
    diff = np.abs(resistance(ours) - resistance(ref)).max()
    ref = resistance(ref)
    with CpuMeter() as meter_s:
        t_s, _ = run_spingpu(model, params[:args.junctions], currents)
    rate_c = args.cmtj_junctions * args.currents * args.steps / t_c
    rate_s = args.junctions * args.currents * args.steps / t_s
    print(f"problem: {args.currents} currents x {args.steps} RK4 steps of dt = 1 ps per junction, T = 0")
    print(f"agreement on cmtj's {args.cmtj_junctions * args.currents} runs: max |R_spingpu - R_cmtj| = {diff:.2e} ohm "
          f"(R from {ref.min():.1f} to {ref.max():.1f} ohm)")
    print("| code | runs | seconds | junction-steps/s | other cores |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| cmtj (1 thread, Python loop) | {args.cmtj_junctions * args.currents} | {t_c:.2f} | {rate_c:.3g} | "
          f"{meter_c.other_cores:.2f} |")
    print(f"| spingpu CPU kernel ({numba.get_num_threads()} threads) | {args.junctions * args.currents} | {t_s:.2f} | "
          f"{rate_s:.3g} | {meter_s.other_cores:.2f} |")
    print(f"ratio spingpu / cmtj: {rate_s / rate_c:.1f}x")


if __name__ == "__main__":
    main()
