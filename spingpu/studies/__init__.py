"""Monte Carlo studies: study files, Dask-coordinated sweeps, resumable xarray/zarr results."""

from .runner import RunOptions, TaskFailed, run_study, summary_table
from .spec import Axis, Study, load_study
from .store import load_results, open_results

__all__ = ["Axis", "RunOptions", "Study", "TaskFailed", "load_results", "load_study", "open_results", "run_study",
           "summary_table"]
