"""Junction models, their variability and their readout."""

from .models import DeviceModel, Parameter, available_models, get_model, register_model
from .readout import Readout
from .variability import Variability, junction_curves, sample_layer

__all__ = ["DeviceModel", "Parameter", "Readout", "Variability", "available_models", "get_model",
           "junction_curves", "register_model", "sample_layer"]
