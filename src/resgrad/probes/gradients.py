"""Gradient probes, by the 0.1 import path: ``from resgrad.probes.gradients import ...``.

The code lives in one module per concern: :mod:`.monitor` (:class:`GradientMonitor`),
:mod:`.quantities` (what it measures, one module per quantity), :mod:`._norms`,
:mod:`._taps` (compile-mode taps), :mod:`._dtensor` (distributed reduction) and
:mod:`.profile` (:func:`block_gradient_profile`, the flow experiment's exact profile).
"""

from ._norms import robust_norm
from .monitor import Activations, GradientMonitor, Schedule
from .profile import block_gradient_profile
from .quantities import COLUMNS, ORIGIN_KIND

__all__ = ["GradientMonitor", "block_gradient_profile", "robust_norm", "COLUMNS", "ORIGIN_KIND",
           "Schedule", "Activations"]
