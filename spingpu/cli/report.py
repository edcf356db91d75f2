"""``spingpu report RESULTS.zarr``: the self-contained HTML report of a study and its CSV summary."""

from .run import DEFAULT_THRESHOLD


def add_parser(sub):
    p = sub.add_parser("report", help="write the HTML report of a study's results",
                       description="Write a self-contained HTML report (figures embedded) of a results store, "
                                   "and the summary table as CSV beside it (NAME.summary.csv for NAME.html). An existing "
                                   "file is replaced only if it is an earlier report of this store's place or study (of any with "
                                   "--overwrite).")
    p.add_argument("results", help="results store (.zarr) written by spingpu run")
    p.add_argument("-o", "--out", help="HTML file (default: the store's name with .html)")
    p.add_argument("--threshold", type=float,
                   help="test accuracy, a fraction from 0 to 1, counted as a trained chip (default: the one the "
                        f"run that wrote the store used, else {DEFAULT_THRESHOLD:g})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier report of another study's results (never a file spingpu report did not "
                        "write)")
    p.set_defaults(run=run)


def run(args):
    import sys

    from ..errors import ConfigError
    from ..report import summary_csv_path, write_report
    from ..studies.store import open_results, store_writer, task_progress

    if args.out is not None and not args.out.strip():  # not the default NAME.html
        raise ConfigError("out", "expected a file name, got an empty one (leave -o out for the store's name "
                                 "with .html)")

    path = write_report(args.results, args.out, args.threshold, overwrite=args.overwrite)
    with open_results(args.results) as ds:
        done, tasks = task_progress(ds)
    if done < tasks:
        writer = store_writer(args.results)
        print(f"spingpu report: warning: {args.results} is incomplete: {done} of {tasks} tasks finished; the "
              "statistics are over the networks of finished tasks only"
              + (f" (a run, {writer}, is writing it now)" if writer else ""), file=sys.stderr)
    print(f"wrote {path} and {summary_csv_path(path)}")
    return 0
