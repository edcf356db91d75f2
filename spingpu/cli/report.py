"""``spingpu report RESULTS.zarr``: the self-contained HTML report of a study and its CSV summary."""


def add_parser(sub):
    p = sub.add_parser("report", help="write the HTML report of a study's results",
                       description="Write a self-contained HTML report (figures embedded) of a results store, "
                                   "and the summary table as CSV beside it.")
    p.add_argument("results", help="results store (.zarr) written by spingpu run")
    p.add_argument("-o", "--out", help="HTML file (default: the store's name with .html)")
    p.add_argument("--threshold", type=float, default=0.9, help="accuracy counted as a trained chip (default 0.9)")
    p.set_defaults(run=run)


def run(args):
    from ..report import write_report

    path = write_report(args.results, args.out, args.threshold)
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0
