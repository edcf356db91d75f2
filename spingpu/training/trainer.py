"""Training loop shared by the engines: batches, schedule, divergence, metrics, results.

Every random number is a pure function of the seed and a network's global index, so network k
trained alone equals network k trained among many (batch order is shared by all networks).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings

import numpy as np

from ..backends import Backend, get_backend
from ..devices import get_model
from ..devices.models import model_attrs
from ..devices.variability import check_network_indices
from ..errors import ConfigError
from ..kernels import streams
from ..kernels.network import n_weights
from ..progress import progress_bar, status
from ..signals import deferred_interrupts
from ..errors import SpingpuWarning, UnusedSettingWarning
from .config import CONFIG_UNITS, FD_MODES, TrainConfig, unused_settings
from .numpy_engine import NoiseSource, NumpyEngine
from .results import make_results

FUSED_MAX_WIDTH = 64  # the fused per-network CPU engine for layers (and inputs) up to this width
FLOAT32_STEP_WARNING_A = 1e-9  # the smallest dI without a warning for float32 junctions (below it: > ~1 %)


def float32_step_note(config, model):
    """A warning's line where a model computing in float32 meets a finite-difference step below
    FLOAT32_STEP_WARNING_A, else None. A reading's V carries a float32 rounding of ~6e-8 |V|, so
    (V_B - V_A) / dI carries ~6e-8 |V| / dI against dV/dI ~ |V / I|: ~6e-8 |I| / dI relative, about
    1.2e-11 A / dI at ~200 uA (measured, median relative error of the derivative without noise or
    mismatch: 1.2e-3 at dI = 10 nA, 0.11 at 0.1 nA, 1.0 at 1 pA, where float64's is below 3e-6)."""
    if model.precision != "float32" or config.grad_mode not in FD_MODES:
        return None
    delta_i = config.neuron.delta_i
    if delta_i >= FLOAT32_STEP_WARNING_A:
        return None
    return (f"neuron.delta_i: {delta_i:g} A with the float32 junctions of {model.name!r}: V's float32 rounding "
            f"over dI is ~{min(1.2e-11 / delta_i, 1.0):.0%} of dV/dI at ~200 uA; a step of at least 1 nA, or a "
            "float64 model, avoids it")


def train(dataset, config: TrainConfig, *, n_networks=None, networks=None, model=None, backend="auto",
          teacher_logits=None, progress=False):
    """Train networks on ``dataset`` (a :class:`spingpu.datasets.Dataset`); return an xarray Dataset.

    ``networks`` are global network indices (distinct integers in 0 .. 2**32 - 1; default
    ``range(n_networks)``); ``model`` the device model or its name (default stt_compact);
    ``backend`` a name or a :class:`spingpu.Backend`; ``teacher_logits`` (n_train, n_classes)
    finite soft targets, given exactly when ``config.distillation`` is set. Bad arguments raise
    :class:`spingpu.errors.ConfigError` naming the argument, before anything is computed.
    """
    from .. import __version__

    dataset, config, networks, model, backend, teacher_logits = check_inputs(
        dataset, config, n_networks, networks, model, backend, teacher_logits)
    if not isinstance(progress, bool):
        raise ConfigError("progress", f"expected True or False, got {progress!r}")
    for key, value, needs in unused_settings(config):
        warnings.warn(f"{key}: {value} has no effect: it needs {needs}", UnusedSettingWarning, stacklevel=2)
    note = float32_step_note(config, model)
    if note is not None:
        warnings.warn(note, SpingpuWarning, stacklevel=2)

    layout = fused_cuda_layout_for(dataset, config, model, backend) if backend.name == "cuda" else None
    fused = layout is not None or _fused_on_cpu(dataset, config, backend)
    if backend.name == "numpy":
        with _one_blas_thread(), _runaway_networks_are_flagged():
            metrics, timing, _ = _train_batched(NumpyEngine, dataset, config, networks, model, teacher_logits,
                                                progress)
    elif backend.name == "cpu" and fused:
        from .fused_engine import train_fused

        metrics, timing = train_fused(dataset, config, networks, model, teacher_logits, progress)
    elif backend.name == "cpu":
        from .batched_engine import BatchedCpuEngine

        with _one_blas_thread(), _runaway_networks_are_flagged():
            metrics, timing, _ = _train_batched(BatchedCpuEngine, dataset, config, networks, model,
                                                teacher_logits, progress)
    elif backend.name == "cuda":
        metrics, timing, device_name = _train_cuda(dataset, config, networks, model, teacher_logits, progress,
                                                   backend, layout)
    else:
        raise AssertionError(backend)
    metrics["extrapolated_readings"] = extrapolated_fraction(metrics.pop("readings_beyond_table"),
                                                             metrics["diverged"], config, dataset)
    _warn_extrapolated(metrics["extrapolated_readings"], model)
    n, epochs = networks.size, config.epochs
    attrs = {
        "spingpu_version": __version__,
        "backend": backend.name,
        "engine": ("fused" if fused else "batched") if backend.name != "numpy" else "numpy",
        # the fused engines keep every network's state in float64 whatever config.dtype says
        "weights_dtype": "float64" if fused else config.dtype,
        "device": device_name if backend.name == "cuda" else "CPU",
        "dataset": dataset.name,
        "dataset_split": dataset.split,  # how its splits were made (seed, fractions)
        "dataset_sha256": dataset.sha256,  # of the arrays trained and evaluated on
        **model_attrs(model),
        "config": config.as_dict(),
        "config_units": CONFIG_UNITS,  # of config's fields that have one; the others are of dimension 1
        "train_seconds": timing["train"],
        "compile_seconds": timing["compile"],
        "network_epochs_per_second": n * epochs / timing["train"],
    }
    if model.table is not None:  # which measured curve a tabulated model ran: sha256 of its (I, V, dV/dI) knots
        attrs["device_table_sha256"] = hashlib.sha256(np.ascontiguousarray(model.table, np.float64).tobytes()).hexdigest()
    return make_results(metrics, networks, epochs, attrs)


def extrapolated_fraction(beyond, diverged, config, dataset):
    """Each network's junction readings beyond its device's table (``beyond``, counted by the
    engines) as a fraction of the readings it took: hidden units x (epochs x n_train training
    readings + (epochs x n_val + n_test) evaluation readings) x the pair's readings of each
    (:func:`spingpu.kernels.pair_neuron.readings`). NaN for a diverged network (its training
    stopped early) and where no junction is read (a digital baseline)."""
    from ..kernels.pair_neuron import MODE_CODES, readings

    mode = MODE_CODES[config.grad_mode]
    units = sum(config.hidden)
    n_train, n_val, n_test = dataset.y_train.size, dataset.y_val.size, dataset.y_test.size
    taken = units * (config.epochs * n_train * readings(mode, True)
                     + (config.epochs * n_val + n_test) * readings(mode, False))
    fraction = np.full(diverged.shape, np.nan)
    if taken:
        fraction[~diverged] = np.asarray(beyond, dtype=np.float64)[~diverged] / taken
    return fraction


def _warn_extrapolated(fraction, model):
    """ExtrapolationWarning, one line, where networks read junctions beyond their tables."""
    from ..errors import ExtrapolationWarning

    hit = fraction > 0  # NaN: False
    if not hit.any():
        return
    if model.table is None:  # a model tabulated per junction (macrospin)
        whose, hint = f"their {model.name} tables'", "widen them (table_i_min, table_i_max) or "
    else:
        whose, hint = "the measured curve's", ""
    warnings.warn(f"extrapolated_readings: {hit.sum()} of {fraction.size} networks read junctions beyond {whose} "
                  f"current range, up to {100 * fraction[hit].max():.3g} % of a network's readings; there V(I) is "
                  f"the end tangent continued linearly (dV/dI constant): {hint}keep the drive within it "
                  "(i_bias, i_gain, dac_range)", ExtrapolationWarning, stacklevel=3)


def check_inputs(dataset, config, n_networks=None, networks=None, model=None, backend="auto",
                 teacher_logits=None):
    """:func:`train`'s arguments validated and converted: (dataset, config, networks as int64
    array, model, backend, teacher logits as float64 array or None); ConfigError naming the
    argument otherwise."""
    from ..datasets import Dataset
    from ..devices.models import DeviceModel
    from ..errors import _short

    if not isinstance(dataset, Dataset) and not all(hasattr(dataset, a) for a in DATASET_ATTRIBUTES):
        hint = f" (load it with spingpu.load_dataset({dataset!r}))" if isinstance(dataset, str) else ""
        raise ConfigError("dataset", f"expected a spingpu Dataset{hint}, got {type(dataset).__name__} "
                                     f"{_short(dataset)}")
    if not isinstance(dataset, Dataset):  # an object with a Dataset's arrays: checked as one (Dataset.__post_init__)
        dataset = _as_dataset(dataset)
    if not isinstance(config, TrainConfig):
        hint = " (TrainConfig(**values))" if isinstance(config, dict) else ""
        raise ConfigError("config", f"expected a spingpu.TrainConfig{hint}, got {type(config).__name__} "
                                    f"{_short(config)}")
    count = _check_count(n_networks, "n_networks") if networks is None and n_networks is not None else None
    if model is None:
        model = get_model("stt_compact")
    elif isinstance(model, str):
        model = get_model(model)
    elif not isinstance(model, DeviceModel):
        raise ConfigError("model", f"expected a device model or its name (spingpu.get_model), got "
                                   f"{type(model).__name__} {_short(model)}")
    if isinstance(backend, str):
        backend = get_backend(backend)
    elif not isinstance(backend, Backend):
        raise ConfigError("backend", f"expected a backend name (auto, numpy, cpu, cuda) or a spingpu.Backend, got "
                                     f"{type(backend).__name__} {_short(backend)}")
    if backend.name == "cuda" and not backend.simulator:  # before the memory checks, which look at the engine
        from ..backends import _cuda_unavailable

        unavailable = _cuda_unavailable()  # None under NUMBA_ENABLE_CUDASIM
        if unavailable is not None:
            raise unavailable
    if count is not None:  # before np.arange(count): a huge count must not be allocated first
        _check_host_memory(count, dataset, config, model, backend)
    networks = _check_networks(n_networks, networks)
    if count is None:
        _check_host_memory(networks.size, dataset, config, model, backend)
    if config.distillation is not None and teacher_logits is None:
        raise ConfigError("distillation", "needs teacher_logits for the training split")
    if teacher_logits is not None:
        if config.distillation is None:
            raise ConfigError("teacher_logits", "given, but config.distillation is None; set "
                                                "TrainConfig(distillation=Distillation()) to distil")
        teacher_logits = _check_teacher(teacher_logits, dataset)
    return dataset, config, networks, model, backend, teacher_logits


DATASET_ATTRIBUTES = ("name", "x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "n_features", "n_classes")


def _as_dataset(obj):
    """A :class:`~spingpu.datasets.Dataset` of an object with its ``DATASET_ATTRIBUTES`` (its
    standardisation, class names and split record where it has them)."""
    from ..datasets import Dataset

    arrays = {part: np.asarray(getattr(obj, part)) for part in DATASET_ATTRIBUTES[1:7]}
    n_features = arrays["x_train"].shape[-1] if arrays["x_train"].ndim else 0
    return Dataset(name=str(obj.name), **arrays, n_classes=obj.n_classes,
                   feature_mean=getattr(obj, "feature_mean", np.zeros(n_features)),
                   feature_std=getattr(obj, "feature_std", np.ones(n_features)),
                   class_names=tuple(getattr(obj, "class_names", ())), split=dict(getattr(obj, "split", {})))


def _check_networks(n_networks, networks):
    """The global network indices: ``range(n_networks)`` or ``networks`` (distinct integers)."""
    if networks is None:
        if n_networks is None:
            raise ConfigError("networks", "give n_networks or networks")
        return np.arange(_check_count(n_networks, "n_networks"), dtype=np.int64)
    array = check_network_indices(networks)
    if n_networks is not None and _check_count(n_networks, "n_networks") != array.size:
        raise ConfigError("n_networks", f"{n_networks} does not match the {array.size} networks given; give one of them")
    return array


def _runaway_networks_are_flagged():
    """NumPy's overflow and invalid-value warnings silenced: a network whose numbers run away is
    flagged ``diverged`` (:data:`~spingpu.kernels.network.DIVERGED_ABOVE`), which says it once."""
    return np.errstate(over="ignore", invalid="ignore")


# Host bytes per unit (hidden or output) and sample row of a step or evaluation pass of the batched
# host engines: forward caches, deltas and their temporaries. Measured with tracemalloc (Iris,
# digits; batches 16 to the full 1,079; 1 and 2 hidden layers; tests/test_training_engines.py
# checks them): the NumPy engine 104-107 with junctions, 30 for a digital network; the batched CPU
# engine 6-37. Rounded up.
ROW_BYTES_NUMPY_MTJ, ROW_BYTES_NUMPY_DIGITAL, ROW_BYTES_BATCHED_CPU = 128, 40, 48


def host_bytes_per_network(dataset, config, model, backend):
    """An upper bound of the host memory one network takes at the peak of a run (bytes), which
    :func:`train` compares with the memory available before it starts. Every engine keeps the
    network's index and metrics (8 bytes x (5 per epoch + 3)). Then, with n_w weights and biases
    and J bytes of junction rows (and per-junction tables):

    * the fused engines (CPU, which packs every network; CUDA, which packs a launch's networks at a
      time, counted here as if it packed them all: an upper bound): the initial weights (8 n_w),
      the draw of the largest layer while it is copied in, and twice J (each layer's rows and
      their concatenation);
    * the batched host engines (NumPy reference; batched CPU above ``FUSED_MAX_WIDTH``), which
      step all networks at once: 80 bytes per weight (weights, gradient, moments, the exact
      gradient and grad_cosine's float64 copies), twice J, and per unit and sample row of the
      largest pass (the batch, or an evaluation pass) the bytes measured in ``ROW_BYTES_*``;
    * the batched CUDA engine, which makes weights and junctions on the GPU chunk by chunk:
      nothing more.

    ``backend`` is a :class:`~spingpu.backends.Backend` or its name."""
    backend = Backend(backend) if isinstance(backend, str) else backend
    sizes = (dataset.n_features, *config.hidden, dataset.n_classes)
    need = 8 + 8 * (5 * config.epochs + 3)
    n_w = n_weights(sizes)
    table = model.table_bytes_per_junction if config.is_mtj else 0
    junctions = 2 * sum(config.hidden) * (8 * model.kernel_width + table)
    if backend.name == "cuda" and fused_cuda_layout_for(dataset, config, model, backend) is None:
        return need  # the batched CUDA engine
    if backend.name == "cuda" or _fused_on_cpu(dataset, config, backend):
        return need + 8 * n_w + 8 * max(a * b for a, b in zip(sizes[:-1], sizes[1:])) + 2 * junctions
    n_train = dataset.y_train.size
    batch = n_train if config.batch_size is None else min(config.batch_size, n_train)
    rows = max(batch, min(NumpyEngine.eval_rows, max(dataset.y_val.size, dataset.y_test.size)))
    if backend.name == "numpy":
        per_row = ROW_BYTES_NUMPY_MTJ if config.is_mtj else ROW_BYTES_NUMPY_DIGITAL
    else:
        per_row = ROW_BYTES_BATCHED_CPU
    return need + 80 * n_w + 2 * junctions + rows * sum(sizes[1:]) * per_row


def _fused_on_cpu(dataset, config, backend):
    """Whether ``backend`` trains with the fused CPU engine (the batched CPU engine above
    FUSED_MAX_WIDTH)."""
    return backend.name == "cpu" and max(dataset.n_features, *config.hidden) <= FUSED_MAX_WIDTH


def available_memory():
    """Bytes of host memory available to this process: /proc/meminfo's MemAvailable (else the
    physical memory), capped by a cgroup v2 memory limit; None if unknown."""
    import os

    free = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current") as handle:
            used = int(handle.read().strip())
        if limit != "max":
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return free


def _check_host_memory(count, dataset, config, model, backend):
    """ConfigError naming ``networks`` when ``count`` networks cannot fit in the host memory."""
    per_network = host_bytes_per_network(dataset, config, model, backend)
    free = available_memory()
    if free is None or count * per_network <= free:
        return
    fits = max(free // per_network, 0)
    allowed = (f"at most {fits} networks (the others in further runs: spingpu.train's networks= picks them, "
               "spingpu run trains a study in tasks that fit)" if fits else
               f"none: one network alone needs {_gib(per_network)} (narrower layers, or a machine with more memory)")
    counted = f"{count} networks need" if count != 1 else "1 network needs"
    raise ConfigError("networks", f"{counted} up to {_gib(count * per_network)} of memory in this run, "
                                  f"and {_gib(free)} is available; allowed here: {allowed}")


def _gib(n_bytes):
    return f"{n_bytes / 2**30:.1f} GiB"


def _check_teacher(teacher_logits, dataset):
    """Teacher logits as a C-contiguous float64 (n_train, n_classes) array of finite numbers."""
    expected = (dataset.y_train.size, dataset.n_classes)
    try:
        array = np.asarray(teacher_logits)
    except (TypeError, ValueError):  # ragged
        raise ConfigError("teacher_logits", f"expected a float array of shape {expected} (training rows, classes)") from None
    if array.shape != expected:
        raise ConfigError("teacher_logits", f"shape {array.shape}; expected {expected} (training rows, classes of "
                                            f"{dataset.name})")
    if array.dtype.kind not in "biuf":
        raise ConfigError("teacher_logits", f"expected real numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise ConfigError("teacher_logits", f"expected finite numbers, found {array[row][~np.isfinite(array[row])][0]} "
                                            f"in row {row}")
    return array


def fused_cuda_layout_for(dataset, config, model, backend):
    """The fused CUDA kernel's layout when ``backend`` trains this problem with it, else None (the
    batched CUDA engine); ConfigError when ``cuda_engine='fused'`` is asked of a network it cannot
    hold."""
    from ..kernels.fused_cuda import fused_cuda_layout, max_resident_blocks

    n_train = dataset.y_train.size
    batch = n_train if config.batch_size is None else min(config.batch_size, n_train)
    sizes = (dataset.n_features, *config.hidden, dataset.n_classes)
    layout = (fused_cuda_layout(sizes, model.kernel_width, batch, backend.block_threads, backend.min_blocks_per_sm)
              if max(sizes[:-1]) <= FUSED_MAX_WIDTH else None)
    if backend.cuda_engine == "fused" and layout is None:
        raise ConfigError("cuda_engine", f"'fused' needs layers of at most {FUSED_MAX_WIDTH} units whose block fits "
                                         f"in shared memory; allowed here: auto, batched")
    layout = None if backend.cuda_engine == "batched" else layout
    if layout is not None and layout.min_blocks is not None:
        most = max_resident_blocks(layout)
        if layout.min_blocks > most:
            raise ConfigError("min_blocks_per_sm", f"{layout.min_blocks} blocks of {layout.threads} threads and "
                                                   f"{8 * layout.shared_words:,} B of shared memory cannot be "
                                                   f"resident on one multiprocessor of any GPU; allowed here: "
                                                   f"1 <= value <= {most}")
    return layout


def _train_cuda(dataset, config, networks, model, teacher_logits, progress, backend, layout):
    """The CUDA engines: the fused block-per-network kernel with ``layout`` (from
    :func:`fused_cuda_layout_for`) when a network fits a block's shared memory, else (None) the
    batched engine. Returns (metrics, seconds, device name)."""
    from ..backends import cuda_simulator_enabled
    from .cuda_engine import Device, train_fused_cuda

    simulator = backend.simulator or cuda_simulator_enabled()  # a missing GPU or package: check_inputs said so

    device = Device(simulator, backend.gpu_memory_bytes)
    n_train = dataset.y_train.size
    batch = n_train if config.batch_size is None else min(config.batch_size, n_train)
    sizes = (dataset.n_features, *config.hidden, dataset.n_classes)
    if layout is not None:
        metrics, timing = train_fused_cuda(dataset, config, networks, model, teacher_logits, progress, layout, device)
        return metrics, timing, device.name
    from .batched_cuda_engine import BatchedCudaEngine, bytes_per_network, gemm_scratch_bytes
    from .cuda_engine import chunk_size

    # evaluation runs in batches of the training batch's size: it takes no more memory than a step
    splits = ((dataset.x_train, dataset.y_train), (dataset.x_val, dataset.y_val), (dataset.x_test, dataset.y_test))
    shared = 8 * sum(x.size + y.size for x, y in splits) + 8 * n_train  # the data and an epoch's batch order
    shared += 0 if teacher_logits is None else 8 * np.asarray(teacher_logits).size
    shared += gemm_scratch_bytes(config, sizes, batch)  # a chunk of fewer networks than a GEMM call holds
    chunk = chunk_size(device, bytes_per_network(config, sizes, batch, model), shared, networks.size)
    parts, timing = [], {"train": 0.0, "compile": 0.0}

    def engine(*args, **kwargs):
        return BatchedCudaEngine(*args, device=device, eval_rows=batch, **kwargs)

    for lo in range(0, networks.size, chunk):
        # [:2]: the chunk's engine (its GPU arrays) is dropped before the next chunk's is made
        part, seconds = _train_batched(engine, dataset, config, networks[lo:lo + chunk], model, teacher_logits,
                                       progress)[:2]
        parts.append(part)
        timing = {k: timing[k] + seconds[k] for k in timing}
    metrics = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return metrics, timing, device.name


def _train_batched(engine_class, dataset, config, networks, model, teacher_logits, progress):
    """The loop of the batched engines (NumPy reference, batched CPU, batched CUDA): metrics, seconds
    spent and the trained engine.

    The data, each epoch's batch order and the running metrics live where the engine computes
    (``engine.xp``): a GPU engine gathers its batches on the device, and nothing goes to the host
    between the steps of an epoch (the per-network metrics are read back once per epoch).
    """
    t0 = time.perf_counter()
    # set-up and compilation: a stop inside Numba's compiler breaks it (spingpu.signals)
    with deferred_interrupts(), status(progress):
        engine = engine_class(model, config, networks, dataset.n_features, dataset.n_classes, progress=progress)
        xp, put = engine.xp, engine.put
        x, y = put(np.ascontiguousarray(dataset.x_train, dtype=engine.dtype)), put(dataset.y_train.astype(np.int64))
        teacher = None if teacher_logits is None else put(np.ascontiguousarray(teacher_logits, dtype=np.float64))
        x_val, x_test = (put(np.ascontiguousarray(a, dtype=engine.dtype)) for a in (dataset.x_val, dataset.x_test))
        y_val, y_test = (put(a.astype(np.int64)) for a in (dataset.y_val, dataset.y_test))
        engine.compile_kernels(x, y)
    engine.readings_beyond[...] = 0  # count the run's readings, not the compilation's
    setup_seconds = time.perf_counter() - t0
    n_train = dataset.y_train.size
    batch = n_train if config.batch_size is None else min(config.batch_size, n_train)
    steps = math.ceil(n_train / batch)
    n, epochs = networks.size, config.epochs
    metrics = {name: np.full((n, epochs), np.nan) for name in
               ("train_loss", "train_acc", "val_acc", "grad_cosine", "deriv_rel_err")}
    diverged = np.zeros(n, dtype=bool)
    seed = config.seed

    with progress_bar(progress, epochs * n, "network-epochs") as bar:
        t_train = time.perf_counter()
        sample_counter = 0
        for epoch in range(epochs):
            order = None if batch == n_train else put(streams.epoch_order(seed, epoch, n_train))
            lr = config.lr * config.lr_schedule.factor(epoch, epochs)
            loss_sum = xp.zeros(n)
            correct = xp.zeros(n)
            for s in range(steps):
                idx = slice(None) if order is None else order[s * batch:(s + 1) * batch]
                rows = min(batch, n_train - s * batch)
                row0 = sample_counter
                sample_counter += rows

                noise = NoiseSource(seed, networks, streams.PURPOSE_NOISE, 0, row0)
                logits, cache = engine.forward(x[idx], noise)
                y_batch = y[idx]
                loss, dlogits = engine.loss_and_dlogits(logits, y_batch, None if teacher is None else teacher[idx])
                grads = engine.backward(dlogits, cache)
                engine.flag_diverged(loss, grads)
                if s == steps - 1:  # gradient fidelity on the epoch's last batch, before the update
                    exact = engine.backward(dlogits, cache, "exact")
                    cosine = engine.grad_cosine(grads[:-2], exact[:-2])  # hidden layers
                    deriv_err = _deriv_rel_err(cache)
                engine.apply(grads, lr)
                loss_sum += loss * rows
                correct += (logits.argmax(axis=-1) == y_batch).sum(axis=1)
            host = engine.to_host
            metrics["train_loss"][:, epoch] = host(loss_sum) / n_train
            metrics["train_acc"][:, epoch] = host(correct) / n_train
            metrics["grad_cosine"][:, epoch] = host(cosine)
            metrics["deriv_rel_err"][:, epoch] = host(deriv_err)
            metrics["val_acc"][:, epoch] = evaluate(engine, x_val, y_val, epoch, split=0)
            dead = ~host(engine.alive)
            for name in metrics:
                metrics[name][dead, epoch] = np.nan
            diverged |= dead
            if bar is not None:
                bar.update(n)
        train_seconds = time.perf_counter() - t_train
    test_acc = evaluate(engine, x_test, y_test, epochs, split=1)
    test_acc[diverged] = np.nan
    metrics.update(test_acc=test_acc, diverged=diverged, readings_beyond_table=engine.to_host(engine.readings_beyond))
    return metrics, {"train": train_seconds, "compile": setup_seconds}, engine


def evaluate(engine, x, y, epoch, split):
    """Accuracy (N,) of every network on (x, y), in forward passes of ``engine.eval_rows`` samples, read
    noise drawn from the evaluation streams (by sample: the same whatever the passes' size); ``x`` and
    ``y`` may already be where the engine computes (``engine.put``)."""
    networks, seed = engine.networks, engine.config.seed
    y = engine.put(y)
    correct = engine.xp.zeros(networks.size)
    for start in range(0, y.size, engine.eval_rows):
        part = slice(start, start + engine.eval_rows)
        noise = NoiseSource(seed, networks, streams.PURPOSE_EVAL_NOISE, 2 * split, epoch * y.size + start, False)
        logits, _ = engine.forward(x[part], noise)
        correct += (logits.argmax(axis=-1) == y[part]).sum(axis=1)
    return engine.to_host(correct) / y.size


def _deriv_rel_err(cache):
    """Median over a batch's hidden neurons of |used - exact| / |exact| (0 where they agree).

    The relative errors go into one (network, sample x neuron) buffer that the median then sorts in
    place: on a GPU this runs at an epoch's last step, the engine's memory peak, where a list of
    per-layer arrays, their concatenation and the median's copy of it took 3 values per hidden
    neuron and sample beyond what ``batched_cuda_engine.bytes_per_network`` counts."""
    n = cache[0][1].shape[0]
    layers = [(used.reshape(n, -1), exact.reshape(n, -1)) for _, used, exact in cache[:-1]]
    rel = np.empty_like(layers[0][0], shape=(n, sum(used.shape[1] for used, _ in layers)))
    start = 0
    for used, exact in layers:
        part = rel[:, start:start + used.shape[1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(np.abs(used - exact), np.abs(exact), out=part)
        part[used == exact] = 0.0
        start += used.shape[1]
    return np.median(rel, axis=1, overwrite_input=True)


def _one_blas_thread():
    """The batched CPU engines run one small GEMM per network and Numba's parallel kernels in
    between: BLAS threads would spin between the GEMMs and take the cores from Numba (measured:
    26 % slower on 2 cores), so BLAS gets one thread (where threadpoolctl is installed: a bare GPU
    node may lack it, and the numbers do not depend on it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _check_count(n, field="networks"):
    from ..errors import check_range

    return check_range(field, n, 1, 10**9, integer=True)
