"""``spingpu run STUDY.toml``: run a study's sweep on Dask and store the results in zarr."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError
from .options import integer

DEFAULT_THRESHOLD = 0.9  # spingpu report's too


def add_parser(sub):
    p = sub.add_parser("run", help="run a study file's Monte Carlo sweep (Dask, zarr results)",
                       description="Run every (cell, chunk of networks) task of a study on a Dask cluster and "
                                   "store the results as they finish; --resume completes an interrupted run.")
    p.add_argument("study", help="study file (TOML)")
    p.add_argument("--out", help="results store (default results/<study name>.zarr)")
    p.add_argument("--resume", action="store_true", help="complete an existing store of the same study")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--scheduler", metavar="ADDRESS", help="join an existing Dask scheduler (tcp://host:port)")
    p.add_argument("--workers", type=integer, help="worker processes of the local cluster (default: one per core; "
                                                   "with the cuda backend one per GPU, and at most that)")
    p.add_argument("--cluster", default="local", help="local, slurm or pbs (from the study's [cluster] table)")
    p.add_argument("--backend", help="auto, cpu, numpy or cuda (default auto; with --resume the store's own)")
    p.add_argument("--networks-per-task", type=integer, help="networks trained per task (default: sized to the workers)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="test accuracy, a fraction from 0 to 1, counted as a trained chip (default 0.9)")
    p.set_defaults(run=run)


def run(args):
    import warnings

    from ..errors import MACHINE_ERRNOS, SpingpuWarning, os_error_text
    from ..stats import check_threshold
    from ..signals import discard_stop, stopped
    from ..studies.runner import RunOptions, TaskFailed, run_study, summary_table
    from ..studies.spec import load_study

    if args.out is not None and not args.out.strip():  # not the default's results/NAME.zarr
        raise ConfigError("out", "expected a store name, got an empty one (leave --out out for "
                                 "results/<study name>.zarr)")
    name = None if args.out is None else Path(args.out.strip()).name
    if name is not None and (name.startswith(".") or not name):
        raise ConfigError("out", f"{args.out!r}: expected a store name such as results/NAME.zarr, not a hidden one "
                                 "(names beginning with '.' are spingpu's temporaries)")
    if args.resume and args.overwrite:  # before the store is looked at: whether it exists or not
        raise ConfigError("resume", "--resume and --overwrite exclude each other")
    study = load_study(args.study)
    check_threshold(args.threshold)
    out = args.out or str(Path("results") / f"{study.name}.zarr")
    if args.out and not Path(args.out).parent.is_dir():  # results/ of the default is created
        from ..outputs import missing_folder

        raise ConfigError("out", missing_folder(Path(args.out).parent))
    folder = Path(out).parent
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():  # results/ a file, or a broken link
        raise ConfigError("out", f"{folder} is not a folder, and the store goes in it ({out}); move it, or choose "
                                 "another --out")
    if args.resume:  # the store must be this study's before anything else is read from it
        from ..studies.store import check_existing

        check_existing(out, study, None, True, False)
    backend = args.backend or (_store_backend(out) if args.resume else None) or "auto"
    import tomllib

    cluster_table = tomllib.loads(study.text).get("cluster", {})
    if cluster_table and (args.cluster == "local" or args.scheduler):
        where = f"the scheduler at {args.scheduler}" if args.scheduler else "the local cluster"
        warnings.warn(f"the study's [cluster] table ({', '.join(cluster_table)}) is for --cluster slurm or pbs; "
                      f"not used with {where}", SpingpuWarning, stacklevel=2)
        cluster_table = {}
    if args.scheduler and args.workers is not None:
        warnings.warn(f"workers: --workers {args.workers} starts local workers; with --scheduler the tasks run on "
                      "the scheduler's workers, however many they are", SpingpuWarning, stacklevel=2)
    options = RunOptions(out=out, resume=args.resume, overwrite=args.overwrite, scheduler=args.scheduler,
                         workers=args.workers, cluster=args.cluster, backend=backend,
                         networks_per_task=args.networks_per_task, cluster_options=cluster_table,
                         report=not args.no_report, threshold=args.threshold)
    from ..backends import get_backend

    get_backend(options.backend)  # a bad or unavailable backend fails before anything is written
    if not args.resume and Path(out).parent.is_dir():  # the store is named first, before its report
        from ..outputs import check_writable

        check_writable("out", out, store=True)
    if not args.no_report and Path(out).parent.is_dir():  # the report will not replace a file it did not write
        from ..report import check_report_targets, default_report_path

        check_report_targets(default_report_path(out), [p for p, _ in study.inputs], field="out",
                             hint="choose another --out, or pass --no-report", owner=(out, study.digests),
                             overwrite=args.overwrite)
    try:
        run_study(study, options)
    except TaskFailed as err:
        discard_stop()  # a Ctrl-C while the workers closed after the failure: the failure is what is said
        print(f"spingpu run: error: {err}", file=sys.stderr)
        print(f"spingpu run: the finished tasks are kept in {out}; fix the cause and rerun with --resume",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (spingpu.cli.main.Terminated)
        what, status = stopped(err)
        kept = _kept(out, args.threshold) if getattr(err, "store_is_ours", args.resume) else ""
        print(f"spingpu run: {what}{kept}", file=sys.stderr)
        return status
    except OSError as err:  # a full disk: what the store holds, and that --resume completes it once there is room
        if err.errno not in MACHINE_ERRNOS:
            raise
        what = os_error_text(err) if err.filename else f"out: {out}: {os_error_text(err)}"  # zarr's name no file
        kept = _kept(out, args.threshold) if getattr(err, "store_is_ours", args.resume) else ""
        print(f"spingpu run: error: {what}{kept}", file=sys.stderr)
        return 1
    try:
        print(summary_table(out, args.threshold))
        print(f"results: {out}")
        if not args.no_report:
            report = _report(out, args.threshold, args.overwrite)
            if report:
                from ..report import summary_csv_path

                print(f"report: {report} (summary: {summary_csv_path(report)})")
    except KeyboardInterrupt as err:  # every task is stored: the line says so, and how to make the report
        what, status = stopped(err)
        print(f"spingpu run: {what}{_kept(out, args.threshold)}", file=sys.stderr)
        return status
    return 0


def _kept(out, threshold=DEFAULT_THRESHOLD):
    """What a stopped run leaves in its store ``out`` (the run's own: created or resumed by it), as
    the end of its one line, with the ``spingpu report`` command that makes the report of the
    run's ``threshold``; nothing where the store cannot be read. A second stop meanwhile is the
    first again: dropped."""
    import contextlib
    import warnings

    from ..signals import deferred_interrupts
    from ..studies import store as results_store

    with deferred_interrupts(deliver=False), contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # done_tasks' warning of lost tasks: --resume says it
        done = results_store.done_tasks(out)
        if done.all():  # stopped after the last task, while the workers closed
            option = "" if threshold == DEFAULT_THRESHOLD else f" --threshold {threshold:g}"
            return f"; every task is stored in {out} (spingpu report {out}{option} makes its report)"
        if not done.any():
            return f"; no task had finished: {out} holds none (rerun with --resume to start it, or --overwrite)"
        return (f"; the finished tasks ({int(done.sum())} of {done.size}) are kept in {out}: rerun with --resume to "
                "complete it")
    return ""


def _store_backend(out):
    """The backend a store was written with, which ``--resume`` keeps unless told otherwise;
    a ConfigError if it cannot run here (results differ between backends by float rounding, so
    one store holds one backend's)."""
    from ..backends import get_backend
    from ..studies.store import store_attrs

    backend = store_attrs(out).get("backend")
    if backend is None:
        return None
    try:
        get_backend(backend)
    except ConfigError as err:
        raise ConfigError("backend", f"{out} was written with the {backend!r} backend, which cannot run here "
                                     f"({err}); resume it where it can, or start a new store") from None
    return backend


def _report(out, threshold, overwrite=False):
    """The HTML report (and its summary, NAME.summary.csv) beside the store (``overwrite``: also
    over another study's report there, as the store was checked before the run)."""
    from ..report import write_report

    return write_report(out, threshold=threshold, overwrite=overwrite)
