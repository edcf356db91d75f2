"""The fused CPU engine (``--backend cpu``): packs a configuration into arrays and runs
:mod:`spingpu.kernels.fused_cpu`, in chunks of networks so that progress can be shown."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from ..kernels import streams
from ..kernels.fused_cpu import make_fused_trainer
from ..kernels.network import OPTIMIZER_CODES, n_weights
from ..kernels.pair_neuron import MODE_CODES, NOISE_GAUSSIAN, NOISE_JOHNSON_SHOT, NOISE_NONE
from ..signals import deferred_interrupts
from .numpy_engine import initial_layer_weights, kernel_junctions


# One thread's time per network-epoch is about NS_PER_UNIT x n_train x (weights + 100 hidden units)
# (measured on one core: 5.1 ns for Iris 4-8-3 and 4-64-3, 4.9 ns for digits 64-32-10; a junction
# pair's readings cost about as much as 100 weights). Chunks of networks are sized to take about
# CHUNK_SECONDS, so that the progress bar moves and Ctrl-C acts within seconds.
NS_PER_UNIT = 5.0
CHUNK_SECONDS = 1.0


def networks_per_chunk(n, epochs, threads, sizes, n_train):
    """Networks per chunk of work: at most a quarter of each thread's share and 64, and about
    CHUNK_SECONDS of one thread's work (at least one network)."""
    weights = n_weights(sizes)
    seconds = NS_PER_UNIT * 1e-9 * n_train * (weights + 100 * sum(sizes[1:-1])) * epochs
    return max(1, min(64, math.ceil(n / (4 * threads)), math.floor(CHUNK_SECONDS / seconds)))


def neuron_vector(neuron):
    """(i_bias, i_gain, r_bridge, v_scale, delta_i) of a :class:`PairNeuron`."""
    return np.array([neuron.i_bias, neuron.i_gain, neuron.r_bridge, neuron.v_scale, neuron.delta_i])


def readout_vector(readout):
    """The packed readout array of :mod:`spingpu.kernels.pair_neuron` for a :class:`Readout`."""
    if readout.noise_model == "gaussian":
        kind = NOISE_GAUSSIAN if readout.read_noise > 0 else NOISE_NONE
    else:
        kind = NOISE_JOHNSON_SHOT
    return np.array([kind, readout.read_noise, readout.temperature, readout.bandwidth, readout.adc_bits,
                     readout.adc_range[0], readout.adc_range[1], readout.dac_bits, readout.dac_range[0],
                     readout.dac_range[1]], dtype=np.float64)


def fused_trainer(model):
    """The compiled fused trainer of ``model``: from the on-disk kernel cache for built-in models
    (:mod:`spingpu.kernel_cache`), else built once per model object."""
    from ..kernel_cache import cached_kernel

    kernel_model = model.kernel_model
    return cached_kernel(kernel_model, "train_networks", lambda: make_fused_trainer(kernel_model.pair_neuron))


def pack(config, model, networks, sizes, *, device=None, progress=False):
    """Everything but the data and outputs, as the arrays the fused kernels take (``device``,
    ``progress``: of the junction tables, :func:`kernel_junctions`)."""
    n = networks.size
    # every network's [W_0, b_0, W_1, b_1, ...] (numpy_engine.initial_weights) in one row, drawn a
    # layer at a time into it (host_bytes_per_network counts one layer's draw beside the rows)
    w_init = np.zeros((n, n_weights(sizes)))
    w_off, b_off, offset = [], [], 0
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w_off.append(offset)
        b_off.append(offset + fan_in * fan_out)
        w_init[:, offset:offset + fan_in * fan_out] = initial_layer_weights(config, networks, layer, fan_in,
                                                                             fan_out).reshape(n, -1)
        offset += fan_in * fan_out + fan_out
    u_off = np.concatenate([[0], np.cumsum(config.hidden)[:-1]]).astype(np.int64)
    if config.is_mtj:
        model, layers = kernel_junctions(model, config, networks, device=device, progress=progress)
        junctions = np.ascontiguousarray(np.concatenate(layers, axis=1))
    else:
        junctions = np.zeros((n, sum(config.hidden), 2, model.kernel_width))
    beta1, beta2 = config.adam_betas
    dist = config.distillation
    hyper = np.array([config.momentum, beta1, beta2, config.adam_eps, config.weight_decay,
                      dist.temperature if dist else 1.0, dist.alpha if dist else 0.0])
    return dict(sizes=np.array(sizes, dtype=np.int64), w_off=np.array(w_off, dtype=np.int64),
                b_off=np.array(b_off, dtype=np.int64), u_off=u_off, junctions=junctions,
                nominal=model.nominal, table=model.aux_table, mode=MODE_CODES[config.grad_mode],
                neuron=neuron_vector(config.neuron), readout=readout_vector(config.readout),
                opt_kind=OPTIMIZER_CODES[config.optimizer], hyper=hyper, w_init=w_init)


SCALAR_TUPLES = ("sizes", "w_off", "b_off", "u_off", "nominal", "neuron", "readout", "hyper")


def as_tuples(packed):
    """``packed`` with its small vectors as tuples: the fused kernels index them like arrays, but
    a tuple is passed by value, while every array handed to an inlined function costs atomic
    reference-count updates on its shared buffer (measured: +12-50 % network-epochs/s)."""
    out = dict(packed)
    for key in SCALAR_TUPLES:
        out[key] = tuple(v.item() for v in np.asarray(packed[key]))
    return out


def epoch_orders(config, n_train):
    """(epochs, n_train) sample order of every epoch (identity for full batch)."""
    if config.batch_size is None or config.batch_size >= n_train:
        return np.tile(np.arange(n_train, dtype=np.int64), (config.epochs, 1))
    return np.stack([streams.epoch_order(config.seed, e, n_train) for e in range(config.epochs)]).astype(np.int64)


@dataclass(frozen=True)
class FusedProblem:
    """The data and schedule of a run, as the fused kernels (CPU and CUDA) take them."""

    sizes: tuple  # (features, hidden..., classes)
    n_train: int
    batch: int
    lr_epoch: np.ndarray  # (epochs,) learning rate of every epoch
    use_teacher: bool
    teacher: np.ndarray  # (n_train, classes) teacher logits, or a (1, classes) placeholder
    data: list  # x_train, y_train, x_val, y_val, x_test, y_test: float64 / int64, contiguous


def fused_problem(dataset, config, teacher_logits):
    sizes = (dataset.n_features, *config.hidden, dataset.n_classes)
    n_train = dataset.y_train.size
    batch = n_train if config.batch_size is None else min(config.batch_size, n_train)
    lr_epoch = np.array([config.lr * config.lr_schedule.factor(e, config.epochs) for e in range(config.epochs)])
    use_teacher = config.distillation is not None
    teacher = (np.ascontiguousarray(teacher_logits, dtype=np.float64) if use_teacher
               else np.zeros((1, dataset.n_classes)))
    data = [np.ascontiguousarray(a, dtype=np.float64) if a.dtype.kind == "f" else np.ascontiguousarray(a, np.int64)
            for a in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, dataset.x_test, dataset.y_test)]
    return FusedProblem(sizes, n_train, batch, lr_epoch, use_teacher, teacher, data)


def train_fused(dataset, config, networks, model, teacher_logits, progress):
    """Train with the fused CPU kernel; returns (metrics, {"train": s, "compile": s})."""
    from ..progress import progress_bar, status

    problem = fused_problem(dataset, config, teacher_logits)
    sizes, batch, lr_epoch, teacher, data = problem.sizes, problem.batch, problem.lr_epoch, problem.teacher, problem.data
    use_teacher = problem.use_teacher
    n, epochs = networks.size, config.epochs

    def run(lo, hi, p, out, lr, order, arrays=data, size=batch):
        kernel(lo, hi, *arrays, teacher, use_teacher, networks, np.uint64(config.seed), p["sizes"], p["w_off"],
               p["b_off"], p["u_off"], p["junctions"], p["nominal"], p["table"], p["mode"], p["neuron"],
               p["readout"], p["opt_kind"], p["hyper"], lr, size, order, p["w_init"], out["loss"], out["acc"],
               out["val"], out["cos"], out["derr"], out["test"], out["div"], out["beyond"])

    t0 = time.perf_counter()
    # set-up and compilation: a stop inside Numba's compiler breaks it (spingpu.signals)
    with deferred_interrupts(), status(progress):
        orders = epoch_orders(config, problem.n_train)
        kernel = fused_trainer(model)
        packed = as_tuples(pack(config, model, networks, sizes, progress=progress))
        probe = fused_outputs(1, 1)
        # Compile: one step on two samples, with the argument types of the real run.
        few = [a[:2] for a in data]
        run(0, 1, packed, probe, lr_epoch[:1], np.ascontiguousarray(np.arange(2)[None]), arrays=few, size=2)
    compile_seconds = time.perf_counter() - t0

    out = fused_outputs(n, epochs)
    threads = numba.get_num_threads()
    chunk = networks_per_chunk(n, epochs, threads, sizes, problem.n_train)
    with progress_bar(progress, n * epochs, "network-epochs") as bar:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            jobs = [pool.submit(run, lo, min(lo + chunk, n), packed, out, lr_epoch, orders)
                    for lo in range(0, n, chunk)]
            try:
                for job, lo in zip(jobs, range(0, n, chunk)):
                    job.result()
                    if bar is not None:
                        bar.update((min(lo + chunk, n) - lo) * epochs)
            except BaseException:  # Ctrl-C or a failed chunk: the running chunks end, the queued never start
                for job in jobs:
                    job.cancel()
                raise
        train_seconds = time.perf_counter() - t0
    return fused_metrics(out), {"train": train_seconds, "compile": compile_seconds}


def fused_metrics(out):
    """The results' variables from the fused kernels' outputs."""
    return dict(train_loss=out["loss"], train_acc=out["acc"], val_acc=out["val"], grad_cosine=out["cos"],
                deriv_rel_err=out["derr"], test_acc=out["test"], diverged=out["div"],
                readings_beyond_table=out["beyond"])


def fused_outputs(n, epochs, xp=np):
    """The fused kernels' output arrays in ``xp`` (NumPy, or CuPy to make them on the GPU), NaN
    until written (``div`` False; ``beyond``, the junction readings beyond the device's table, -1)."""
    return dict(loss=xp.full((n, epochs), np.nan), acc=xp.full((n, epochs), np.nan),
                val=xp.full((n, epochs), np.nan), cos=xp.full((n, epochs), np.nan),
                derr=xp.full((n, epochs), np.nan), test=xp.full(n, np.nan), div=xp.zeros(n, dtype=np.bool_),
                beyond=xp.full(n, -1, dtype=np.int64))
