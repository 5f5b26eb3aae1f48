"""Datasets by name, offline: ``load("mnist1d")``, ``load("cifar10", data_dir=...)``.

Each returns a :class:`DataBundle` of tensors with documented shapes.
"""

from .bundle import DataBundle
from .synthetic import synthetic

__all__ = ["DataBundle", "load", "synthetic", "DATASETS"]

DATASETS = ("mnist1d", "cifar10", "digits", "synthetic")


def load(name: str, **kwargs) -> DataBundle:
    """Load a dataset by name; keyword arguments go to its loader."""
    key = str(name).strip().lower()
    if key == "synthetic":
        return synthetic(**kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
