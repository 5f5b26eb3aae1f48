"""Measurements of any ``nn.Module``: gradient norms, Jacobian spectra, shattering.

Probes assume nothing about residual blocks (they use ``resgrad.nets.blocks`` only to
label per-block rows when a model has them) and never import ``resgrad.paths``.
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
