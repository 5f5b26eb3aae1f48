"""Will a model fit? The memory a training run needs, estimated without allocating it.

``resgrad train resmlp-100000000x64`` used to start building 10^8 blocks and run until memory
or patience ended. :func:`check_fits` answers first, in one line, from an estimate made on
the ``meta`` device (shapes only, no storage):

- parameters: counted on a meta build; a registry name whose depth is too large to build even
  on meta (each module is a Python object) is counted at two small depths of the same
  residue (mod 18: the He nets' 6n+2 and the bottleneck nets' 9n+2 alike) and extrapolated
  linearly, since every family adds the same blocks per step of depth;
- training state: weights, gradients and the optimizer's buffers (SGD momentum: one per
  weight; AdamW: two), float32;
- activations: the outputs of every leaf module in one meta forward pass (what autograd keeps
  for the backward pass, to first order), per example, times the batch size.

Available memory: ``/proc/meminfo``'s MemAvailable (``os.sysconf`` elsewhere) on the CPU, the
free memory ``torch.cuda.mem_get_info`` reports on a GPU. ``force=True`` skips the refusal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..stopping import Preempted

__all__ = ["Estimate", "estimate", "available_bytes", "check_fits", "MAX_META_DEPTH"]

MAX_META_DEPTH = 200  # deeper registry names are counted at two small depths and extrapolated (a meta
# build costs ~15 ms per block: Python objects)
_STEP = 18  # lcm(6, 9): a depth change that keeps He (6n+2) and bottleneck (9n+2) depths valid
_FLOAT = 4  # bytes per float32


@dataclass(frozen=True)
class Estimate:
    """What a training run of one model needs, in elements and bytes."""

    parameters: int
    state_bytes: int  # weights + gradients + optimizer buffers
    activation_bytes: int  # at the run's batch size
    extrapolated: bool  # counted at two small depths, not at the real one

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes


def _measure(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, activation elements per example) of ``build()`` on the meta device."""
    with torch.device("meta"):
        model = build()
    params = sum(p.numel() for p in model.parameters())
    acts = [0]

    def count(_m: nn.Module, _i: object, out: object) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                acts[0] += t.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        x = torch.zeros((2, *input_shape), device="meta")  # 2: BatchNorm refuses one example
        model.train()
        model(x)
        per_example = acts[0] // 2
    except Preempted:
        raise
    except Exception:  # an op without a meta kernel: activations unknown, parameters still counted
        per_example = 0
    finally:
        for h in hooks:
            h.remove()
    return params, per_example


def estimate(name: str, input_shape: tuple[int, ...], num_classes: int, *, batch_size: int,
             optimizer: str = "sgd") -> Estimate:
    """The memory a training run of registry model ``name`` needs (ValueError for a bad name or depth)."""
    from ..nets import build_for
    from ..nets.registry import _lookup

    shape = tuple(int(s) for s in input_shape)
    found = _lookup(name)
    depth = found[1].get("depth") if found is not None else None
    buffers = 2 if optimizer == "adamw" else 1
    if found is not None and isinstance(depth, int) and depth > MAX_META_DEPTH:
        _, fixed, family = found
        rest = {k: v for k, v in fixed.items() if k != "depth"}  # resmlp-DxW: the width stays
        d1 = _STEP + depth % _STEP
        try:
            p1, a1 = _measure(lambda: build_for(family, shape, num_classes, depth=d1, **rest), shape)
            p2, a2 = _measure(lambda: build_for(family, shape, num_classes, depth=d1 + _STEP, **rest), shape)
        except (ValueError, TypeError):
            with torch.device("meta"):  # a bad depth: the builder's own line (it checks before building)
                build_for(name, shape, num_classes)
            raise
        steps = (depth - d1) // _STEP
        params, per_example, extra = p1 + (p2 - p1) * steps, a1 + (a2 - a1) * steps, True
    else:
        params, per_example = _measure(lambda: build_for(name, shape, num_classes), shape)
        extra = False
    return Estimate(parameters=params, state_bytes=params * _FLOAT * (2 + buffers),
                    activation_bytes=per_example * batch_size * _FLOAT, extrapolated=extra)


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory free for a run on ``device``: MemAvailable on the CPU, free GPU memory on CUDA; None unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"


def check_fits(name: str, input_shape: tuple[int, ...], num_classes: int, *, batch_size: int, optimizer: str,
               device: str, force: bool = False) -> Estimate:
    """The estimate; a ValueError line with it when the run would not fit in ``device``'s free memory."""
    est = estimate(name, input_shape, num_classes, batch_size=batch_size, optimizer=optimizer)
    free = available_bytes(device)
    if force or free is None or est.total_bytes <= free:
        return est
    how = " (extrapolated from two small depths)" if est.extrapolated else ""
    raise ValueError(f"{name} would need about {_gb(est.total_bytes)} to train on {device}: {est.parameters:,} "
                     f"parameters{how} ({_gb(est.state_bytes)} of weights, gradients and optimizer state) and "
                     f"{_gb(est.activation_bytes)} of activations at batch {batch_size}, but {_gb(free)} is "
                     "available; pick a smaller model or --batch-size, or pass --force to try anyway")
