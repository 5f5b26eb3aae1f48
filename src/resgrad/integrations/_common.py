"""What the framework callbacks share: metric names, option checks, import errors."""

from __future__ import annotations

import importlib
from typing import Any

from ..probes.names import PREFIX, metric_name
from ._clip import metric_dict  # names.metric_dict, plus the post-clip rows'

__all__ = ["metric_name", "metric_dict", "require", "PREFIX"]

def require(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or raise a one-line ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs {module}: pip install 'resgrad[{extra}]'") from e
