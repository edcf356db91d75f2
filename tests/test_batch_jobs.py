"""`spingpu run --cluster slurm|pbs`: the study's [cluster] table becomes dask-jobqueue's job
script, and the batch system's answers to the jobs' submissions are said.

No SLURM or PBS here: fake ``sbatch`` / ``scancel`` scripts on the PATH stand in for them. One
runs the job script it is given in a process group of its own, as a batch system would on a
node, so that a whole run trains through real jobs' Dask workers; others refuse the job with a
batch system's message, or take it and never start it (a job waiting in the queue).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from spingpu.cli.main import main
from spingpu.errors import ConfigError
from spingpu.studies import batch_jobs, load_study, runner
from studyutil import BASE, run_main, write

pytest.importorskip("dask_jobqueue")

REFUSAL = ("sbatch: error: invalid partition specified: gpux\n"
           "sbatch: error: Batch job submission failed: Invalid partition name specified")
# the job script is copied before sbatch returns (dask-jobqueue deletes it then), and runs in a
# session of its own, whose process group scancel kills: as a batch system ends a job's processes
RUNS_THE_JOB = """#!/bin/sh
copy="$FAKE_BATCH/job.$$.sh"
cp "$1" "$copy"
setsid sh "$copy" > "$copy.log" 2>&1 < /dev/null &
echo "Submitted batch job $!"
"""
RUNS_REFUSES_HANGS = """#!/bin/sh
if mkdir "$FAKE_BATCH/first" 2>/dev/null; then exec "$FAKE_BATCH/run-the-job" "$1"; fi
if mkdir "$FAKE_BATCH/second" 2>/dev/null; then
    printf '%s\n' "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
    exit 1
fi
sleep 40
echo "Submitted batch job 999999"
"""
QUEUES_THE_JOB = """#!/bin/sh
echo "Submitted batch job $$"
"""
REFUSES_THE_JOB = f"""#!/bin/sh
printf '{REFUSAL}\n' >&2
exit 1
"""
SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_BATCH/scancel.log"
for job in "$@"; do kill -TERM -- "-$job" 2>/dev/null; done
exit 0
"""
CLUSTER = '[cluster]\ncores = 1\nmemory = "2GB"\n'


def fake_slurm(tmp_path, monkeypatch, sbatch):
    """A folder (beside tmp_path: the tests list what a run wrote there) with ``sbatch`` (the
    script given) and ``scancel`` first on the PATH; scancel appends its job ids to scancel.log."""
    folder = tmp_path.parent / f"{tmp_path.name}-slurm"
    folder.mkdir()
    for name, text in (("sbatch", sbatch), ("scancel", SCANCEL), ("run-the-job", RUNS_THE_JOB)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_BATCH", str(folder))
    return folder


def cancelled(folder):
    log = folder / "scancel.log"
    return sorted(log.read_text().split()) if log.exists() else []


def job_processes_left(folder, seconds=30):
    """The process groups of the jobs the fake sbatch ran that still have processes, after
    waiting up to ``seconds`` for them to end."""
    groups = [int(p.name.split(".")[1]) for p in folder.glob("job.*.sh")]
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for group in groups:
            try:
                os.killpg(group, 0)
                alive.append(group)
            except ProcessLookupError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


@pytest.mark.parametrize("kind, expected", [
    ("slurm", ["#SBATCH -p gpu", "#SBATCH -A proj", "#SBATCH -t 01:00:00", "#SBATCH --gres=gpu:1",
               "#SBATCH --cpus-per-task=4"]),
    ("pbs", ["#PBS -q gpu", "#PBS -A proj", "#PBS -l walltime=01:00:00", "#PBS -l select=1:ngpus=1"]),
])
def test_cluster_table_becomes_the_job_script(tmp_path, kind, expected):
    # No SLURM or PBS here: the job script dask-jobqueue would submit is checked instead.
    extra = ["--gres=gpu:1"] if kind == "slurm" else ["-l select=1:ngpus=1"]
    table = dict(cores=4, memory="16GB", processes=1, queue="gpu", account="proj", walltime="01:00:00",
                 job_extra_directives=extra, jobs=3)
    opts = runner.RunOptions(out=str(tmp_path / "r.zarr"), cluster=kind, cluster_options=table)
    cluster, jobs, _ = batch_jobs.jobqueue_cluster(opts)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert jobs == 3
    for line in expected:
        assert line in script, script
    assert "distributed.cli.dask_worker" in script and "--nthreads 4" in script


def test_unknown_cluster_keyword_is_one_line(tmp_path):
    opts = runner.RunOptions(out=str(tmp_path / "r.zarr"), cluster="slurm", cluster_options={"queu": "gpu"})
    with pytest.raises(ConfigError, match=r"^cluster: slurm: .*queu"):
        batch_jobs.jobqueue_cluster(opts)


def fake_submit_commands(tmp_path, monkeypatch):
    """sbatch and qsub on the PATH (scripts that fail), so that a run reaches its [cluster] table."""
    bin_dir = tmp_path.parent / f"{tmp_path.name}-bin"
    bin_dir.mkdir()
    for command in ("sbatch", "qsub"):
        (bin_dir / command).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def test_bad_cluster_table_writes_nothing(tmp_path, monkeypatch, capsys):
    fake_submit_commands(tmp_path, monkeypatch)
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\nnetworks = 2\n[dataset]\nname = "iris"\n[training]\nepochs = 1\n'
                     '[cluster]\nqueu = "gpu"\n')
    monkeypatch.chdir(tmp_path)
    rc = main(["run", str(study), "--cluster", "slurm", "--out", str(tmp_path / "r.zarr")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "cluster: slurm: " in err and "queu" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


@pytest.mark.parametrize("table, message", [
    ("", 'cluster: slurm: set cores and memory per job in the study\'s [cluster] table, e.g. cores = 8, memory = "24GB"'),
    ('cores = 2\nmemory = "4GB"\njobs = 0\n', "cluster.jobs: 0 is out of range; allowed: 1 <= value <= 100000"),
    ('cores = 2\nmemory = "4GB"\nprocesses = 0\n',  # dask-jobqueue divided by it
     "cluster.processes: 0 is out of range; allowed: 1 <= value <= 100000"),
    ('cores = "eight"\nmemory = "4GB"\n', "cluster.cores: expected an integer, got 'eight'"),
    ('cores = 2\nmemory = "4GB"\njob_extra_directives = "--gres=gpu"\n',  # an #SBATCH line per character
     'cluster.job_extra_directives: expected a list of strings, e.g. ["--gres=gpu:1"], got \'--gres=gpu\''),
    ('cores = 2\nmemory = "4GB"\nwalltime = 5\n', 'cluster.walltime: expected a string, e.g. "02:00:00", got 5'),
])
def test_an_incomplete_cluster_table_is_one_whole_line(tmp_path, monkeypatch, capsys, table, message):
    pytest.importorskip("dask_jobqueue")
    fake_submit_commands(tmp_path, monkeypatch)
    study = write(tmp_path / "s.toml", 'name = "s"\n' + BASE + "[cluster]\n" + table)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(study), "--cluster", "slurm", "--out", str(tmp_path / "r.zarr")]) == 2
    assert capsys.readouterr().err == f"spingpu run: error: {study}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


@pytest.mark.parametrize("kind, command", [("slurm", "sbatch"), ("pbs", "qsub")])
def test_a_batch_cluster_without_its_submit_command_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys, kind, command):
    """Without sbatch / qsub the jobs never start and the run would wait for workers forever."""
    pytest.importorskip("dask_jobqueue")
    study = write(tmp_path / "s.toml", 'name = "s"\n' + BASE + '[cluster]\ncores = 2\nmemory = "4GB"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no batch system here
    assert main(["run", str(study), "--cluster", kind, "--out", str(tmp_path / "r.zarr")]) == 2
    assert capsys.readouterr().err == (f"spingpu run: error: cluster: {kind} submits jobs with {command}, which is not "
                                       f"on the PATH here; run where {command} works (a login node), or join a "
                                       "running scheduler with --scheduler\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]



def test_a_slurm_run_trains_through_the_job_taken_says_the_others_and_cancels_its_job(tmp_path, monkeypatch):
    """Three jobs: sbatch takes the first (which runs, its Dask worker joining the run), refuses
    the second and does not answer for the third (40 s; given up after SUBMIT_SECONDS, here 3 s:
    the cluster held its lock until every submission answered, and the run waited with it). The
    run says so, trains every network on the one job's worker, stores the same numbers as the task
    trained in this process, and cancels the job it submitted at its end."""
    monkeypatch.setattr(batch_jobs, "SUBMIT_SECONDS", 3)
    folder = fake_slurm(tmp_path, monkeypatch, RUNS_REFUSES_HANGS)
    study_file = write(tmp_path / "s.toml", 'name = "s"\n' + BASE + CLUSTER + "jobs = 3\n")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main(["run", str(study_file), "--cluster", "slurm", "--backend", "numpy",
                             "--no-report"])
    assert rc == 0, err
    lines = out.splitlines()
    job = cancelled(folder)
    assert len(job) == 1, (job, out)
    assert lines[0] == ("sbatch did not take 2 of 3 jobs (sbatch: error: QOSMaxSubmitJobPerUserLimit); the run goes "
                        "on with the other")
    assert lines[1].startswith(f"submitted 1 slurm job ({job[0]}): its Dask workers join when it starts (the tasks "
                               "wait until then; squeue --me shows the queue); dashboard http")
    assert ":8787/" not in lines[1]  # a free port: 8787 is often taken on a shared login node
    assert lines[2] == "study s: 1 cell x 2 networks, 1 task of up to 2 networks per cell; 1 task to run"
    assert "Traceback" not in err and "sbatch" not in err, err
    assert job_processes_left(folder) == []

    from spingpu.studies.tasks import train_task

    study = load_study(study_file)
    expected = train_task(study, 0, 0, study.networks, "numpy", 1)["test_acc"]
    with xr.open_zarr(tmp_path / "results" / "s.zarr") as ds:
        np.testing.assert_array_equal(ds["test_acc"].values.ravel(), expected)


def test_a_run_whose_every_job_is_refused_is_one_line_quoting_sbatch_and_writes_nothing(tmp_path, monkeypatch,
                                                                                        capsys):
    folder = fake_slurm(tmp_path, monkeypatch, REFUSES_THE_JOB)
    study = write(tmp_path / "s.toml", 'name = "s"\n' + BASE + CLUSTER + 'queue = "gpux"\njobs = 2\n')
    monkeypatch.chdir(tmp_path)
    made = []  # the clusters (each with its scheduler) the run starts: one
    monkeypatch.setattr(runner, "jobqueue_cluster", lambda *a: made.append(batch_jobs.jobqueue_cluster(*a)) or made[-1])
    assert main(["run", str(study), "--cluster", "slurm", "--no-report"]) == 2
    assert len(made) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"spingpu run: error: {study}: cluster: slurm: sbatch did not take any of the 2 jobs of the "
                            "[cluster] table: sbatch: error: invalid partition specified: gpux; sbatch: error: Batch "
                            "job submission failed: Invalid partition name specified\n")
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    assert cancelled(folder) == []  # no job was taken: none to cancel


def test_ctrl_c_while_the_jobs_wait_in_the_queue_stops_the_run_in_one_line_and_cancels_them(tmp_path, monkeypatch):
    """Importing dask_jobqueue set a SIGINT handler that calls sys.exit(): Ctrl-C ended such a run
    with exit status 0 and nothing said. Now it is the run's stop: 130, one line, jobs cancelled."""
    folder = fake_slurm(tmp_path, monkeypatch, QUEUES_THE_JOB)
    study = write(tmp_path / "s.toml", 'name = "s"\n' + BASE + CLUSTER + "jobs = 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "spingpu.cli.main", "run", str(study), "--cluster", "slurm",
                             "--backend", "numpy", "--no-report"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = []
        for line in proc.stdout:  # the run is waiting for the jobs' workers once it has said its tasks
            said.append(line)
            if line.startswith("study s:"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (said, err)
    assert err.splitlines()[-1] == ("spingpu run: interrupted; no task had finished: results/s.zarr holds none "
                                    "(rerun with --resume to start it, or --overwrite)"), err
    assert "Traceback" not in err, err
    submitted = said[0].split("(")[1].split(")")[0].split(", ")
    assert said[0].startswith("submitted 2 slurm jobs") and len(submitted) == 2, said
    assert cancelled(folder) == sorted(submitted)


def test_no_worker_long_after_the_submissions_is_said_once_by_the_runs_watch():
    """No worker has joined NO_WORKER_SECONDS after the jobs were taken (queued, or ended at their
    start): one line, from the watch the run keeps (runner._watch_workers), not one per look."""
    import threading

    from spingpu.studies.batch_jobs import NO_WORKER_SECONDS, JobsWatch, Submissions

    now = [0.0]
    s = Submissions("pbs", clock=lambda: now[0])
    s.begin()
    s.took("77")
    watch = JobsWatch(s)
    assert watch.lines(0, False) == []
    now[0] = NO_WORKER_SECONDS - 1
    assert watch.lines(0, False) == []
    now[0] = NO_WORKER_SECONDS + 1
    line = (f"no Dask worker has joined {NO_WORKER_SECONDS // 60} min after the jobs were submitted (77): they may "
            "wait in the queue (qstat -u $USER), or have ended at their start (their output files say why; the "
            "[cluster] table's log_directory sets where they go); the tasks wait, Ctrl-C stops the run")

    class NoWorkers:  # a scheduler without workers, for five looks
        def __init__(self, stop):
            self.stop, self.looks = stop, 0

        def scheduler_info(self):
            self.looks += 1
            if self.looks > 5:
                self.stop.set()
            return {"workers": {}}

    stop, said = threading.Event(), []
    runner._watch_workers(NoWorkers(stop), stop, said.append, had=0, every=0.0, jobs=watch)
    assert said == [line]
    assert JobsWatch(s).lines(0, True) == [] and JobsWatch(s).lines(2, True) == []  # workers joined: jobs started


@pytest.mark.parametrize("script, text", [
    ("printf 'sbatch: error: a\\n  b  \\n' >&2; exit 1", "sbatch: error: a; b"),
    ("echo 'no' ; exit 3", "exit status 3, nothing on its standard error"),
])
def test_a_refusal_is_the_submit_commands_standard_error_in_one_line(script, text):
    import asyncio

    with pytest.raises(batch_jobs.SubmitRefused) as refused:
        asyncio.run(batch_jobs.submit_command(["sh", "-c", script]))
    assert batch_jobs.refusal_text(refused.value) == text
    assert asyncio.run(batch_jobs.submit_command(["sh", "-c", "echo Submitted batch job 12"])) == \
        "Submitted batch job 12\n"
    assert batch_jobs.refusal_text(ValueError("Could not parse job id\nJob id regexp is x")) == \
        "Could not parse job id; Job id regexp is x"


def test_a_submission_given_up_stops_its_command(tmp_path):
    """Cancelled (no answer in time, or the run stopped), the submit command is killed with the
    children holding its pipes (here a sleep of 60 s: the cancelled call returns at once), not left
    running with a transport of the cluster's loop (which warned when collected after the loop closed)."""
    import asyncio

    pid_file = tmp_path / "pid"

    async def give_up():
        task = asyncio.ensure_future(batch_jobs.submit_command(["sh", "-c", f"echo $$ > {pid_file}; sleep 60"]))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(give_up())
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_importing_dask_jobqueue_keeps_the_runs_sigint_handler():
    code = ("import signal\n"
            "from spingpu.studies.batch_jobs import import_dask_jobqueue\n"
            "handler = lambda *_: None\n"
            "signal.signal(signal.SIGINT, handler)\n"
            "import_dask_jobqueue('slurm')\n"
            "import sys\n"
            "assert 'dask_jobqueue' in sys.modules\n"
            "assert signal.getsignal(signal.SIGINT) is handler, signal.getsignal(signal.SIGINT)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_ctrl_c_while_sbatch_does_not_answer_stops_the_run_at_once(tmp_path, monkeypatch):
    """A hung submission held the cluster's lock, and closing the cluster waited on it: Ctrl-C
    acted only when sbatch answered (or never). Now the submission is given up at once."""
    folder = fake_slurm(tmp_path, monkeypatch, '#!/bin/sh\ntouch "$FAKE_BATCH/asked"\nsleep 60\n'
                                               'echo "Submitted batch job 1"\n')
    study = write(tmp_path / "s.toml", 'name = "s"\n' + BASE + CLUSTER)
    proc = subprocess.Popen([sys.executable, "-m", "spingpu.cli.main", "run", str(study), "--cluster", "slurm",
                             "--backend", "numpy", "--no-report"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "asked").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (folder / "asked").exists(), proc.communicate(timeout=60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)  # not the 60 s sbatch takes
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.splitlines()[-1] == "spingpu run: interrupted", err
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
