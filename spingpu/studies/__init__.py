"""Monte Carlo studies: study files, Dask-coordinated sweeps, resumable xarray/zarr results."""

from .spec import Axis, Study, load_study
from .store import load_results, open_results

__all__ = ["Axis", "Study", "load_results", "load_study", "open_results"]
