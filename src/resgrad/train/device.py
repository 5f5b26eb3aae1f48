"""Where training runs: the one device resolver, data moved to the GPU once, autocast."""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..data import DataBundle

__all__ = ["resolve_device", "on_device", "model_device", "autocast"]

_KINDS = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device, *, what: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` this process can use; a ValueError line otherwise.

    ``"auto"``: CUDA when present, else the CPU. Accepted: ``cpu``, ``cuda``, ``cuda:N`` (N
    among the devices this process sees) and ``mps``, in any case and with spaces around;
    anything else, or a device this machine lacks, is refused. ``what`` names the setting
    in the message (``"--device"`` for the command line). Both ``fit`` and every command
    resolve devices here.
    """
    d = str(device).strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in _KINDS:
        raise ValueError(f"{what} must be auto, cpu, cuda, cuda:N or mps, received {str(device)!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} {str(device)!r}: CUDA is not available on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= (n := torch.cuda.device_count()):
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ValueError(f"{what} {str(device)!r}: this process sees {n} CUDA device(s)"
                         + (f" (CUDA_VISIBLE_DEVICES={seen})" if seen is not None else "")
                         + "; use cuda (a worker of a pool spread over GPUs sees only its own GPU, as cuda:0)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{what} {str(device)!r}: MPS (Apple GPUs) is not available on this machine; use cpu")
    return dev


def on_device(data: DataBundle, device: torch.device, *, budget: float = 0.25) -> DataBundle:
    """``data`` with its tensors on a CUDA ``device`` once, when they take at most ``budget`` of its free memory.

    Batches are then gathered and augmented on the GPU: the permutation and the crop/flip
    draws still come from the same CPU generators (a few hundred numbers per batch), so a
    run draws exactly the batches it drew with host-resident data; no image crosses the bus
    per step. On the CPU (and MPS) the bundle is returned as it is.
    """
    if device.type != "cuda" or data.x_train.device == device:
        return data
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    size = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if size > budget * free:
        return data  # too big to keep resident: batches are copied per step as before
    x_train, y_train, x_test, y_test = (t.to(device) for t in tensors)
    return dataclasses.replace(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (or buffer) lives; the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def autocast(amp: str | None, device: torch.device) -> Any:
    """bf16 autocast, or nothing.

    It runs matmuls/convolutions in bfloat16 and keeps reductions such as cross_entropy in
    float32 (torch's autocast op lists), on CPU and CUDA alike.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()
