"""The installed version of resgrad, in a module that imports nothing else of resgrad (and no torch).

The package ``__init__`` re-exports it as ``resgrad.__version__``; ``io.environment`` reads it
here so that the torch-free layers (results, verdicts, report) never load the package's torch names.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("resgrad")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"
