"""The fused CUDA engine (``--backend cuda`` for small networks): one thread block per network
(:mod:`spingpu.kernels.fused_cuda`), fed the arrays the fused CPU engine packs, in chunks of
networks that fit the free GPU memory.

Device arrays are CuPy arrays (plain ``cudaMalloc`` allocations through CuPy's pool, never managed
memory). Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's CUDA simulator on NumPy
arrays, so the GPU code is tested end to end on any machine.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError
from ..signals import deferred_interrupts
from .fused_engine import as_tuples, epoch_orders, fused_metrics, fused_outputs, fused_problem, pack

LAUNCH_BLOCKS = 1 << 16  # networks per kernel launch: the progress bar moves between launches
MEMORY_FRACTION = 0.8  # of the free GPU memory a training run may take
# What a process found by checking each GPU once (its GEMM path, how launches pass CuPy arrays), by
# (what, CUDA device id): every later run on that GPU takes it, and a failed check warns once (a
# check failed for a passing reason, such as memory another process held, is checked again by the
# next process).
_CHECKED = {}


class Device:
    """Where arrays live: a CUDA GPU through CuPy, or the simulator with NumPy arrays."""

    def __init__(self, simulator, memory_bytes=None):
        self.simulator = simulator
        self.gpu = None  # the CUDA device id
        if simulator:
            self.xp = np
            free = 2**34
            self.name = "Numba CUDA simulator"
        else:
            import cupy

            self.xp = cupy
            self.gpu = cupy.cuda.Device().id
            free, _ = cupy.cuda.runtime.memGetInfo()
            free += cupy.get_default_memory_pool().free_bytes()  # held by CuPy's pool from earlier runs, reusable
            props = cupy.cuda.runtime.getDeviceProperties(self.gpu)
            name = props["name"]
            self.name = name.decode() if isinstance(name, bytes) else str(name)
        self.memory_bytes = int(free * MEMORY_FRACTION) if memory_bytes is None else int(memory_bytes)
        self._copy_stream = None  # made at the first copy_to_host
        self._gemm_path = None  # how gemm() multiplies: found at its first use
        self._array_passing = None  # how launch() hands CuPy arrays to numba-cuda: found at its first use

    def put(self, array):
        return array if self.simulator else self.xp.asarray(array)

    def get(self, array):
        return array if self.simulator else self.xp.asnumpy(array)

    def mark(self):
        """An event recorded on the computing stream now (None in the simulator)."""
        return None if self.simulator else self.xp.cuda.get_current_stream().record()

    def copy_to_host(self, pairs, after):
        """Copy each device array of ``pairs`` (source, destination) into its NumPy destination once
        the work queued before ``after`` (:meth:`mark`) is done, on a stream of its own: kernels
        queued since keep the GPU busy while the host waits for the copies. Returns when they are
        complete."""
        if self.simulator:
            for src, dst in pairs:
                dst[...] = src
            return
        if self._copy_stream is None:
            self._copy_stream = self.xp.cuda.Stream(non_blocking=True)
        stream = self._copy_stream
        stream.wait_event(after)
        for src, dst in pairs:
            src.get(stream=stream, out=dst)
        stream.synchronize()

    def synchronize(self):
        if not self.simulator:
            self.xp.cuda.Device().synchronize()

    @property
    def gemm_path(self):
        """How :meth:`gemm` multiplies: DIRECT_GEMM, CUPY_MATMUL (a benchmark may set it, to time
        the peer) or EMULATED_GEMM (the simulator); checked at the first use on each GPU, once per
        process."""
        if self._gemm_path is None:
            self._gemm_path = (EMULATED_GEMM if self.simulator
                               else self._checked("gemm", _checked_gemm_path, self.xp))
        return self._gemm_path

    @gemm_path.setter
    def gemm_path(self, path):
        self._gemm_path = path

    def gemm(self, a, b, out):
        """``out[...] = a @ b`` over networks (``out`` C-contiguous (G, M, N); ``a`` (G, M, K) or
        (M, K) shared, ``b`` (G, K, N), transposed views read in place) as one strided batched
        GEMM (:mod:`spingpu.training.gemm`): cuBLAS on the GPU, its NumPy emulation in the
        simulator. On the GPU the direct call is first checked against ``cupy.matmul`` on small
        random products of every operand layout; if it fails, a SpingpuWarning says so and
        ``cupy.matmul`` (which copies transposed operands) does the products instead."""
        from . import gemm

        if out.size == 0 or a.shape[-1] == 0:  # nothing to multiply: not a GEMM call
            out[...] = 0
            return
        if self.gemm_path == CUPY_MATMUL:
            self.xp.matmul(a, b, out=out)
            return
        call = gemm.gemm_call(self.xp, a, b, out)
        gemm.emulate(call) if self.simulator else gemm.run_cublas(call)

    @property
    def array_passing(self):
        """How :meth:`launch` hands CuPy arrays to numba-cuda: PASS_ARRAYS (as they are) or
        WRAP_ARRAYS (a benchmark may set it, to time the other); checked at the first launch on
        each GPU, once per process (:func:`_checked_array_passing`); None in the simulator."""
        if self._array_passing is None and not self.simulator:
            self._array_passing = self._checked("array passing", _checked_array_passing, self)
        return self._array_passing

    @array_passing.setter
    def array_passing(self, how):
        self._array_passing = how

    def _checked(self, what, check, *args):
        """``check(*args)`` the first time this process asks ``what`` of this GPU (:data:`_CHECKED`)."""
        key = (what, self.gpu)
        if key not in _CHECKED:
            _CHECKED[key] = check(*args)
        return _CHECKED[key]

    def launch(self, kernel, blocks, threads, *args):
        """``kernel[blocks, threads](*args)`` on the stream CuPy computes on, without waiting for it.

        A kernel on CuPy's own stream runs after CuPy's earlier work, so the host need not wait.
        numba-cuda >= 0.30 takes a CuPy array by DLPack on the launch stream, without that wait
        (PASS_ARRAYS); earlier releases read it through the CUDA Array Interface and synchronise
        the host with CuPy's stream first, so there each array is handed over as a Numba device
        array made without synchronisation (WRAP_ARRAYS: ~50 us of host time per array on an
        H200 node, 0.58 ms for the 11 arrays of the pair kernel).
        """
        if self.simulator:
            kernel[blocks, threads](*args)
            return
        from numba import cuda

        ptr = self.xp.cuda.get_current_stream().ptr
        stream = cuda.legacy_default_stream() if ptr == 0 else cuda.external_stream(ptr)
        if self.array_passing == PASS_ARRAYS:
            kernel[blocks, threads, stream](*args)
            return
        kernel[blocks, threads, stream](*(cuda.as_cuda_array(a, sync=False) if hasattr(a, "__cuda_array_interface__")
                                          else a for a in args))


PASS_ARRAYS = "CuPy arrays by DLPack"
WRAP_ARRAYS = "Numba views of CuPy arrays"


def _checked_array_passing(device):
    """PASS_ARRAYS if numba-cuda >= 0.30 and a kernel launched with CuPy arrays as they are computes
    the right numbers on CuPy's stream (each network's mean of a random (5, 7) array), else
    WRAP_ARRAYS, with a warning where the check failed."""
    import warnings
    from importlib import metadata

    from ..errors import SpingpuWarning
    from ..kernels import batched_cuda

    try:
        if tuple(int(part) for part in metadata.version("numba-cuda").split(".")[:2]) < (0, 30):
            return WRAP_ARRAYS
    except metadata.PackageNotFoundError:  # numba's bundled CUDA target (numba < 0.61)
        return WRAP_ARRAYS
    xp = device.xp
    try:
        rows = xp.asarray(np.random.default_rng().normal(size=(5, 7)))
        means = xp.full(5, np.nan)
        device.array_passing = PASS_ARRAYS
        device.launch(batched_cuda.network_mean, 1, batched_cuda.THREADS, rows, means)
        if not bool(xp.allclose(means, rows.mean(axis=1), rtol=1e-12, atol=0)):
            raise ArithmeticError(f"means {device.get(means)} for {device.get(rows.mean(axis=1))}")
        return PASS_ARRAYS
    except Exception as err:  # a slower launch, not a wrong result: train on, said once
        warnings.warn(f"launching a kernel with CuPy arrays failed its check ({type(err).__name__}: {err}); "
                      "spingpu wraps each array for numba-cuda instead (slower launches)", SpingpuWarning,
                      stacklevel=3)
        return WRAP_ARRAYS


DIRECT_GEMM = "cublasGemmStridedBatchedEx"
CUPY_MATMUL = "cupy.matmul"
EMULATED_GEMM = "NumPy emulation of cublasGemmStridedBatchedEx"


def _checked_gemm_path(cupy):
    """DIRECT_GEMM if :func:`spingpu.training.gemm.run_cublas` equals ``cupy.matmul`` on small
    random products (float32 and float64; every layout of the engine's products, extents of 1,
    and leading dimensions and batch strides that differ from the extents), else CUPY_MATMUL with
    a warning that says why."""
    import warnings

    from ..errors import SpingpuWarning
    from . import gemm

    rng = np.random.default_rng()
    g, m, k, n = 3, 5, 7, 4
    try:
        for dtype, rtol in ((np.float32, 1e-5), (np.float64, 1e-12)):
            put = lambda *shape: cupy.asarray(rng.normal(size=shape).astype(dtype))  # noqa: E731
            cases = [(put(g, m, k), put(g, k, n)), (put(m, k), put(g, k, n)),  # forward
                     (put(g, k, m).swapaxes(1, 2), put(g, k, n)), (put(k, m).T, put(g, k, n)),  # a^T delta
                     (put(g, m, k), put(g, n, k).swapaxes(1, 2)),  # delta W^T
                     (put(g, k, m).swapaxes(1, 2), put(g, n, k).swapaxes(1, 2)), (put(g, 1, k), put(g, k, 1)),
                     # leading dimensions beyond the rows, a batch stride beyond rows x ld, one matrix for all
                     (put(g, m, k + 3)[:, :, 1:k + 1], put(g, k, n + 2)[:, :, :n]),
                     (put(2 * g, m, k)[::2], put(g, n, k).swapaxes(1, 2)), (put(1, m, k), put(g, k, n))]
            for a, b in cases:
                out = cupy.full((g, a.shape[-2], b.shape[-1]), np.nan, dtype=dtype)
                gemm.run_cublas(gemm.gemm_call(cupy, a, b, out))
                expect = cupy.matmul(a, b)
                if not bool(cupy.allclose(out, expect, rtol=rtol, atol=rtol)):
                    raise ArithmeticError(f"{dtype.__name__} {a.shape} @ {b.shape}: largest difference "
                                          f"{float(cupy.abs(out - expect).max()):.3g}")
        return DIRECT_GEMM
    except Exception as err:  # a wrong call is a bug of spingpu's, not the user's: train on, said once
        warnings.warn(f"the direct strided batched GEMM failed its check ({type(err).__name__}: {err}); "
                      "the batched CUDA engine multiplies with cupy.matmul instead", SpingpuWarning, stacklevel=3)
        return CUPY_MATMUL


def fused_cuda_kernel(model, layout):
    """The compiled fused CUDA trainer of ``model``'s kernel form (the rows ``model.bind`` gives) for
    ``layout`` (built once per pair)."""
    from ..kernels.fused_cuda import make_fused_cuda

    model = model.kernel_model
    return model.compiled(("fused_cuda", layout), lambda: make_fused_cuda(model.forward, layout))


def chunk_size(device, per_network_bytes, shared_bytes, n, held_bytes=0):
    """Networks per chunk so that a chunk's arrays, and ``held_bytes`` per network of the chunk
    before it, fit ``device.memory_bytes`` beside the ``shared_bytes`` (at least one network: a
    chunk of one is then alone on the device)."""
    room = device.memory_bytes - shared_bytes
    if room < per_network_bytes:
        raise ConfigError("networks", f"one network needs {per_network_bytes + shared_bytes:,d} bytes of GPU "
                                      f"memory with the dataset, and {device.memory_bytes:,d} are available")
    return int(min(n, max(1, room // (per_network_bytes + held_bytes))))


class FusedCudaRun:
    """One run's arrays on the device and the argument list of each launch of the fused kernel.

    Networks are packed (:func:`~spingpu.training.fused_engine.pack`) a launch's chunk at a time,
    the next on the host while the GPU trains the one before (:func:`train_fused_cuda`): a
    network's rows do not depend on the networks packed with it (counter-based random numbers). A
    model tabulated per junction (``macrospin``) is bound for the whole run at once, as the CPU
    engine binds it: its tables are computed on the device at set-up (one progress bar, one
    warning, an error before any training) and shared by every launch, which take slices of the
    run's pack."""

    PER_CHUNK = ("junctions", "w_init")  # what differs from chunk to chunk of a pack

    def __init__(self, dataset, config, networks, model, teacher_logits, layout, device, progress=False):
        self.device, self.layout, self.networks = device, layout, networks
        self.config, self.model = config, model
        self.problem = problem = fused_problem(dataset, config, teacher_logits)
        tabulated_per_junction = config.is_mtj and model.table_bytes_per_junction > 0
        if tabulated_per_junction:
            self._check_tables_fit()
        self._whole = self._pack(0, networks.size, progress) if tabulated_per_junction else None
        self._probe = probe = self.pack_chunk(0, 1)
        self.common = {k: v for k, v in probe.items() if k not in self.PER_CHUNK}  # the same for every chunk
        self.common["table"] = device.put(probe["table"])
        self.data = [device.put(a) for a in problem.data]
        self.teacher = device.put(problem.teacher)
        self.orders = device.put(epoch_orders(config, problem.n_train))
        self.lr_epoch = device.put(problem.lr_epoch)
        self.seed = np.uint64(config.seed)
        self.epochs = config.epochs

    def _check_tables_fit(self):
        """ConfigError naming ``networks`` unless the run's junction tables (every junction's of a
        model tabulated per junction, and the nominal one's) fit the device memory beside the
        data and one network's launch, saying how many networks do."""
        model = self.model
        tables = 2 * sum(self.config.hidden) * model.table_bytes_per_junction  # per network
        room = (self.device.memory_bytes - self.data_bytes - model.table_bytes_per_junction
                - self.bytes_per_network - self.output_bytes_per_network)
        fits = max(0, room // tables)
        if self.networks.size > fits:
            raise ConfigError("networks", f"a {model.name} run keeps every junction's table on the GPU, {tables:,d} "
                                          f"bytes per network: {self.networks.size:,d} networks do not fit the "
                                          f"{self.device.memory_bytes:,d} bytes available with the dataset; at most "
                                          f"{fits:,d} do (a study: --networks-per-task {max(fits, 1)})")

    def _pack(self, lo, hi, progress=False):
        return as_tuples(pack(self.config, self.model, self.networks[lo:hi], self.problem.sizes, device=self.device,
                              progress=progress))

    def pack_chunk(self, lo, hi):
        """The packed arrays of networks lo .. hi - 1, on the host: packed now, or sliced from the
        run's pack (a model tabulated per junction)."""
        if self._whole is not None:
            return {**self._whole, **{k: self._whole[k][lo:hi] for k in self.PER_CHUNK}}
        return self._pack(lo, hi)

    def arguments(self, lo, hi, out, packed=None, data=None, lr_epoch=None, orders=None, batch=None):
        """Arguments of ``train_block`` for networks lo .. hi - 1 writing into ``out`` (device
        arrays of :func:`fused_outputs` shape), from their :meth:`pack_chunk` ``packed`` (None:
        packed here); the other keywords replace the run's own."""
        put = self.device.put
        p = {**(self.pack_chunk(lo, hi) if packed is None else packed), **self.common}  # the table on the device
        errs = self.device.xp.empty((hi - lo, self.layout.errs_len))
        return (*(self.data if data is None else data), self.teacher, self.problem.use_teacher,
                put(self.networks[lo:hi]), self.seed, p["sizes"], p["w_off"], p["b_off"], p["u_off"],
                put(p["junctions"]), p["nominal"], p["table"], p["mode"], p["neuron"], p["readout"],
                p["opt_kind"], p["hyper"], self.lr_epoch if lr_epoch is None else lr_epoch,
                self.problem.batch if batch is None else batch, self.orders if orders is None else orders,
                put(p["w_init"]), errs, out["loss"], out["acc"], out["val"], out["cos"], out["derr"],
                out["test"], out["div"], out["beyond"])

    def probe_arguments(self):
        """A one-network, one-epoch, two-sample launch with the argument types of the real run, in
        batches of at most the run's batch: its scratch row holds one batch's relative errors (a
        batch of 2 overran the row of a run of batch 1)."""
        put = self.device.put
        out = fused_outputs(1, 1, self.device.xp)
        return self.arguments(0, 1, out, self._probe, data=[put(a[:2]) for a in self.problem.data],
                              lr_epoch=self.lr_epoch[:1], orders=put(np.arange(2)[None]),
                              batch=min(2, self.problem.batch))

    @property
    def bytes_per_network(self):
        """Device bytes of one network's inputs and scratch in a launch: its junction rows (2 per
        hidden unit, the model's kernel_width each), initial weights, relative-error row and
        outputs (:meth:`output_bytes_per_network`)."""
        from ..kernels.network import n_weights

        rows = 2 * sum(self.config.hidden) * self.model.kernel_width
        return 8 * (rows + n_weights(self.problem.sizes) + self.layout.errs_len + 5 * self.config.epochs + 4)

    @property
    def output_bytes_per_network(self):
        """The outputs of one network (:func:`fused_outputs`): five float64 metrics per epoch, the
        test accuracy, the diverged flag and the count of readings beyond the table."""
        return 8 * (5 * self.config.epochs + 2) + 1

    @property
    def shared_bytes(self):
        """Device memory every chunk shares: :attr:`data_bytes` and the model's table (a model
        tabulated per junction: every junction's of the run)."""
        return self.data_bytes + self.common["table"].nbytes

    @property
    def data_bytes(self):
        """Device bytes of the data, the teacher's logits, the batch orders and the learning rates."""
        pr = self.problem
        return sum(a.nbytes for a in pr.data) + pr.teacher.nbytes + 8 * self.config.epochs * (pr.n_train + 1)


def train_fused_cuda(dataset, config, networks, model, teacher_logits, progress, layout, device):
    """Train with the fused CUDA kernel; returns (metrics, {"train": s, "compile": s})."""
    from ..progress import progress_bar, status

    n, epochs = networks.size, config.epochs
    t0 = time.perf_counter()
    # set-up and compilation: a stop inside Numba's compiler breaks it (spingpu.signals)
    with deferred_interrupts(), status(progress):
        kernel = fused_cuda_kernel(model, layout)
        run = FusedCudaRun(dataset, config, networks, model, teacher_logits, layout, device, progress)
        device.launch(kernel, 1, layout.threads, *run.probe_arguments())  # compiles
        # a chunk trains while the outputs of the one before are read back (its other arrays are freed
        # by then), where both fit; else each chunk is read back before the next starts
        per, held = run.bytes_per_network, run.output_bytes_per_network
        chunk = min(chunk_size(device, per, run.shared_bytes, n, held_bytes=held), LAUNCH_BLOCKS)
        overlap = chunk * (per + held) <= device.memory_bytes - run.shared_bytes
        chunks = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
        packed = run.pack_chunk(*chunks[0])
        device.synchronize()
    compile_seconds = time.perf_counter() - t0

    out = fused_outputs(n, epochs)
    with progress_bar(progress, n * epochs, "network-epochs") as bar:
        t0 = time.perf_counter()
        pending = None  # (lo, hi, outputs, event) of the chunk launched last, not yet read back

        def read_back(lo, hi, part, done):
            device.copy_to_host([(v, out[k][lo:hi]) for k, v in part.items()], after=done)
            if bar is not None:
                bar.update((hi - lo) * epochs)

        for i, (lo, hi) in enumerate(chunks):
            part = fused_outputs(hi - lo, epochs, device.xp)  # made on the device: nothing to upload
            device.launch(kernel, hi - lo, layout.threads, *run.arguments(lo, hi, part, packed))
            launched = (lo, hi, part, device.mark())
            # the next chunk packed on the host while this one trains (uploaded once it is done: the
            # copies go on the computing stream, after it)
            packed = run.pack_chunk(*chunks[i + 1]) if i + 1 < len(chunks) else None
            if not overlap:
                read_back(*launched)
                continue
            if pending is not None:
                read_back(*pending)  # the chunk before, while this one trains
            pending = launched
        if pending is not None:
            read_back(*pending)
        device.synchronize()
        train_seconds = time.perf_counter() - t0
    return fused_metrics(out), {"train": train_seconds, "compile": compile_seconds}
