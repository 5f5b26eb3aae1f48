"""resgrad: do residual connections solve the vanishing-gradient problem? Measure it.

Build plain and residual twins, measure gradient flow, train them side by side,
decompose the gradient by path length, lesion blocks, and report.

The torch-using names below are loaded on first use (PEP 562 module ``__getattr__``), so that
``import resgrad.results``, ``resgrad.verdicts`` and ``resgrad.report`` (which read finished
results and need no torch) do not import torch through this package.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # what static checkers and IDEs see; at run time each name loads on first use
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
    from .probes import GradientMonitor, gradient_correlation, jacobian_spectrum
    from .train import TrainConfig, evaluate, fit, load_run


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

# name -> (module, attribute in it; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "paths": (".paths", None),
    "Callback": (".callbacks", "Callback"),
    "DataBundle": (".data", "DataBundle"),
    "load_data": (".data", "load"),
    **{n: (".nets", n) for n in ("Block", "Plain", "Residual", "Scale", "adapt", "blocks", "build", "build_for",
                                 "gates", "list_models", "register_adapter", "register_model", "residual_blocks")},
    **{n: (".probes", n) for n in ("GradientMonitor", "gradient_correlation", "jacobian_spectrum")},
    **{n: (".train", n) for n in ("TrainConfig", "evaluate", "fit", "load_run")},
}


def __getattr__(name: str) -> Any:
    """Load a torch-using public name on first access and keep it (later lookups skip this)."""
    spec = _LAZY.get(name)
    if spec is None:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            # ``resgrad.nets`` after a bare ``import resgrad``: the package used to import its
            # subpackages eagerly, so code may reach them as attributes; import on first access.
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'resgrad' has no attribute {name!r}")
    module = importlib.import_module(spec[0], __name__)
    value = module if spec[1] is None else getattr(module, spec[1])
    if name == "build":
        _register_run_loader()
    globals()[name] = value
    return value


def _register_run_loader() -> None:
    """``resgrad.build(RUN_FOLDER)`` reads the trained model through resgrad.load_run; nets reads no run
    folder itself (it imports nothing above it), so the training layer is named here, imported on use."""
    from .nets.spec import register_run_loader

    register_run_loader(lambda path: importlib.import_module(".train", __name__).load_run(path))
    importlib.import_module(".pretrained", __name__)  # registers the pretrained:NAME and gguf:FILE SPECs


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
