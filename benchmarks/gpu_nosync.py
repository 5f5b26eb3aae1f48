"""On a GPU, GradientMonitor with every quantity on must not synchronise the device during
training: ResNet-20 (eager, then torch.compile'd) trains a few steps, measured every 2nd
step, under ``torch.cuda.set_sync_debug_mode("error")``, which raises on any
synchronising call (``.item()``, ``nonzero``, a blocking device-to-host copy). On the GPU
the monitor reads nothing even at measured steps (its rows stay on the device until
``records`` is read), so the whole loop runs under it; the records are read afterwards.
Called by benchmarks/gpu.sh when a GPU is there; the CPU test of the same property is
tests/probes/test_no_sync.py.

    .venv/bin/python benchmarks/gpu_nosync.py [--steps 6] [--cpu]   # --cpu: check the script itself
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

import resgrad
from resgrad.probes import GradientMonitor

ALL = {"params": True, "activations": "all", "weights": True, "updates": True, "split": True, "act_norms": True}


def _run(dev: torch.device, compiled: bool, steps: int, strict: bool) -> dict:
    torch.manual_seed(0)
    model = resgrad.build("resnet20", dims=2, in_channels=3).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(32, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (32,), device=dev)
    with GradientMonitor(model, every=2, **ALL) as mon:
        fn = torch.compile(model, fullgraph=True) if compiled else model

        def step(i: int) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(fn(x), y).backward()
            mon.step(i)
            opt.step()

        for i in range(2):  # compile / warm up (cuDNN autotuning may sync)
            step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        guard = torch.cuda.set_sync_debug_mode if strict else None
        t = time.perf_counter()
        try:
            if guard is not None:
                guard("error")
            for i in range(2, 2 + steps):
                step(i)
        finally:
            if guard is not None:
                guard("default")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    rows = mon.records
    kinds = sorted({r["kind"] for r in rows})
    assert {"param", "skip", "branch", "forward", "stream", "act_norm", "update"} <= set(kinds), kinds
    return {"compiled": compiled, "steps": steps, "syncs": 0, "rows": len(rows), "kinds": kinds,
            "s_per_step": wall / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU without the sync guard")
    args = ap.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("skipped: gpu_nosync -- no CUDA device")
        return
    dev = torch.device("cpu" if args.cpu else "cuda")
    out = []
    for compiled in (False, True):
        try:
            out.append(_run(dev, compiled, args.steps, strict=not args.cpu))
        except RuntimeError as e:  # set_sync_debug_mode("error") raises RuntimeError at the sync
            print(f"FAILED: {'compiled' if compiled else 'eager'}: a device sync during training: {e}".splitlines()[0])
            sys.exit(1)
        print(f"no device sync: {'compiled' if compiled else 'eager'} ResNet-20, {args.steps} steps "
              f"(every 2nd measured, every quantity on), {out[-1]['rows']} rows read afterwards")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_nosync.json"), "w") as f:
            json.dump({"device": str(dev), "runs": out}, f, indent=1)
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
