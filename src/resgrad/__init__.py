"""resgrad: do residual connections solve the vanishing-gradient problem? Measure it.

Build plain and residual twins, measure gradient flow, train them side by side,
decompose the gradient by path length, lesion blocks, and report.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resgrad")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

from . import paths
from .callbacks import Callback
from .data import DataBundle
from .data import load as load_data
from .nets import (
    Block,
    Plain,
    Residual,
    Scale,
    adapt,
    blocks,
    build,
    build_for,
    gates,
    list_models,
    register_adapter,
    register_model,
    residual_blocks,
)
from .nets.spec import register_run_loader as _register_run_loader
from .probes import GradientMonitor, gradient_correlation, jacobian_spectrum
from .train import TrainConfig, evaluate, fit, load_run

_register_run_loader(load_run)  # resgrad.build(RUN_FOLDER): nets reads no run folder itself

__all__ = [
    "__version__",
    "Block", "Plain", "Residual", "Scale",
    "blocks", "residual_blocks", "gates",
    "build", "build_for", "list_models", "register_model",
    "DataBundle", "load_data",
    "Callback",
    "GradientMonitor", "jacobian_spectrum", "gradient_correlation",
    "adapt", "register_adapter", "paths",
    "fit", "TrainConfig", "evaluate", "load_run",
]
