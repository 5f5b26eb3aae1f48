"""One training run over several processes (``torchrun``): the process group and its helpers.

``torchrun --nproc-per-node N -m resgrad train MODEL ...`` starts N copies of the command
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
:func:`setup` reads them and initialises ``torch.distributed`` (gloo on the CPU, nccl on
CUDA, each rank on ``cuda:LOCAL_RANK``); :func:`resgrad.fit` then trains the one run with
DistributedDataParallel. Without those variables (or with ``WORLD_SIZE=1``) nothing here
does anything and training is the single-process loop, bit for bit.

Besides the training group, a gloo group carries the small control messages (the "stop
now / checkpoint now" flags agreed after each step, rank 0's status after it opened the
run folder) on the CPU, so on CUDA they never wait on the GPU's queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "setup", "shutdown", "world_from_env"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the run: rank ``rank`` of ``world`` (1: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" or "nccl"; None when world == 1
    control: Any = None  # the gloo process group for CPU flags (the default group under gloo)
    active: bool = False  # in a process group: fit trains through DDP (world 1 included: a smoke test)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier(group=self.control)

    def all_max(self, values: list[int]) -> list[int]:
        """Element-wise max over ranks of small integer flags (CPU, the control group)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return [int(v) for v in t.tolist()]

    def all_sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (on its device, the training group)."""
        if self.active:
            dist.all_reduce(t)
        return t

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled through the CPU control group)."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank.

        Each rank updates BN's running statistics from its own part of the batch; the
        checkpoint keeps rank 0's, so evaluation uses rank 0's everywhere (DDP does the
        same broadcast at the start of every training forward).
        """
        if self.active:
            for b in module.buffers():
                dist.broadcast(b, src=0)


def world_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent); one line when it is not a number."""
    raw = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        world = int(raw)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a whole number (torchrun sets it), received {raw!r}") from None
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, received {world}")
    return world


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes; return this rank's place and its device.

    ``device``: the resolved training device; on CUDA each rank trains on
    ``cuda:LOCAL_RANK`` (one GPU per process). A group the caller already initialised is
    used as it is, also with one process (the DDP path on one device, for smoke tests);
    torchrun with one process (``WORLD_SIZE=1``) trains single-process.
    """
    if not dist.is_available():
        return Dist(), device
    if not dist.is_initialized():
        world = world_from_env()
        if world == 1:
            return Dist(), device
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with "
                             "`torchrun --nproc-per-node N -m resgrad train ...`")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
            dist.init_process_group(backend, device_id=device)
        else:
            dist.init_process_group(backend)
    world = dist.get_world_size()
    backend = str(dist.get_backend())
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if device.type == "cuda" and device.index != local:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    # gloo already runs on the CPU; under nccl the flags get their own gloo group, made once.
    global _CONTROL
    if backend == "gloo":
        control = None
    else:
        if _CONTROL is None:
            _CONTROL = dist.new_group(backend="gloo")
        control = _CONTROL
    return Dist(dist.get_rank(), world, local, backend, control, active=True), device


_CONTROL: Any = None


def shutdown() -> None:
    """Leave the process group (the end of a torchrun command)."""
    global _CONTROL
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL = None
