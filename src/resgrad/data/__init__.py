"""Datasets by name, offline: ``load("mnist1d")``, ``load("cifar10", data_dir=...)``.

Each returns a :class:`DataBundle` of tensors in memory: x float32, normalised with
train statistics; y int64 class indices in ``0..num_classes-1``.

=========  ===============================  =============  =======  ==========================
name       x shape                          train / test   classes  source
=========  ===============================  =============  =======  ==========================
mnist1d    (N, 1, 40); flat: (N, 40)        4000 / 1000    10       generated offline, cached
cifar10    (N, 3, 32, 32)                   50000 / 10000  10       local folder or .tar.gz
digits     (N, 1, 8, 8); flat: (N, 64)      1438 / 359     10       scikit-learn (bundled)
synthetic  (N, *shape), default (N, 1, 40)  1000 / 200     10       seeded Gaussian classes
text       ids (N, seq_len), y: next ids    90% / 10%      chars    a local text file (path=)
=========  ===============================  =============  =======  ==========================

Only cifar10 has an augmentation (He et al. 2015 §4.2 pad-crop-flip), applied by
``DataBundle.batches(train=True)``. Caches live in ``cache_dir`` / ``$RESGRAD_CACHE`` /
the user cache folder; CIFAR-10 is found in ``data_dir`` / ``$RESGRAD_DATA``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from .bundle import DataBundle
from .cifar10 import cifar10
from .digits import digits
from .mnist1d import mnist1d
from .synthetic import synthetic
from .text import text

__all__ = ["DataBundle", "load", "DATASETS", "mnist1d", "cifar10", "digits", "synthetic", "text"]

_LOADERS: dict[str, Callable[..., DataBundle]] = {
    "mnist1d": mnist1d,
    "cifar10": cifar10,
    "digits": digits,
    "synthetic": synthetic,
    "text": text,
}
DATASETS = tuple(_LOADERS)


def load(name: str, **kwargs) -> DataBundle:
    """Load a dataset by name (``mnist1d``, ``cifar10``, ``digits``, ``synthetic``);
    keyword arguments go to its loader. ``"MNIST-1D"`` and ``"cifar_10"`` also work."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, received {type(name).__name__} {name!r}")
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in _LOADERS:
        close = difflib.get_close_matches(key, DATASETS, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ValueError(f"unknown dataset {name!r}; {hint}choose one of {', '.join(DATASETS)}")
    return _LOADERS[key](**kwargs)
