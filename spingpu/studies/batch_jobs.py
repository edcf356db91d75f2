"""Batch-system clusters for ``spingpu run --cluster slurm|pbs``: dask-jobqueue's ``SLURMCluster``
and ``PBSCluster`` made from the study's ``[cluster]`` table, and their jobs' submissions watched.

dask-jobqueue submits a cluster's jobs in the background (``cluster.scale``): a job the batch
system refuses (an unknown partition or account, a walltime beyond the queue's limit, a memory
request no node has) would be a traceback of some forty lines, and then a run waiting for workers
that never join, its store already made. Here each submission's answer is recorded
(:class:`Submissions`), a submission that does not answer within SUBMIT_SECONDS is given up (the
cluster holds a lock until every submission has answered, which a hung ``sbatch`` held forever:
the run, and its Ctrl-C, waited on it), and :func:`submit_jobs` waits for the answers before the
run writes anything: a run none of whose jobs were taken is one line quoting the submit command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import threading
import time

from ..errors import ConfigError, _short, check_range, count_text

SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub"}
STATUS_COMMANDS = {"slurm": "squeue --me", "pbs": "qstat -u $USER"}
SUBMIT_SECONDS = 60  # how long a job's submission may take before it is given up (no job taken)
SUBMIT_GRACE_SECONDS = 5  # and how much longer submit_jobs waits for the last answers to be recorded
NO_WORKER_SECONDS = 300  # no worker joined this long after the submissions: said once (queued, or failed to start)

# [cluster] keys of dask-jobqueue's SLURMCluster and PBSCluster whose values must be lists of strings
# (a string there is one #SBATCH line per character), strings, or whole numbers >= 1
CLUSTER_LISTS = ("job_extra_directives", "job_directives_skip", "job_script_prologue", "worker_extra_args",
                 "job_extra", "env_extra", "extra")
CLUSTER_STRINGS = ("memory", "walltime", "queue", "account", "project", "job_name", "interface", "shebang", "python",
                   "local_directory", "log_directory", "job_mem", "resource_spec", "name")
CLUSTER_COUNTS = ("jobs", "cores", "processes", "job_cpu")


def check_cluster_table(table, where=""):
    """ConfigError naming ``cluster.KEY`` (after ``where``, the study file) where a value of the
    study's ``[cluster]`` table is not of the kind dask-jobqueue takes (other keys are passed on,
    and dask-jobqueue names those it does not know)."""
    for key, value in table.items():
        field = f"{where}cluster.{key}"
        if key in CLUSTER_LISTS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(field, f"expected a list of strings, e.g. [\"--gres=gpu:1\"], got {_short(value)}")
        if key in CLUSTER_STRINGS and not isinstance(value, str):
            example = {"memory": '"24GB"', "walltime": '"02:00:00"'}.get(key, '"..."')
            raise ConfigError(field, f"expected a string, e.g. {example}, got {_short(value)}")
        if key in CLUSTER_COUNTS:
            check_range(field, value, 1, 10**5, integer=True)
    if "scheduler_options" in table and not isinstance(table["scheduler_options"], dict):
        raise ConfigError(f"{where}cluster.scheduler_options", "expected a table, e.g. { dashboard_address = "
                                                               f"\":8787\" }}, got {_short(table['scheduler_options'])}")


def check_submit_command(kind):
    """ConfigError unless the batch system's submit command is on the PATH: without it
    dask-jobqueue's jobs fail to start and the run would wait for workers forever."""
    command = SUBMIT_COMMANDS[kind]
    if shutil.which(command) is None:
        raise ConfigError("cluster", f"{kind} submits jobs with {command}, which is not on the PATH here; run "
                                     f"where {command} works (a login node), or join a running scheduler with "
                                     "--scheduler")


class Submissions:
    """The batch system's answers to one cluster's job submissions, as they come (from the
    cluster's event loop thread): the ids of the jobs it took, and why it took none for the others
    (its message refusing one, or no answer in time). ``clock``: seconds, since the submissions."""

    def __init__(self, kind, clock=time.monotonic):
        self.kind, self.command, self.clock = kind, SUBMIT_COMMANDS[kind], clock
        self.job_ids, self.failures = [], []
        self.started = None
        self.abandoned = threading.Event()  # set: the run stops, submissions not yet answered are given up
        self._lock = threading.Lock()

    def begin(self):
        """The jobs are being submitted now."""
        self.started = self.clock()

    def took(self, job_id):
        with self._lock:
            self.job_ids.append(str(job_id))

    def failed(self, message):
        with self._lock:
            self.failures.append(message)

    @property
    def answered(self):
        with self._lock:
            return len(self.job_ids) + len(self.failures)

    def waited(self):
        """Seconds since the jobs were submitted (0 before)."""
        return 0.0 if self.started is None else self.clock() - self.started

    def ids_text(self, limit=8):
        """The job ids taken, at most ``limit`` of them named: ``123, 124`` or ``123, ... (40 jobs)``."""
        with self._lock:
            ids = list(self.job_ids)
        if len(ids) <= limit:
            return ", ".join(ids)
        return f"{', '.join(ids[:limit - 1])}, ... ({count_text(len(ids), 'job')})"


class SubmitRefused(RuntimeError):
    """The submit command exited non-zero; the message is its standard error."""


def refusal_text(err):
    """One line of why a job was not taken: the submit command's standard error (its lines joined
    with "; "), else its exit status, else the exception's text."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__


async def submit_command(command):
    """The standard output of the submit command ``command`` (a list); SubmitRefused with its
    standard error where it exits non-zero. Cancelled (given up), it kills the command: one left
    running held a transport of the cluster's event loop, which warned when collected after the
    loop had closed. (dask-jobqueue's own call leaves it running.)"""
    # in a session of its own: given up, it is killed with whatever it started (a child holding
    # its pipes open kept wait() waiting: Python 3.11 wakes it when the pipes close)
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise SubmitRefused(err.decode(errors="replace").strip()
                            or f"exit status {proc.returncode}, nothing on its standard error")
    return out.decode(errors="replace")


def import_dask_jobqueue(kind):
    """The ``dask_jobqueue`` module, imported with this process's SIGINT handler kept: importing it
    sets one that calls ``sys.exit()`` (for its SLURMRunner), which made Ctrl-C end a run with
    exit status 0 and no line, its jobs cancelled but nothing said (spingpu.signals' handler is
    the one a run needs)."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError("cluster", f"{kind} needs dask-jobqueue: pip install 'spingpu[cluster]'") from None
    finally:
        if main and handler is not None and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)
    return dask_jobqueue


def _recording_job_class(job_cls, submissions):
    """``job_cls`` (dask-jobqueue's SLURMJob or PBSJob) whose submissions are recorded in
    ``submissions`` (also its class attribute: ``cluster.job_cls.submissions``). A job refused, or
    whose submission has not answered in SUBMIT_SECONDS, stays an empty slot (no job id: nothing to
    cancel at the end) instead of raising in the cluster's event loop, where the error became a
    logged traceback and nothing else; :func:`submit_jobs` says it."""
    from distributed.core import Status
    from distributed.deploy.spec import ProcessInterface

    class RecordedJob(job_cls):
        async def start(self):
            seconds, loop = SUBMIT_SECONDS, asyncio.get_running_loop()
            submission = asyncio.ensure_future(super().start())
            deadline = loop.time() + seconds
            while not submission.done():  # given up after SUBMIT_SECONDS, or at once when the run stops
                if submissions.abandoned.is_set() or loop.time() > deadline:
                    submission.cancel()
                    break
                await asyncio.wait([submission], timeout=0.1)
            try:
                await submission
            except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001 (a refusal, no answer: recorded)
                self.job_id = None
                if isinstance(err, asyncio.CancelledError):
                    message = (f"no answer in {seconds:g} s, {submissions.command} stopped; had it taken the job, "
                               f"{STATUS_COMMANDS[submissions.kind]} shows it")
                else:
                    message = refusal_text(err)
                submissions.failed(message)
                await ProcessInterface.start(self)
            else:
                submissions.took(self.job_id)

        async def _submit_job(self, script_filename):
            return await submit_command(shlex.split(self.submit_command) + [script_filename])

        async def close(self):  # the job cancelled (none for an empty slot): closed, as the cluster's close checks
            await super().close()
            self.status = Status.closed

    RecordedJob.submissions = submissions
    RecordedJob.__name__ = RecordedJob.__qualname__ = f"Recorded{job_cls.__name__}"
    return RecordedJob


def jobqueue_cluster(options, study_path=None):
    """(dask-jobqueue SLURMCluster or PBSCluster from the study's ``[cluster]`` table, jobs to
    start, its :class:`Submissions`); the cluster's ``job_script()`` shows what would be submitted.
    An error of the table names ``study_path`` (where given) and the key. The dashboard takes a
    free port unless the table (``scheduler_options``) or Dask's configuration names one: the
    default 8787 is often taken on a shared login node."""
    import dask

    dask_jobqueue = import_dask_jobqueue(options.cluster)
    where = f"{study_path}: " if study_path else ""
    kwargs = dict(options.cluster_options)
    check_cluster_table(kwargs, where)
    jobs = kwargs.pop("jobs", 1)
    kind = dask_jobqueue.SLURMCluster if options.cluster == "slurm" else dask_jobqueue.PBSCluster
    configured = dask.config.get(f"jobqueue.{options.cluster}.scheduler-options", {}) or {}
    kwargs["scheduler_options"] = {"dashboard_address": ":0", **configured, **kwargs.get("scheduler_options", {})}
    submissions = Submissions(options.cluster)
    try:
        cluster = kind(job_cls=_recording_job_class(kind.job_cls, submissions), **kwargs)
    except Exception as err:  # an unknown keyword, a value dask-jobqueue cannot use: say which, in one line
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        if "cores and memory" in message:
            message = "set cores and memory per job in the study's [cluster] table, e.g. cores = 8, memory = \"24GB\""
        raise ConfigError(f"{where}cluster", f"{options.cluster}: {message}") from None
    return cluster, jobs, submissions


def submit_jobs(cluster, jobs, submissions, log, where="", poll=0.05):
    """Submit the cluster's ``jobs`` and wait for the batch system's answers (each submission
    takes at most SUBMIT_SECONDS: :func:`_recording_job_class`): ConfigError quoting its message
    where it took none of them (nothing else can run the tasks); a line where it took some only,
    and a line naming the jobs taken."""
    submissions.begin()
    cluster.scale(jobs=jobs)
    deadline = SUBMIT_SECONDS + SUBMIT_GRACE_SECONDS
    # the answers, then the cluster holding its jobs (it closes only those it holds)
    while (submissions.answered < jobs or len(cluster.workers) < jobs) and submissions.waited() < deadline:
        time.sleep(poll)
    failed, taken = list(submissions.failures), len(submissions.job_ids)
    command, kind = submissions.command, submissions.kind
    if not taken:
        what = "the job" if jobs == 1 else f"any of the {jobs} jobs"
        raise ConfigError(f"{where}cluster", f"{kind}: {command} did not take {what} of the [cluster] table: "
                                             + (failed[0] if failed else f"no answer in {deadline:g} s"))
    if taken < jobs:
        log(f"{command} did not take {jobs - taken} of {jobs} jobs ({failed[0] if failed else 'no answer'}); the run "
            f"goes on with the {'other' if taken == 1 else f'{taken} others'}")
    they, their = ("it", "its") if taken == 1 else ("they", "their")
    log(f"submitted {count_text(taken, f'{kind} job')} ({submissions.ids_text()}): {their} Dask workers join when "
        f"{they} start{'s' if taken == 1 else ''} (the tasks wait until then; {STATUS_COMMANDS[kind]} shows the "
        f"queue); dashboard {cluster.dashboard_link}")


class JobsWatch:
    """What :func:`spingpu.studies.runner._watch_workers` says of a batch cluster's jobs during the
    run: once, that no worker has joined NO_WORKER_SECONDS after the submissions (the jobs wait in
    the queue, or ended at their start)."""

    def __init__(self, submissions):
        self.submissions = submissions
        self.told_no_worker = False

    def lines(self, workers_now, workers_ever):
        """The lines to say at one look, given the scheduler's workers now and whether any ever joined."""
        s = self.submissions
        if workers_now or workers_ever or self.told_no_worker or s.waited() < NO_WORKER_SECONDS or not s.job_ids:
            return []
        self.told_no_worker = True
        return [f"no Dask worker has joined {s.waited() / 60:.0f} min after the jobs were submitted ({s.ids_text()}): "
                f"they may wait in the queue ({STATUS_COMMANDS[s.kind]}), or have ended at their start (their output "
                "files say why; the [cluster] table's log_directory sets where they go); the tasks wait, Ctrl-C stops "
                "the run"]
