"""The ``resnet20`` group of benchmarks/monitor_overhead.py (issue 22): what production
training can leave on, eager and compiled ResNet-20 on the CPU, all rows interleaved in
one run (each round runs every variant in a shuffled order; ratios paired per round).

  eager: baseline / baseline B (A/A)     plain SGD step (the second copy: the noise floor)
  eager: params                          GradientMonitor(every=1) parameter norms     goal <= 1.01x
  eager: params+split+act_norms          ... plus the skip/branch split, forward ratios,
                                         stream and activation norms per unit          goal <= 1.05x
  compiled: baseline / params / params+split+act_norms   the same under torch.compile (inductor)

Then, per variant with the monitor measuring every 2nd step: host reads per non-measured
step (a TorchDispatchMode/TorchFunctionMode count, as tests/probes/test_no_sync.py; eager
only: dynamo refuses to run under a user dispatch mode, and inside a graph a read would be
a graph break) and graph breaks under torch.compile (``torch._dynamo.utils.counters``).

    .venv/bin/python benchmarks/monitor_overhead.py --groups resnet20 [--rounds 12] [--steps 2] [--eager-only]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import resgrad
from resgrad.probes import GradientMonitor

FULL = {"split": True, "act_norms": True}
aten = torch.ops.aten
_READS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.equal, aten.is_nonzero}
_METHODS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
            torch.Tensor.__float__, torch.Tensor.__int__}


class _Reads(TorchDispatchMode):
    n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in _READS:
            _Reads.n += 1
        return func(*args, **(kwargs or {}))


class _Calls(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _METHODS:
            _Reads.n += 1
        return func(*args, **(kwargs or {}))


def _sgd(model: torch.nn.Module, fn: Any, x: torch.Tensor, y: torch.Tensor,
         mon: GradientMonitor | None) -> Callable[[int], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fn(x), y).backward()
        if mon is not None:
            mon.step(i)
        opt.step()

    return step


def _host_reads_per_quiet_step(base: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, kw: dict) -> float:
    model = copy.deepcopy(base)
    with GradientMonitor(model, every=2, **kw) as mon:
        step = _sgd(model, model, x, y, mon)
        step(0)
        total = 0
        for i in range(1, 7):
            _Reads.n = 0
            if i % 2:
                with _Calls(), _Reads():
                    step(i)
                total += _Reads.n
            else:
                step(i)
    return total / 3


def run(args: argparse.Namespace) -> None:
    torch._dynamo.config.skip_nnmodule_hook_guards = False  # one class compiled three times
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    base = resgrad.build("resnet20", dims=2, in_channels=3)
    steps: dict[str, Callable[[int], None]] = {}
    monitors: list[GradientMonitor] = []
    for name, kw, compiled in (("eager: baseline", None, False), ("eager: baseline B", None, False),
                               ("eager: params", {}, False), ("eager: params+split+act_norms", FULL, False),
                               ("compiled: baseline", None, True), ("compiled: params", {}, True),
                               ("compiled: params+split+act_norms", FULL, True)):
        if compiled and getattr(args, "eager_only", False):
            continue
        model = copy.deepcopy(base)
        mon = None
        if kw is not None:
            mon = GradientMonitor(model, every=1, **kw).attach()  # before compiling: hooks traced in
            monitors.append(mon)
        fn = torch.compile(model, fullgraph=True) if compiled else model
        steps[name] = _sgd(model, fn, x, y, mon)
    torch._dynamo.utils.counters.clear()
    t0 = time.perf_counter()
    counter = dict.fromkeys(steps, 0)
    for name, step in steps.items():  # compile (forward + backward) and warm up
        for _ in range(2):
            step(counter[name])
            counter[name] += 1
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    print(f"(compiling took {time.perf_counter() - t0:.0f} s; graph breaks under torch.compile: {breaks})")

    times: dict[str, list[float]] = {k: [] for k in steps}
    rng = random.Random(args.seed)
    try:
        for _ in range(args.rounds):
            order = list(steps)
            rng.shuffle(order)
            for name in order:
                t = time.perf_counter()
                for _ in range(args.steps):
                    steps[name](counter[name])
                    counter[name] += 1
                times[name].append((time.perf_counter() - t) / args.steps)
    finally:
        for mon in monitors:
            mon.detach()
    for mon in monitors:  # the records are real
        assert mon.records and all(r["norm"] is not None for r in mon.records if r["kind"] == "param")
    assert any(r["kind"] == "branch" for r in monitors[-1].records)

    print(f"ResNet-20 2-D, batch {args.batch_size}, CPU, {torch.get_num_threads()} thread(s), torch "
          f"{torch.__version__}; {args.rounds} rounds x {args.steps} steps per variant, interleaved; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'variant':<34}{'median step':>13}{'ratio (paired median)':>24}{'IQR of ratio':>18}{'ratio of min':>14}")
    for name, ts in times.items():
        ref = "compiled: baseline" if name.startswith("compiled") else "eager: baseline"
        ratios = [a / b for a, b in zip(ts, times[ref], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"{name:<34}{statistics.median(ts) * 1e3:>10.1f} ms{statistics.median(ratios):>23.3f}x"
              f"{q[0]:>10.3f}-{q[2]:.3f}{min(ts) / min(times[ref]):>13.3f}x")
    for label, kw in (("params", {}), ("params+split+act_norms", FULL)):
        print(f"host reads per non-measured step, eager, {label}: {_host_reads_per_quiet_step(base, x, y, kw):g}")
    print("goals: params <= 1.01x, params+split+act_norms <= 1.05x; host reads per non-measured step 0; "
          "graph breaks 0")
