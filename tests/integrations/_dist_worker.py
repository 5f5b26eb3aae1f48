"""One rank of the 2-process gloo test (run by test_distributed.py, not by pytest).

    python _dist_worker.py RANK WORLD PORT OUT_DIR MODE     MODE: ddp | fsdp

Builds the same model as the single-process reference, trains two steps on this rank's
half of each global batch under DDP or FSDP2 (fully_shard), monitors it, and writes
rank 0's records plus the number of Python-level collectives per measured step.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _train(rank: int, world: int, out: Path, mode: str) -> None:
    """Train two monitored steps; everything it makes (model, mesh, DTensors) dies when it returns."""
    import resgrad
    from resgrad.probes import GradientMonitor

    torch.manual_seed(0)
    model = resgrad.build("resmlp", depth=3, width=16, in_features=8, num_classes=3)
    xs = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))
    ys = torch.randint(0, 3, (2, 16), generator=torch.Generator().manual_seed(2))
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model)
        monitored = wrapped.module  # monitor the inner model: same names as single-process
    else:
        from torch.distributed.fsdp import fully_shard

        for block in resgrad.blocks(model):
            fully_shard(block)
        fully_shard(model)
        wrapped = monitored = model
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    calls = []
    real = dist.all_reduce

    def counting(*a, **k):  # DDP/FSDP reduce in C++; Python-level calls are the monitor's
        calls[-1] += 1
        return real(*a, **k)

    dist.all_reduce = counting
    per = xs.shape[1] // world
    sharded = 0
    with GradientMonitor(monitored, activations=True) as mon:
        for step in range(2):
            x, y = xs[step, rank * per:(rank + 1) * per], ys[step, rank * per:(rank + 1) * per]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(wrapped(x), y).backward()  # a mean over this rank's part
            calls.append(0)
            if step == 0:
                from torch.distributed.tensor import DTensor

                sharded = sum(isinstance(p.grad, DTensor) for p in monitored.parameters())
            mon.step()
            opt.step()
        rows = mon.records
    dist.all_reduce = real
    if rank == 0:
        (out / f"{mode}.json").write_text(json.dumps({"rows": rows, "calls": calls, "sharded": sharded}))


def main() -> None:
    rank, world, port, out, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _train(rank, world, out, mode)
        # FSDP2's DeviceMesh and DTensors hold the process group; freed late (at interpreter
        # exit), its gloo threads are torn down with the interpreter and abort the process
        # ("terminate called without an active exception", cf. pytorch/pytorch#179291). Free
        # them here, then let both ranks finish before either leaves the group.
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
