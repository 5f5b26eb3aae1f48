"""Distributed helpers of the monitor: world size, FSDP2 (DTensor) shards, the one all-reduce.

Parameter gradients are identical on every rank after DDP's all-reduce and are measured
locally; activation gradients (each rank sees its own part of the batch) and FSDP2
parameter shards (``fully_shard``: ``.grad`` is a sharded DTensor) are reduced as sums of
squares in ONE all-reduce per measured step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .quantities._base import StepData

__all__ = ["dist_world", "is_dtensor", "shard_group", "reduce_step"]


def dist_world(sync: bool | None) -> int:
    """World size to reduce over (1: no reduction)."""
    if sync is False or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 1
    return torch.distributed.get_world_size()


def is_dtensor(t: Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def shard_group(t: Any) -> Any:
    """The process group over which a DTensor gradient is sharded (FSDP2: its mesh)."""
    from torch.distributed.tensor import Shard

    mesh = t.device_mesh
    dims = [i for i, pl in enumerate(t.placements) if isinstance(pl, Shard)]
    if len(dims) > 1:
        raise NotImplementedError(
            f"gradient sharded over {len(dims)} mesh dimensions; GradientMonitor reduces FSDP2 shards over one"
        )
    if not dims:
        return None  # replicated: the local tensor is the whole gradient
    return mesh.get_group(dims[0]) if mesh.ndim > 1 else mesh.get_group()


def reduce_step(data: StepData, act: Tensor, world: int) -> None:
    """One all-reduce for the step: activation sums of squares ``act`` ((n, 4), on the
    reduction device) and the FSDP2 shard norms of ``data.shards``; sets ``data.act``
    (world > 1) and ``data.shard``."""
    dev = act.device
    shards = data.shards
    parts = [act.flatten()]
    group = None
    if shards:
        groups = {id(g): g for g in (shard_group(t) for t in shards)}
        if len(groups) != 1:
            raise NotImplementedError("parameter gradients sharded over several process groups")
        group = next(iter(groups.values()))
        local = [t.to_local().detach() for t in shards]
        sq = torch.stack(torch._foreach_norm(local, 2, dtype=torch.float64)).square()
        bad = torch.stack([torch.count_nonzero(~torch.isfinite(t)) for t in local]).to(torch.float64)
        parts.append(torch.stack([sq, bad], 1).to(dev).flatten())
    flat = torch.cat(parts)
    if world > 1:
        default = torch.distributed.group.WORLD
        if group is None or group == default or (
            torch.distributed.get_world_size(group) == world
        ):
            torch.distributed.all_reduce(flat)  # the one collective of this step
        else:  # HSDP-like layouts: activations over the world, shards over their group
            n = act.numel()
            a, b = flat[:n].clone(), flat[n:].clone()
            torch.distributed.all_reduce(a)
            torch.distributed.all_reduce(b, group=group)
            flat = torch.cat([a, b])
    n = act.numel()
    red = flat[:n].view(-1, 4)
    # DDP/FSDP average gradients over ranks, so the gradient of the global-batch loss
    # w.r.t. an activation is each rank's local gradient / world: Σg² scales by 1/world².
    red[:, 0] /= world * world
    data.act = red if world > 1 else None
    if shards:
        data.shard = flat[n:].view(-1, 2)
