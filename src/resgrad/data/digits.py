"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, no download, a fixed split."""

from __future__ import annotations

import numpy as np
import torch

from .bundle import DataBundle

__all__ = ["digits"]

_SPLIT_SEED = 0  # the train/test split is part of the dataset's definition: never varies
_TEST_FRACTION = 0.2


def digits(*, flat: bool = False) -> DataBundle:
    """8x8 digits: x ``(N, 1, 8, 8)`` float32 (``flat=True``: ``(N, 64)``), y int64 in 0..9.

    A fixed seeded 80/20 split (1438 / 359), standardised with one mean and std taken over
    all train pixels (per-pixel statistics would divide by zero: border pixels are always 0).
    Needs scikit-learn (``pip install 'resgrad[digits]'``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits dataset needs scikit-learn, which is not installed: "
            "pip install 'resgrad[digits]' (or pip install scikit-learn)"
        ) from None
    d = load_digits()
    x = np.asarray(d.data, dtype=np.float32)  # (1797, 64), ink 0..16
    y = np.asarray(d.target, dtype=np.int64)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
    n_test = int(round(len(y) * _TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    mean, std = float(x[train].mean()), float(x[train].std())

    def part(idx: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy((x[idx] - mean) / std)
        return t if flat else t.reshape(-1, 1, 8, 8)

    info = {
        "source": "sklearn.datasets.load_digits (bundled with scikit-learn)",
        "split": {"seed": _SPLIT_SEED, "test_fraction": _TEST_FRACTION},
        "normalisation": {"how": "one mean and std over all train pixels", "mean": mean, "std": std},
        "flat": flat,
    }
    return DataBundle("digits", part(train), torch.from_numpy(y[train]), part(test),
                      torch.from_numpy(y[test]), 10, info=info)
