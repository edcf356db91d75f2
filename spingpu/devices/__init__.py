"""Junction models, their variability and their readout."""

from .models import DeviceModel, Parameter, available_models, get_model, register_model
from .readout import Readout
from .variability import Variability, sample_layer

__all__ = ["DeviceModel", "Parameter", "Readout", "Variability", "available_models", "get_model",
           "register_model", "sample_layer"]
