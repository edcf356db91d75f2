"""Batch-system clusters for ``spingpu run --cluster slurm|pbs``: dask-jobqueue's ``SLURMCluster``
and ``PBSCluster`` made from the study's ``[cluster]`` table, and their jobs' submissions watched.

dask-jobqueue submits a cluster's jobs in the background (``cluster.scale``): a job the batch
system refuses (an unknown partition or account, a walltime beyond the queue's limit, a memory
request no node has) would be a traceback of some forty lines, and then a run waiting for workers
that never join, its store already made. Here each submission's answer is recorded
(:class:`Submissions`) and :func:`submit_jobs` waits for them before the run writes anything: a run
whose every job is refused is one line quoting the submit command's own message.
"""

from __future__ import annotations

import shutil
import threading
import time

from ..errors import ConfigError, _short, check_range, count_text

SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub"}
STATUS_COMMANDS = {"slurm": "squeue --me", "pbs": "qstat -u $USER"}
SUBMIT_SECONDS = 60  # how long a run waits for the batch system to answer its jobs' submissions
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
    cluster's event loop thread): the ids of the jobs it took, and its messages for those it
    refused. ``clock``: seconds, for the time since the first submission."""

    def __init__(self, kind, clock=time.monotonic):
        self.kind, self.command, self.clock = kind, SUBMIT_COMMANDS[kind], clock
        self.job_ids, self.refusals = [], []
        self.started, self.jobs = None, 0
        self._lock = threading.Lock()

    def begin(self, jobs):
        """``jobs`` jobs are being submitted now."""
        self.started, self.jobs = self.clock(), jobs

    def took(self, job_id):
        with self._lock:
            self.job_ids.append(str(job_id))

    def refused(self, message):
        with self._lock:
            self.refusals.append(message)

    @property
    def answered(self):
        with self._lock:
            return len(self.job_ids) + len(self.refusals)

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


def refusal_text(err):
    """One line of what the submit command said when it refused a job: its standard error (as
    dask-jobqueue's RuntimeError quotes it), else its exit code, else the exception."""
    text = str(err)
    if "stderr:" in text:
        said = "; ".join(line.strip() for line in text.split("stderr:", 1)[1].splitlines() if line.strip())
        if said:
            return said
        code = text.split("Exit code:", 1)[1].split()[0] if "Exit code:" in text else "?"
        return f"exit status {code}, nothing on its standard error"
    return " ".join(line.strip() for line in (text or type(err).__name__).splitlines() if line.strip())


def import_dask_jobqueue(kind):
    """The ``dask_jobqueue`` module, imported with this process's SIGINT handler kept: importing it
    sets one that calls ``sys.exit()`` (for its SLURMRunner), which made Ctrl-C end a run with
    exit status 0 and no line, its jobs cancelled but nothing said (spingpu.signals' handler is
    the one a run needs)."""
    import signal

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
    ``submissions`` (also its class attribute: ``cluster.job_cls.submissions``). A refused job stays an empty slot (no job id: nothing to cancel at the end)
    instead of raising in the cluster's event loop, where the error became a logged traceback and
    nothing else; the run says it (:func:`submit_jobs`, :func:`spingpu.studies.runner._watch_workers`)."""
    from distributed.deploy.spec import ProcessInterface

    class RecordedJob(job_cls):
        async def start(self):
            try:
                await super().start()
            except Exception as err:  # noqa: BLE001 (the batch system's refusal, recorded and said)
                self.job_id = None
                submissions.refused(refusal_text(err))
                await ProcessInterface.start(self)
            else:
                submissions.took(self.job_id)

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


def submit_jobs(cluster, jobs, submissions, log, where="", seconds=SUBMIT_SECONDS, poll=0.05):
    """Submit the cluster's ``jobs`` and wait, at most ``seconds``, for the batch system's answers:
    ConfigError quoting its message where it refused every job (nothing else can run the tasks);
    a line where it refused some, or has not answered for some; a line naming the jobs taken."""
    submissions.begin(jobs)
    cluster.scale(jobs=jobs)
    while submissions.answered < jobs and submissions.waited() < seconds:
        time.sleep(poll)
    refused, taken = list(submissions.refusals), len(submissions.job_ids)
    command, kind = submissions.command, submissions.kind
    if refused and not taken and len(refused) + taken == jobs:
        what = "the job" if jobs == 1 else f"all {jobs} jobs"
        raise ConfigError(f"{where}cluster", f"{kind}: {command} refused {what} of the [cluster] table: {refused[0]}")
    if refused:
        log(f"{command} refused {len(refused)} of {jobs} jobs ({refused[0]}); the run goes on with the "
            + ("other" if jobs - len(refused) == 1 else "others"))
    unanswered = jobs - len(refused) - taken
    if unanswered:
        log(f"{command} has not answered for {unanswered} of {jobs} jobs in {seconds} s; the run goes on, and says "
            "if it refuses them")
    if taken:
        they, their = ("it", "its") if taken == 1 else ("they", "their")
        log(f"submitted {count_text(taken, f'{kind} job')} ({submissions.ids_text()}): {their} Dask workers join when "
            f"{they} start{'s' if taken == 1 else ''} (the tasks wait until then; {STATUS_COMMANDS[kind]} shows the "
            f"queue); dashboard "
            f"{cluster.dashboard_link}")


class JobsWatch:
    """What :func:`spingpu.studies.runner._watch_workers` says of a batch cluster's jobs during the
    run: refusals that came after :func:`submit_jobs` stopped waiting, and, once, that no worker
    has joined NO_WORKER_SECONDS after the submissions (the jobs wait in the queue, or ended at
    their start)."""

    def __init__(self, submissions):
        self.submissions = submissions
        self.said = len(submissions.refusals)  # said by submit_jobs
        self.told_no_worker = False

    def lines(self, workers_now, workers_ever):
        """The lines to say at one look, given the scheduler's workers now and whether any ever joined."""
        s, out = self.submissions, []
        refused = list(s.refusals)
        if len(refused) > self.said:
            out.append(f"{s.command} refused {count_text(len(refused) - self.said, 'more job')} ({refused[-1]}); "
                       f"{len(refused)} of {s.jobs} refused in all")
            self.said = len(refused)
        if (not workers_now and not workers_ever and not self.told_no_worker
                and s.waited() >= NO_WORKER_SECONDS and s.job_ids):
            self.told_no_worker = True
            out.append(f"no Dask worker has joined {s.waited() / 60:.0f} min after the jobs were submitted "
                       f"({s.ids_text()}): they may wait in the queue ({STATUS_COMMANDS[s.kind]}), or have ended at "
                       "their start (their output files say why; the [cluster] table's log_directory sets where "
                       "they go); the tasks wait, Ctrl-C stops the run")
        return out
