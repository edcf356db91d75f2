"""Running a study on a Dask cluster: tasks are (cell, chunk of networks), results go to the zarr
store as each task finishes, and ``resume`` skips the tasks already stored.

The numbers do not depend on how the work is split: a network's junctions, initial weights, batch
order and noise are pure functions of (seed, network index), and every engine computes one
network's numbers independently of the others sharing its call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, SpingpuWarning, check_range, count_text
from ..installation import PACKAGE, source_digest
from ..progress import STUDY_SETUP, tqdm_options
from ..signals import deferred_interrupts, raise_if_stopped
from . import store as results_store
from .batch_jobs import JobsWatch, check_cluster_table, check_submit_command, jobqueue_cluster, submit_jobs

IN_FLIGHT_PER_WORKER = 2  # tasks submitted ahead per worker: bounds the driver's memory
# Memory of this process (the driver) per network: the store's network index (creating and opening
# it), and per network and cell what the summary and the report read of the results (measured on a
# store of 2 cells x 1e7 networks: 24, 42 and 87 bytes; rounded up).
DRIVER_BYTES_PER_NETWORK = 32
SUMMARY_BYTES_PER_NETWORK_CELL = 48
REPORT_BYTES_PER_NETWORK_CELL = 96
SCHEDULER_SECONDS = 30  # how long --scheduler waits for the scheduler to answer
JOIN_GRACE_SECONDS = 15  # and then for Client() to give up, before it is given up on
REFUSED_SECONDS = 5  # a --scheduler port that refuses connections is tried again this long (one starting)
WATCH_SECONDS = 10  # how often a run asks its scheduler how many workers it has (_watch_workers)
STALL_SECONDS = 120  # no task back for this long, and STALL_FACTOR x the longest a task took: said (Pace)
STALL_FACTOR = 3


class TaskFailed(RuntimeError):
    """A task raised; the message names the cell."""


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run_study` runs a study: its store ``out`` (``.zarr``), ``resume`` or
    ``overwrite`` it, where the workers are (a ``scheduler`` address, ``workers`` local processes,
    or ``cluster`` ``slurm``/``pbs`` with ``cluster_options``, the study's ``[cluster]`` table),
    their ``backend``, ``networks_per_task`` and ``threads_per_worker``, as ``spingpu run``'s
    options of those names. ``report``: whether the caller writes the HTML report after the run
    (:func:`spingpu.report.write_report`; ``spingpu run`` does unless ``--no-report``): only the
    driver's memory for it is checked here, before the run. ``threshold``: the yield threshold
    recorded in the store for a later report (None: not recorded)."""

    out: str
    resume: bool = False
    overwrite: bool = False
    scheduler: str | None = None
    workers: int | None = None
    cluster: str = "local"
    backend: str = "auto"
    networks_per_task: int | None = None
    threads_per_worker: int = 1
    cluster_options: dict = field(default_factory=dict)  # the study's [cluster] table
    report: bool = False  # whether an HTML report follows (spingpu run's: its memory is checked before the run)
    # the yield threshold of the run's summary and report, recorded in the store (attribute
    # yield_threshold) for a later `spingpu report` without --threshold; None: not recorded
    threshold: float | None = None

    def __post_init__(self):
        if self.cluster not in ("local", "slurm", "pbs"):
            raise ConfigError("cluster", f"{self.cluster!r}; allowed: local, slurm, pbs")
        if self.resume and self.overwrite:
            raise ConfigError("resume", "--resume and --overwrite exclude each other")
        if self.scheduler and self.cluster != "local":
            raise ConfigError("cluster", f"--cluster {self.cluster} starts a cluster of its own and --scheduler joins a "
                                         "running one; give one of them")
        if self.workers is not None:
            check_range("workers", self.workers, 1, 4096, integer=True)
        if self.networks_per_task is not None:
            check_range("networks-per-task", self.networks_per_task, 1, 10**9, integer=True)
        if not str(self.out).endswith(".zarr"):
            raise ConfigError("out", f"{self.out} must end in .zarr")
        if self.threshold is not None:
            from ..stats import check_threshold

            check_threshold(self.threshold)


def default_networks_per_task(study, workers):
    """Enough tasks to keep every worker busy, few enough to keep the overhead small."""
    per_cell = max(1, (4 * workers) // max(study.n_cells, 1))
    return max(1, min(study.networks, max(32, -(-study.networks // per_cell))))


def run_study(study, options: RunOptions, progress=True, log=print):
    """Train every task of ``study`` not yet in the store; return the store's path.

    Everything that can fail is checked before the store is created or replaced: the existing
    store, the cluster (a bad ``[cluster]`` table) and the Dask scheduler or local cluster."""
    from ..backends import get_backend
    from .script_guard import check_main_guard

    if options.cluster == "local" and not options.scheduler:  # local workers are spawned: they import __main__
        check_main_guard()
    backend = get_backend(options.backend)
    gpus = _gpu_workers(backend, options)
    workers = options.workers or gpus or (os.cpu_count() or 1)
    npt = options.networks_per_task
    if options.cluster in ("slurm", "pbs") and not options.scheduler:
        check_submit_command(options.cluster)
        # a [cluster] table of bad types fails here; one dask-jobqueue refuses, when the run connects
        # (_connect), before anything is written, without starting a scheduler twice
        check_cluster_table(dict(options.cluster_options), f"{study.path}: " if study.path else "")
    if options.resume and npt is None:  # not given: the store's own split (whatever the worker count now)
        results_store.check_existing(options.out, study, None, True, False, backend.name)
        npt = results_store.store_attrs(options.out).get("networks_per_task")
    npt = min(npt or default_networks_per_task(study, workers), study.networks)
    check_driver_memory(study, options.report)
    if options.cluster == "local" and not options.scheduler:  # the workers share this machine's memory
        fits = networks_fitting_a_worker(study, workers, backend, reserved=DRIVER_BYTES_PER_NETWORK * study.networks)
        if fits is not None and npt > fits:
            if options.networks_per_task is None and not options.resume:
                npt = fits
            else:
                raise ConfigError("networks-per-task", f"{npt} networks per task do not fit in the memory each of "
                                                       f"{workers} workers has here; allowed here: at most {fits}"
                                                       + (" (--resume keeps the store's split; run it with fewer "
                                                          "--workers)" if options.resume else ""))
    parent = Path(options.out).parent
    made = not parent.is_dir()
    parent.mkdir(parents=True, exist_ok=True)  # results/ of the default: its lock goes there
    try:
        with results_store.run_lock(options.out), _quiet_dask(options):
            return _run_held(study, options, backend, workers, gpus, npt, log, progress)
    finally:
        if made:  # refused before the store was made: the folder goes again
            with contextlib.suppress(OSError):
                parent.rmdir()


@contextlib.contextmanager
def _quiet_dask(options):
    """Dask's log lines silenced during a run: those of the client of a scheduler it joins
    (``--scheduler``), as its own local cluster's are (``silence_logs``: a lost scheduler's
    client logs a traceback of many lines, where the run says what happened in one:
    :func:`_collect`, :func:`_watch_workers`), and, for every cluster, the tracebacks its event
    loop logs through ``tornado.application`` (a Ctrl-C that lands inside a call of the client
    left one of distributed's ``sync`` in a NameError, logged above the run's own stop line)."""
    # imported first: importing distributed sets its loggers' levels, tornado's too
    from distributed.utils import silence_logging_cmgr

    tornado = logging.getLogger("tornado.application")
    level = tornado.level
    tornado.setLevel(QUIET_DASK)
    try:
        if options.scheduler:
            with silence_logging_cmgr(QUIET_DASK):
                yield
        else:
            yield
    finally:
        tornado.setLevel(level)


def _run_held(study, options, backend, workers, gpus, npt, log, progress):
    """:func:`run_study` from the store's checks on, with the store held (:func:`store.run_lock`)."""
    from ..backends import cuda_gpus

    resuming = results_store.check_existing(options.out, study, npt, options.resume, options.overwrite,
                                            backend.name)
    if not resuming and Path(options.out).parent.is_dir():  # results/ of the default is made below
        from ..outputs import check_writable

        check_writable("out", options.out, store=True)
    n_tasks = results_store.task_count(study, npt)
    # chunks that cannot be decoded, found now and set aside once the run has its workers (below)
    damaged = results_store.damaged_chunks(options.out) if resuming else {}
    if not resuming:
        todo, copies, finished = _plan_counted(study, np.zeros((study.n_cells, n_tasks), dtype=bool), npt)
    elif not damaged:
        todo, copies, finished = _plan_counted(study, results_store.done_tasks(options.out), npt)
        if not todo:
            log(f"study {study.name}: every task of {options.out} is stored; nothing to run")
            return options.out

    # a bad scheduler, or jobs the batch system refuses, fail before anything is written
    client, cluster = _connect(options, workers, log, gpus, study.path)
    bar = None
    started = time.perf_counter()
    ours = resuming  # the store at options.out is this run's to update
    ended = False  # the tasks ran to their end (not stopped, nor failed)
    try:
        try:
            if damaged:  # the run can go on: mended now (a run that cannot start leaves the store as it was)
                results_store.set_aside_damaged_chunks(options.out, damaged)
                todo, copies, finished = _plan_counted(study, results_store.done_tasks(options.out), npt)
            if not resuming:
                from .. import __version__

                if options.overwrite and os.path.lexists(options.out):
                    from ..report import remove_default_report

                    results_store.remove_store(options.out)
                    removed = remove_default_report(options.out)  # it describes the store replaced
                    if removed:
                        log(f"removed {' and '.join(map(str, removed))}: the report of the store replaced")
                Path(options.out).parent.mkdir(parents=True, exist_ok=True)
                device = ("Numba CUDA simulator" if backend.simulator else "; ".join(cuda_gpus())) \
                    if backend.name == "cuda" else "CPU"
                results_store.create_store(options.out, study, npt, {
                    "spingpu_version": __version__, "backend": backend.name, "device": device,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                ours = True
            n_copies = sum(map(len, copies.values()))
            log(f"study {study.name}: {count_text(study.n_cells, 'cell')} x {count_text(study.networks, 'network')}, "
                f"{count_text(n_tasks, 'task')} of up to {count_text(npt, 'network')} per cell; "
                f"{count_text(len(todo), 'task')} to run" + (" (resuming)" if resuming else "")
                + (f", and {n_copies} stored as {'a copy' if n_copies == 1 else 'copies'} of them (cells that train "
                   f"as another: they differ only in settings that act in neither)" if n_copies else ""))
            n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers)
            if progress:
                from tqdm import tqdm

                # until the first task is back: the workers sample junctions and compile or load the kernels
                bar = tqdm(total=study.n_cells * study.networks, initial=finished, unit="networks", desc=STUDY_SETUP, **tqdm_options(leave=True))
            _drive(client, study, options, backend.name, npt, todo, copies, n_workers, bar, log)
            ended = True
        finally:
            # the workers close in full: a stop meanwhile acts after, or, closing after a stop or an
            # error, is that stop again and is dropped (it cut the shutdown into a Dask traceback)
            with deferred_interrupts(deliver=ended):
                if bar is not None:
                    bar.close()
                client.close()
                if cluster is not None:
                    cluster.close()
                if ours:  # also when stopped by Ctrl-C or a failed task: the time of every session that ended
                    with contextlib.suppress(Exception):  # best effort: never in place of the run's own error
                        earlier = results_store.store_attrs(options.out).get("run_seconds", 0.0)
                        recorded = {} if options.threshold is None else {"yield_threshold": options.threshold}
                        results_store.update_attrs(options.out, run_seconds=earlier + time.perf_counter() - started,
                                                   **recorded)
        raise_if_stopped()  # a stop lost in a finaliser while the cluster closed (spingpu.signals)
    except (KeyboardInterrupt, OSError) as stop:  # Ctrl-C, or a full disk
        stop.store_is_ours = ours  # `spingpu run` describes the store only where it is this run's
        raise
    return options.out


def _plan_counted(study, done, npt):
    """:func:`_plan`'s (tasks to train, copies), and how many networks are already stored."""
    todo, copies = _plan(study, done)
    left = sum(min(npt, study.networks - t * npt) * (1 + len(copies.get((cell, t), ()))) for cell, t in todo)
    return todo, copies, study.n_cells * study.networks - left


def _plan(study, done):
    """(tasks to train, {task trained: [cells that store a copy of it]}) of the tasks not ``done``
    (cells, tasks). A cell that trains as an earlier one does (:func:`spec.same_training`) takes
    a copy of that cell's task; where that task is already stored (a run stopped between the
    two) it is trained again, which gives the same numbers."""
    from .spec import same_training

    first = same_training(study)
    todo, copies = deque(), {}
    for cell in range(study.n_cells):
        for t in np.flatnonzero(~done[cell]).tolist():
            if first[cell] != cell and not done[first[cell], t]:
                copies.setdefault((first[cell], t), []).append(cell)
            else:
                todo.append((cell, t))
    return todo, copies


class Pace:
    """How long the run's tasks took, from submission to their results back, for
    :func:`_watch_workers` to tell a stalled run (a hung worker: frozen, or on a hung file system)
    from a slow one. Tasks of equal length come back in waves, one task's length apart, and a task
    may wait its turn on the scheduler: its time from submission is up to twice its length."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.last, self.longest, self.sent = clock, None, 0.0, {}

    def submitted(self, key):
        self.sent[key] = self.clock()

    def task_back(self, key):
        now = self.clock()
        self.longest = max(self.longest, now - self.sent.pop(key, now))
        self.last = now

    def stalled(self):
        """Seconds since the last task came back where that is beyond STALL_SECONDS and
        STALL_FACTOR times the longest a task took; None before the first (workers set up then)."""
        if self.last is None:
            return None
        wait = self.clock() - self.last
        return wait if wait > max(STALL_SECONDS, STALL_FACTOR * self.longest) else None


def _watch_workers(client, stop, say, had, every=WATCH_SECONDS, pace=None, keys="", bar=None, jobs=None):
    """Until ``stop`` is set, every ``every`` s: ``say`` a line when the scheduler's workers are
    all gone (killed, or their jobs ended: the tasks wait for new ones, which would otherwise look
    like a hang) and when some are back, and once per stall when no task (of ``keys``, a key
    prefix) has come back for longer than :meth:`Pace.stalled` allows, naming the workers that hold
    tasks; the progress ``bar`` is redrawn, so that its elapsed time goes on while nothing comes
    back. ``had``: the workers at the start. A scheduler that does not answer is passed over: the
    run's futures fail then, and :func:`_collect` says why. ``jobs``: a batch cluster's
    :class:`~spingpu.studies.batch_jobs.JobsWatch`, whose line (no worker joined long after the
    submissions) is said too."""
    told = None  # the pace's last task back when the stall was said
    ever = bool(had)  # a worker was seen
    while not stop.wait(every):
        try:
            if bar is not None and time.time() - bar.last_print_t >= bar.mininterval:
                bar.refresh()  # its clock goes on while nothing comes back (at its own pace: a log's too)
            n = len(client.scheduler_info().get("workers", {}))
        except Exception:  # noqa: BLE001 (a scheduler that does not answer: said by the futures)
            continue
        if stop.is_set():  # the run ended while the scheduler answered: its own line is the last
            return
        ever = ever or n > 0
        try:
            told = _say_workers(client, say, had, n, pace, keys, told)
            for line in jobs.lines(n, ever) if jobs is not None else ():
                say(line)
        except Exception:  # noqa: BLE001 (stdout closed, a scheduler gone meanwhile: nothing to say it on)
            return
        had = n


def _say_workers(client, say, had, n, pace, keys, told):
    """One look of :func:`_watch_workers`: the lines to say; the stall said (``told``)."""
    if n == 0 and had:
        say("the Dask scheduler has no workers now (stopped, killed, or their jobs ended): the tasks wait "
            "until some join; Ctrl-C stops the run, --resume continues it")
    elif n and not had:
        say(f"{count_text(n, 'Dask worker')} now: the tasks go on")
    wait = pace.stalled() if pace is not None and n else None
    if wait is not None and told != pace.last:
        told = pace.last
        holding = sorted(w for w, held in client.processing().items() if any(str(k).startswith(keys) for k in held))
        say(f"no task has come back for {wait:.0f} s (the longest a task took was {pace.longest:.0f} s): a "
            f"worker may hang (frozen, or on a hung file system; its log says); "
            + (f"working on this run's tasks: {', '.join(holding)}" if holding else "none is working on this "
               "run's tasks") + "; Ctrl-C stops the run, --resume continues it")
    return told


def _drive(client, study, options, backend, npt, todo, copies, n_workers, bar, log=print):
    from dask.distributed import as_completed

    from ..devices.models import registered_models
    from .tasks import train_task

    limit = IN_FLIGHT_PER_WORKER * n_workers
    models = registered_models(study.model_names)  # registered here: the workers may not have them
    # A task's key names its run (study, store, split, backend): two runs sharing a scheduler, even
    # of one study (copies of a folder share its digest), never receive each other's results.
    run_key = hashlib.sha256(json.dumps([study.digest, str(Path(options.out).resolve()), npt, backend])
                             .encode()).hexdigest()[:16]
    futures = as_completed(loop=client.loop)  # the run's client: it is not Dask's default (_join_scheduler)
    pending, pace = {}, Pace()

    def submit():
        cell, task = todo.popleft()
        lo = task * npt
        hi = min(lo + npt, study.networks)
        fut = client.submit(train_task, study, cell, lo, hi, backend, options.threads_per_worker, models,
                            key=f"train-{run_key}-{cell}-{task}", pure=False)
        pending[fut.key] = (cell, task, lo, hi)
        pace.submitted(fut.key)
        futures.add(fut)

    while todo and len(pending) < limit:
        submit()
    stop = threading.Event()
    present = len(client.scheduler_info().get("workers", {}))
    submissions = getattr(getattr(getattr(client, "cluster", None), "job_cls", None), "submissions", None)
    jobs = JobsWatch(submissions) if submissions is not None else None  # a batch cluster's (batch_jobs)
    watch = threading.Thread(target=_watch_workers, name="spingpu-watch-workers", daemon=True,
                             args=(client, stop, bar.write if bar is not None else log, present),
                             kwargs=dict(pace=pace, keys=f"train-{run_key}-", bar=bar, jobs=jobs))
    watch.start()
    try:
        _collect(study, options, npt, todo, copies, bar, futures, pending, submit, pace)
    finally:
        stop.set()
        watch.join(WATCH_SECONDS)


def _collect(study, options, npt, todo, copies, bar, futures, pending, submit, pace=None):
    """Store each task's results as it finishes, and submit the next task in its place."""
    said = set()  # (field) of the warnings said: each once per run, not at every task

    def say(text):
        field = text.split(":")[0]
        if field not in said:
            said.add(field)
            warnings.warn(f"{text} (said once, for the first task that gave it)", SpingpuWarning, stacklevel=2)

    for fut in futures:
        cell, task, lo, hi = pending.pop(fut.key)
        try:
            metrics = fut.result()
        except Exception as err:
            for other in list(futures.futures):
                other.cancel()
            if "scheduler-connection-lost" in str(err):  # every task cancelled: not this task's or cell's fault
                raise TaskFailed("lost the connection to the Dask scheduler (it stopped, or the network between "
                                 "failed)") from None
            values = study.cell_text(cell)
            where = f"cell {values}" if values else "the study's only cell"
            if type(err).__name__ == "KilledWorker":  # Dask's text sends to worker logs the local cluster silences
                reason = ("KilledWorker: the worker process died each time it ran the task (out of memory, or "
                          "killed: its log says which); fewer --networks-per-task need less memory, in a new "
                          "store (--out, or --overwrite: --resume keeps the store's split)")
            else:
                reason = f"{type(err).__name__}: {err}"
            raise TaskFailed(f"task {task} (networks {lo}-{hi - 1}) of {where} failed: {reason}") from err
        identity = metrics.pop("spingpu", None)  # None: a spingpu older than the check
        if identity is None or identity[0] != source_digest():  # other sources: its numbers are not this run's
            for other in list(futures.futures):
                other.cancel()
            who = (f"a Dask worker on {identity[1]} runs spingpu from {identity[2]}" if identity else
                   "a Dask worker runs an older spingpu, which does not say which sources it has")
            raise TaskFailed(f"{who}, whose sources differ from this run's ({PACKAGE} on {socket.gethostname()}); its "
                             f"task {task} is not stored: start the workers with this run's spingpu")
        for text in metrics.pop("warnings", ()):
            say(text)
        same = copies.get((cell, task), [])
        with deferred_interrupts():  # Ctrl-C or SIGTERM acts after the task (and its copies) are stored and marked
            for target in [cell] + same:
                results_store.write_task(options.out, study, target, lo, metrics)
                results_store.mark_done(options.out, study, target, task)
        del metrics
        if pace is not None:
            pace.task_back(fut.key)
        raise_if_stopped()  # a stop whose exception was lost in a dropped future's __del__ (spingpu.signals)
        if bar is not None:
            if bar.desc:
                bar.set_description_str("", refresh=False)
            bar.update((hi - lo) * (1 + len(same)))
        if todo:
            submit()
    raise_if_stopped()


def check_driver_memory(study, report=True):
    """ConfigError naming ``networks`` where this process could not hold what it reads of the
    results once they are trained (the store's network index, and per network and cell the summary
    table's and, with ``report``, the report's values): refused before anything is written, not
    after the training."""
    from ..outputs import size_text
    from ..training.trainer import available_memory

    free = available_memory()
    per_cell = REPORT_BYTES_PER_NETWORK_CELL if report else SUMMARY_BYTES_PER_NETWORK_CELL
    per_network = DRIVER_BYTES_PER_NETWORK + per_cell * study.n_cells
    summary = DRIVER_BYTES_PER_NETWORK + SUMMARY_BYTES_PER_NETWORK_CELL * study.n_cells
    if free is None or study.networks * per_network <= free:
        return
    raise ConfigError("networks", f"{study.networks} networks x {count_text(study.n_cells, 'cell')} need about "
                                  f"{size_text(study.networks * per_network)} of memory here for the summary"
                                  f"{' and report' if report else ''} of their results, and {size_text(free)} is "
                                  f"available; allowed here: at most {free // per_network} networks"
                                  + (f" ({free // summary} with --no-report)" if report else ""))


def networks_fitting_a_worker(study, workers, backend, reserved=0):
    """How many networks of the study's most demanding cell one of ``workers`` local worker
    processes can train at a time in its share of the memory available now, less ``reserved``
    bytes that this process holds (:func:`spingpu.training.trainer.host_bytes_per_network`);
    None where it is not known; ConfigError naming ``networks`` where not even one fits, before
    anything is written."""
    from ..training.trainer import available_memory, host_bytes_per_network
    from .spec import load_cell_dataset

    free = available_memory()
    if free is None:
        return None
    free = max(free - reserved, 0)
    need, largest, datasets = 0, None, {}  # loaded here for their sizes, dropped on return
    for flat in range(study.n_cells):
        cell = study.cell(flat)
        key = json.dumps(cell.dataset, sort_keys=True)
        if key not in datasets:
            datasets[key] = load_cell_dataset(cell.dataset, study.seed)
        cell_need = host_bytes_per_network(datasets[key], cell.config, cell.model, backend)
        if cell_need > need:
            need, largest = cell_need, flat
    fits = int(free // workers // need)
    if fits == 0:
        from ..outputs import size_text

        share = f"each of the {workers} workers has" if workers > 1 else "the worker has"
        cell = study.cell_text(largest)
        raise ConfigError("networks", f"one network{f' of the cell {cell}' if cell else ''} needs up to "
                                      f"{size_text(need)} of memory to train, and {share} {size_text(free // workers)} "
                                      "here; allowed: narrower "
                                      "layers" + (", or fewer --workers" if workers > 1 and free >= need else "")
                                      + ", or a machine with more memory")
    return fits


def _gpu_workers(backend, options):
    """The number of GPUs a local cluster gives one worker each (0: CPU workers)."""
    from ..backends import cuda_gpus

    if backend.name != "cuda" or backend.simulator or options.scheduler or options.cluster != "local":
        return 0
    return len(cuda_gpus())


# Dask's own log lines below CRITICAL stay off the terminal, in the driver and the local workers: a
# task's error reaches the driver as its exception (spingpu reports it), and what remains at ERROR
# is teardown noise, e.g. a worker's "Failed to communicate with scheduler during heartbeat" while
# Ctrl-C closes the cluster, which would break the one-line stop message.
QUIET_DASK = logging.CRITICAL


def _connect(options, workers, log, gpus=0, study_path=None):
    """(A Dask client, the cluster it started or None): an existing scheduler, a dask-jobqueue
    cluster (its jobs submitted, the errors of its ``[cluster]`` table naming ``study_path``), a
    LocalCUDACluster (one worker per GPU, dask-cuda) or a LocalCluster."""
    from dask.distributed import Client, LocalCluster

    if options.scheduler:
        return _join_scheduler(options.scheduler, log), None
    if options.cluster in ("slurm", "pbs"):
        where = f"{study_path}: " if study_path else ""
        cluster, jobs, submissions = jobqueue_cluster(options, study_path)
        try:
            submit_jobs(cluster, jobs, submissions, log, where)  # no job taken: nothing is written
            return Client(cluster), cluster
        except BaseException:
            submissions.abandoned.set()  # a submission that has not answered (a hung sbatch) is not waited for
            with deferred_interrupts(deliver=False):  # the jobs taken are cancelled whole: a second Ctrl-C is
                cluster.close()                       # the stop again, dropped
            raise
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ConfigError("backend", "one Dask worker per GPU needs dask-cuda: pip install 'spingpu[cluster-gpu]'; "
                                         "or run on the CPU with --backend cpu") from None
        log(f"starting {count_text(min(workers, gpus), 'Dask worker process')}, one per GPU (Ctrl-C is ignored "
            "until they run: they must not get it)")
        with _workers_ignore_ctrl_c():
            cluster = LocalCUDACluster(n_workers=min(workers, gpus), threads_per_worker=1,
                                       dashboard_address="127.0.0.1:0", silence_logs=QUIET_DASK,
                                       death_timeout="30s")
        log(f"Dask LocalCUDACluster: one worker on each of {min(workers, gpus)} GPUs; "
            f"dashboard {cluster.dashboard_link}")
        return Client(cluster), cluster
    log(f"starting {count_text(workers, 'Dask worker process')} (Ctrl-C is ignored until they run: they must not "
        "get it)")
    with _workers_ignore_ctrl_c():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=options.threads_per_worker, processes=True,
                               dashboard_address="127.0.0.1:0", silence_logs=QUIET_DASK,
                               death_timeout="30s")
    try:
        link = cluster.dashboard_link
    except Exception:  # no bokeh: no dashboard
        link = "unavailable (install bokeh for the dashboard)"
    log(f"Dask LocalCluster: {count_text(workers, 'worker process')}; dashboard {link}")
    return Client(cluster), cluster


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start local worker processes with SIGINT ignored (a Python started with SIGINT ignored keeps
    ignoring it): Ctrl-C then reaches the driver alone, which stops the run and closes the cluster,
    instead of every worker also printing its own KeyboardInterrupt traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def _check_listening(address, host, port):
    """ConfigError where nothing can listen at ``host``:``port``: an unknown host name, or a port
    that refuses connections for REFUSED_SECONDS (a scheduler that is starting gets them; Dask's
    Client would try for SCHEDULER_SECONDS and say less). A slow or filtered network, or any other
    failure, is left to Client's own timeout."""
    deadline = time.monotonic() + REFUSED_SECONDS
    while True:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except socket.gaierror as err:
            raise ConfigError("scheduler", f"cannot connect to {address}: unknown host {host!r} "
                                           f"({err.strerror})") from None
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise ConfigError("scheduler", f"cannot connect to {address}: nothing listens there (connection "
                                               f"refused for {REFUSED_SECONDS:g} s); start the scheduler first, or "
                                               "give its address, e.g. tcp://HOST:8786") from None
            time.sleep(0.25)
        except OSError:
            return


def _join_scheduler(address, log):
    """A Client of the scheduler at ``address``; ConfigError where the address is malformed or
    nothing answers there within SCHEDULER_SECONDS, or not as a Dask scheduler."""
    from dask.distributed import Client
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ucx", "ws", "wss"):
            host, port = parse_host_port(location)  # a missing port raises
            if not host:
                raise ValueError("no host")
    except (TypeError, ValueError):
        raise ConfigError("scheduler", f"{address!r} is not a scheduler address; expected e.g. "
                                       "tcp://HOST:PORT") from None
    if scheme in ("tcp", "tls", "ws", "wss"):
        _check_listening(address, host, port)
    timeout = f"{SCHEDULER_SECONDS}s"
    # in a thread of its own, waited for with a limit: a server that takes the connection but never
    # answers as a Dask scheduler would (a dashboard's HTTP port) holds Client() past its timeout
    joined = {}

    def join():
        try:  # not Dask's default client: a Client() that fails has set that default already
            client = Client(address, timeout=timeout, set_as_default=False)
        except BaseException as err:  # noqa: B036 (said below, in this thread)
            joined["error"] = err
            return
        joined["client"] = client
        if joined.get("abandoned"):  # given up on meanwhile: not left open
            client.close()

    thread = threading.Thread(target=join, name="spingpu-join-scheduler", daemon=True)
    thread.start()
    try:
        thread.join(SCHEDULER_SECONDS + JOIN_GRACE_SECONDS)
    finally:
        joined["abandoned"] = thread.is_alive()  # also on Ctrl-C
    if "client" in joined and joined["abandoned"]:  # made just now: the thread may not have seen the flag
        joined["client"].close()
    if thread.is_alive() or joined["abandoned"]:
        raise ConfigError("scheduler", f"nothing at {address} answered as a Dask scheduler within "
                                       f"{SCHEDULER_SECONDS + JOIN_GRACE_SECONDS} s "
                                       "(a dashboard's or another service's port?); give the scheduler's address, "
                                       "e.g. tcp://HOST:8786")
    err = joined.get("error")
    if isinstance(err, (OSError, ValueError, TimeoutError)):
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError("scheduler", f"cannot connect to {address} within {timeout}: {reason}") from None
    if isinstance(err, Exception):  # something answered, not in Dask's protocol (an SSH server's greeting)
        raise ConfigError("scheduler", f"{address} did not answer as a Dask scheduler ({type(err).__name__}: "
                                       f"{results_store._first_line(err)}); give the scheduler's address, e.g. "
                                       "tcp://HOST:8786") from None
    if err is not None:
        raise err
    client = joined["client"]
    log(f"joined the Dask scheduler at {address}")
    if not client.scheduler_info().get("workers"):
        log(f"the scheduler at {address} has no workers yet: the tasks wait until some join (dask worker {address})")
    return client


def summary_table(path, threshold=None):
    """Per cell (its sweep values with their units, as the figures write them): median of the test accuracy with its 95 % confidence interval and IQR, the yield
    (fraction >= threshold) with its 95 % Clopper-Pearson interval, the median cosine of the
    gradient used with the exact one (last epoch: the derivative's quality, which shows where the
    accuracy saturates) and the networks finished (statistics over those only), as text;
    ``threshold``: by default the run's (:func:`~spingpu.stats.results_threshold`)."""
    from ..plot.study import value_texts
    from ..report import LAST_EPOCH, SUMMARY_VARIABLES, summary_rows
    from ..stats import number_text, percent_text, results_threshold, threshold_text

    ds = results_store.load_results(path, SUMMARY_VARIABLES, LAST_EPOCH)
    threshold = results_threshold(ds, threshold)
    rows = summary_rows(ds, threshold)
    axes = [d for d in ds.test_acc.dims if d != "network"]
    texts = {d: dict(zip(ds[d].values.tolist(), value_texts(ds, d))) for d in axes}  # 2e-06 A reads 2 µA
    labels = [", ".join(f"{d}={texts[d][row[d]]}" for d in axes) or "(single cell)" for row in rows]
    width = max(len(label) for label in labels)
    pct = percent_text
    yield_head = f"yield(>={threshold_text(threshold)}%) [95 % CI]"
    median_head = "median [95 % CI]"
    lines = [f"{'cell':<{width}}  {median_head:<25}  IQR              {yield_head:<26}  grad cos  networks  "
             "diverged"]
    def span(low, high, digits, width):  # "[ 90.00- 96.67]", or "[n/a]" where neither end is known
        if not (np.isfinite(low) or np.isfinite(high)):
            return f"{'[n/a]':<{2 * width + 3}}"
        return f"[{pct(low, digits):>{width}}-{pct(high, digits):>{width}}]"

    def value(x, digits, width):  # "96.67 %", or "n/a" (no sign) where nothing finished or all diverged
        return f"{pct(x, digits):>{width}} %" if np.isfinite(x) else f"{'n/a':>{width}}  "

    for label, r in zip(labels, rows):
        cosine = number_text(r["median_grad_cosine"], ".3f")
        med = f"{value(r['median_test_acc'], 2, 6)} {span(r['median_test_acc_lo95'], r['median_test_acc_hi95'], 2, 6)}"
        yld = f"{value(r['yield'], 1, 7)} {span(r['yield_lo95'], r['yield_hi95'], 1, 5)}"
        iqr = (f"{pct(r['q25_test_acc'], 2):>6}-{pct(r['q75_test_acc'], 2):>6} %" if np.isfinite(r["q25_test_acc"])
               else f"{'n/a':>15}")
        lines.append(f"{label:<{width}}  {med:<25}  {iqr}  {yld:<26}  {cosine:>8}  {r['networks_done']:8d}  "
                     f"{r['diverged']:8d}")
    if any(r["diverged"] for r in rows):
        lines.append("median and IQR over the networks that did not diverge; a diverged one counts as failed in "
                     "the yield")
    undefined = sum(r["undefined_grad_cosine"] for r in rows)
    if undefined:
        lines.append(f"grad cos leaves out {count_text(undefined, 'network')} whose gradient used or exact was "
                     "exactly 0 (no signal reached a hidden layer: every reading clipped by an ADC, or every unit off): a "
                     "cosine with a zero vector is undefined")
    done, tasks = results_store.task_progress(ds)
    if done < tasks:
        lines.append(f"incomplete store: {done} of {tasks} tasks finished; statistics over their networks only")
    return "\n".join(lines)
