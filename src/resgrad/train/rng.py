"""Randomness of a run: seeding at a fresh start, derived per-epoch seeds, capture and restore.

A resumed run continues bitwise: the global generators (torch, CUDA, NumPy, Python) are
saved in every checkpoint and restored, and the data order and block sampling of each epoch
come from generators seeded by ``(seed, epoch, stream)``, never from the global ones.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_all", "derived_seed", "rng_state", "set_rng_state", "ORDER", "PICK"]

ORDER, PICK = 0, 1  # derived_seed streams: the epoch's data order, the epoch's active-block draws


def seed_all(seed: int) -> None:
    """Seed torch (CUDA generators included), NumPy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def derived_seed(seed: int, epoch: int, stream: int) -> int:
    """One generator seed per (seed, epoch, purpose): a resumed run draws the same batches."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def rng_state() -> dict[str, Any]:
    """Every global generator's state, as tensors, ints and lists (it loads under weights_only=True)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def set_rng_state(s: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA only onto as many devices as it saw)."""
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
