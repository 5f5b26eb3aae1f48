"""The quantities :class:`resgrad.GradientMonitor` records, one per module over :mod:`._base`:
``param`` (gradient norms), ``activation``/``input`` (output and block-input gradients),
``weight``, ``update`` (‖Δw‖ and ‖Δw‖/‖w‖) and ``nonfinite_origin``."""

from ._base import COLUMNS, KINDS, ORIGIN_KIND, UNIT_KINDS, Quantity, StepData, make_row
from .activation import ActivationGrad
from .forward import ForwardNorms
from .origin import NonfiniteOrigin
from .param import ParamGrad
from .update import UpdateNorm
from .weight import WeightNorm

__all__ = ["COLUMNS", "KINDS", "ORIGIN_KIND", "UNIT_KINDS", "Quantity", "StepData", "make_row", "ParamGrad", "ActivationGrad", "ForwardNorms",
           "WeightNorm", "UpdateNorm", "NonfiniteOrigin"]
