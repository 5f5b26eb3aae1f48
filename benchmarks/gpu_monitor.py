"""GradientMonitor on a CUDA machine: correctness checks and overhead ratios, one script.

    python benchmarks/gpu_monitor.py              # on a CUDA machine (about 1-2 min on an H100/H200)
    python benchmarks/gpu_monitor.py --cpu-smoke  # the same checks on the CPU, small model (tests the script)

Checks, each printed PASS/FAIL (exit code 1 if any FAIL):
  device_vs_cpu64   the monitor on the device model (float32, TF32 off): parameter,
                    activation and block-input gradient norms equal a CPU float64 copy's,
                    parameter norms also equal plain autograd's ``p.grad.norm()``
  bf16_autocast     under ``torch.autocast(bfloat16)``: the monitor's parameter norms equal
                    autograd's on the same step; activation norms finite and within 10 % of
                    the float32 step's (bf16 rounding)
  compile_fullgraph ``torch.compile(fullgraph=True)`` (inductor on CUDA): norms equal eager's
  fsdp2_world1      ``fully_shard`` on every block and the root, world size 1: norms equal
                    the unsharded model's; with 2 GPUs also world size 2 (two subprocesses,
                    nccl): every row present and finite (per-rank BatchNorm statistics make
                    the norms differ from the full-batch reference)
Overheads (median of interleaved rounds, each step synchronised): eager params,
eager params+blocks and compiled params+blocks vs the matching bare step.
Writes ``$OUT/gpu_monitor.json`` when ``OUT`` is set. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import resgrad
from resgrad.probes import GradientMonitor

RESULTS: dict[str, Any] = {"checks": {}, "overhead": {}}


def _check(name: str, fn: Callable[[], str]) -> None:
    t = time.perf_counter()
    try:
        detail, ok = fn(), True
    except Exception as e:  # noqa: BLE001 - a failed check is reported, the others still run
        detail, ok = f"{type(e).__name__}: {e}", False
        traceback.print_exc()
    secs = time.perf_counter() - t
    RESULTS["checks"][name] = {"pass": ok, "detail": detail, "seconds": round(secs, 1)}
    print(f"{'PASS' if ok else 'FAIL'} {name} ({secs:.1f} s): {detail}", flush=True)


def _model(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if args.cpu_smoke:
        model = resgrad.build("resmlp", depth=4, width=32, in_features=16, num_classes=5)
        x, y = torch.randn(32, 16), torch.randint(0, 5, (32,))
    else:
        model = resgrad.build("resnet20", dims=2, in_channels=3)
        x, y = torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))
    return model, x, y


def _rows(mon: GradientMonitor, step: int | None = None) -> dict[tuple[str, str], float]:
    rows = mon.records
    step = max(r["step"] for r in rows) if step is None else step
    return {(r["kind"], r["name"]): r["norm"] for r in rows if r["step"] == step and r["norm"] is not None}


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, call: Callable[[torch.Tensor], torch.Tensor]
             | None = None, **kw: Any) -> dict[tuple[str, str], float]:
    """One forward/backward under a fresh monitor; its rows by (kind, name)."""
    model.zero_grad(set_to_none=True)
    with GradientMonitor(model, **kw) as mon:
        F.cross_entropy((call or model)(x), y).backward()
        mon.step()
    return _rows(mon)


def _compare(got: dict, ref: dict, rel: float) -> str:
    assert set(got) == set(ref), f"rows differ: {sorted(set(got) ^ set(ref))[:5]}"
    worst = max(abs(got[k] - ref[k]) / max(abs(ref[k]), 1e-30) for k in ref)
    assert worst <= rel, f"worst relative difference {worst:.2e} > {rel:.0e}"
    return f"{len(ref)} norms, worst rel diff {worst:.1e} (tol {rel:.0e})"


def check_device_vs_cpu64(dev: torch.device, args: argparse.Namespace) -> str:
    model, x, y = _model(args)
    model.train()
    ref_model = copy.deepcopy(model).double()
    ref = _measure(ref_model, x.double(), y, activations=True)
    for n, p in ref_model.named_parameters():  # the monitor's float64 CPU rows vs autograd
        assert math.isclose(ref[("param", n)], float(p.grad.norm()), rel_tol=1e-12), n
    model = model.to(dev)
    got = _measure(model, x.to(dev), y.to(dev), activations=True)
    for n, p in model.named_parameters():
        assert math.isclose(got[("param", n)], float(p.grad.double().norm()), rel_tol=1e-6), n
    assert any(k == "input" for k, _ in got), "no block-input rows"
    return _compare(got, ref, rel=2e-3)


def check_bf16(dev: torch.device, args: argparse.Namespace) -> str:
    model, x, y = _model(args)
    model = model.to(dev)
    x, y = x.to(dev), y.to(dev)
    fp32 = _measure(model, x, y, activations="blocks")

    def call(t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            return model(t)

    got = _measure(model, x, y, call=call, activations="blocks")
    for n, p in model.named_parameters():
        assert math.isclose(got[("param", n)], float(p.grad.double().norm()), rel_tol=1e-6), n
    acts = {k: v for k, v in got.items() if k[0] != "param"}
    assert acts and all(math.isfinite(v) for v in acts.values())
    worst = max(abs(v - fp32[k]) / fp32[k] for k, v in acts.items())
    assert worst < 0.10, f"bf16 vs float32 block norms differ by {worst:.1%}"
    return f"params == autograd; {len(acts)} block norms within {worst:.1%} of float32"


def check_compile(dev: torch.device, args: argparse.Namespace) -> str:
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    model, x, y = _model(args)
    model = model.to(dev)
    x, y = x.to(dev), y.to(dev)
    eager = _measure(model, x, y, activations="blocks")
    torch._dynamo.reset()
    model.zero_grad(set_to_none=True)
    with GradientMonitor(model, activations="blocks") as mon:  # attached before compiling
        compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break raises
        F.cross_entropy(compiled(x), y).backward()
        mon.step()
    return _compare(_rows(mon), eager, rel=2e-3 if dev.type == "cuda" else 1e-4)


def _fsdp_rows(dev: torch.device, args: argparse.Namespace, rank: int, world: int) -> dict:
    from torch.distributed.fsdp import fully_shard

    model, x, y = _model(args)
    model = model.to(dev)
    for block in resgrad.blocks(model):
        fully_shard(block)
    fully_shard(model)
    per = x.shape[0] // world
    return _measure(model, x[rank * per:(rank + 1) * per].to(dev), y[rank * per:(rank + 1) * per].to(dev),
                    activations="blocks")


def check_fsdp(dev: torch.device, args: argparse.Namespace) -> str:
    import torch.distributed as dist

    model, x, y = _model(args)
    model.train()
    ref = _measure(model.to(dev), x.to(dev), y.to(dev), activations="blocks")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory(prefix="resgrad-gpu-") as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            got = _fsdp_rows(dev, args, 0, 1)
        finally:
            dist.destroy_process_group()
    out = "world 1: " + _compare(got, ref, rel=1e-5)
    if dev.type == "cuda" and torch.cuda.device_count() >= 2:
        out += "; world 2: " + _fsdp_world2(args, ref)
    return out


def _fsdp_world2(args: argparse.Namespace, ref: dict) -> str:
    import subprocess

    port = random.randint(20000, 40000)
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, __file__, "--_rank", str(r), "--_port", str(port),
                                   "--_out", tmp, "--batch-size", str(args.batch_size)]) for r in range(2)]
        try:
            for p in procs:
                p.wait(timeout=120)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
        got = {tuple(k.split("|", 1)): v for k, v in json.loads(Path(tmp, "rank0.json").read_text()).items()}
    # Each rank normalises its half batch with its own BatchNorm statistics, so no norm
    # equals the one-process full-batch reference; without BatchNorm all of them would.
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in _model(args)[0].modules())
    if not has_bn:
        return _compare(got, ref, rel=1e-4)
    assert set(got) == set(ref) and all(math.isfinite(v) and v > 0 for v in got.values())
    return f"{len(got)} norms, all rows present and finite (BatchNorm: per-rank statistics, not compared)"


def _rank_main(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    torch.cuda.set_device(args._rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{args._port}", rank=args._rank, world_size=2)
    try:
        rows = _fsdp_rows(torch.device("cuda", args._rank), args, args._rank, 2)
        if args._rank == 0:
            Path(args._out, "rank0.json").write_text(json.dumps({f"{k}|{n}": v for (k, n), v in rows.items()}))
    finally:
        dist.destroy_process_group()


def overheads(dev: torch.device, args: argparse.Namespace) -> None:
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    base, x, y = _model(args)
    x, y = x.to(dev), y.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    steps: dict[str, Callable[[], None]] = {}
    mons = []
    # Compiled: bare and params+blocks only (params-only leaves the graph untouched, and
    # every inductor compile of ResNet-20 costs tens of seconds of the 3-minute budget).
    for compiled, kws in ((False, (None, {}, {"activations": "blocks"})), (True, (None, {"activations": "blocks"}))):
        for kw in kws:
            model = copy.deepcopy(base).to(dev)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            mon = GradientMonitor(model, every=1, **kw).attach() if kw is not None else None
            if mon is not None:
                mons.append(mon)
            net = torch.compile(model) if compiled else model
            name = ("compiled" if compiled else "eager") + ": " + (
                "baseline" if kw is None else "params" if not kw else "params+blocks")

            def step(net=net, opt=opt, mon=mon) -> None:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                if mon is not None:
                    mon.step()
                opt.step()

            steps[name] = step
    try:
        for s in steps.values():  # compile and warm up
            for _ in range(3):
                s()
        sync()
        times: dict[str, list[float]] = {k: [] for k in steps}
        rng = random.Random(0)
        for _ in range(args.rounds):
            order = list(steps)
            rng.shuffle(order)
            for k in order:
                ts = []
                for _ in range(args.steps):
                    sync()
                    t = time.perf_counter()
                    steps[k]()
                    sync()
                    ts.append(time.perf_counter() - t)
                times[k].append(statistics.median(ts))
    finally:
        for m in mons:
            m.detach()
    for k, ts in times.items():
        ref = times[k.split(":")[0] + ": baseline"]
        ratios = [a / b for a, b in zip(ts, ref, strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        RESULTS["overhead"][k] = {"median_ms": statistics.median(ts) * 1e3, "ratio": statistics.median(ratios),
                                  "iqr": [q[0], q[2]]}
        print(f"overhead {k:<26}{statistics.median(ts) * 1e3:9.2f} ms  {statistics.median(ratios):.3f}x "
              f"(IQR {q[0]:.3f}-{q[2]:.3f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="run the checks on the CPU with a small model")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--budget-s", type=float, default=170.0,
                    help="skip the overhead rows if the checks used over half of this")
    ap.add_argument("--_rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_port", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._rank is not None:
        _rank_main(args)
        return
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("usage: no CUDA device visible; run on a CUDA machine, or pass --cpu-smoke", file=sys.stderr)
        sys.exit(2)
    dev = torch.device("cpu" if args.cpu_smoke else "cuda")
    if dev.type == "cuda":  # float32 means float32: no TF32 in the reference comparisons
        torch.cuda.set_device(0)  # the world-size-1 process group and mesh live on cuda:0
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        RESULTS["device"] = torch.cuda.get_device_name()
    else:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        RESULTS["device"] = "cpu (smoke)"
    RESULTS["torch"] = torch.__version__
    t0 = time.perf_counter()
    _check("device_vs_cpu64", lambda: check_device_vs_cpu64(dev, args))
    _check("bf16_autocast", lambda: check_bf16(dev, args))
    _check("compile_fullgraph", lambda: check_compile(dev, args))
    _check("fsdp2_world1", lambda: check_fsdp(dev, args))
    if args.skip_overhead:
        pass
    elif time.perf_counter() - t0 > args.budget_s / 2:  # compiles are the slow part: keep the budget
        print(f"overhead skipped: checks took {time.perf_counter() - t0:.0f} s of the {args.budget_s:.0f} s budget")
        RESULTS["overhead"] = "skipped: out of time budget"
    else:
        overheads(dev, args)
    RESULTS["seconds"] = round(time.perf_counter() - t0, 1)
    ok = all(c["pass"] for c in RESULTS["checks"].values())
    print(f"{'ALL PASS' if ok else 'SOME FAILED'} in {RESULTS['seconds']} s")
    if os.environ.get("OUT"):
        from resgrad.io import atomic_write

        path = Path(os.environ["OUT"], "gpu_monitor.json")
        atomic_write(path, lambda f: f.write(json.dumps(RESULTS, indent=2)))
        print(f"wrote {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
