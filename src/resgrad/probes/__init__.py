"""Measurements of any ``nn.Module``: gradient norms, Jacobian spectra, shattering.

Probes assume nothing about residual blocks (they use ``resgrad.nets.blocks``, or the
adapter registry's unit sites for a foreign model, only to label per-block rows) and
never import ``resgrad.paths``.
"""

from ._norms import robust_norm
from .jacobian import JacobianSpectrum, jacobian_spectrum
from .monitor import GradientMonitor
from .profile import block_gradient_profile
from .quantities import COLUMNS
from .shattering import GradientCorrelation, gradient_correlation, line_inputs

__all__ = [
    "GradientMonitor", "COLUMNS", "block_gradient_profile", "robust_norm",
    "JacobianSpectrum", "jacobian_spectrum",
    "GradientCorrelation", "gradient_correlation", "line_inputs",
]
