"""spingpu: GPU kernels for large-scale variability studies of spintronic neural networks.

Importing spingpu is cheap: Dask, zarr, matplotlib and CuPy are imported where they are used.
Units are SI throughout (A, V, ohm, A/m, K, s).
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("spingpu")
except PackageNotFoundError:  # a source checkout that was not installed
    __version__ = "0+unknown"

from .backends import Backend, available_backends, get_backend
from .devices import (DeviceModel, Parameter, Readout, Variability, available_models, get_model,
                      junction_curves, register_model, sample_layer)
from .datasets import Dataset, from_arrays, from_splits, load_dataset
from .errors import (CoarseTimeStepWarning, ConfigError, ExtrapolationWarning, SpingpuWarning,
                     UnusedSettingWarning)
from .studies import load_results, load_study, open_results
from .training import Distillation, PairNeuron, Schedule, TrainConfig, train

__all__ = ["Backend", "CoarseTimeStepWarning", "ConfigError", "Dataset", "DeviceModel", "Distillation",
           "ExtrapolationWarning", "PairNeuron", "Parameter", "Readout", "Schedule", "SpingpuWarning", "TrainConfig",
           "UnusedSettingWarning", "Variability", "__version__", "available_backends", "available_models",
           "from_arrays", "from_splits", "get_backend", "get_model", "junction_curves", "load_dataset",
           "load_results", "load_study", "open_results", "register_model", "sample_layer", "train"]
