"""Training-step overhead of GradientMonitor every step, and of Cockpit's GradNorm, side by side.

ResNet-20 (2-D, CIFAR shape, batch 128, CPU). In one process, interleaved: every round
runs each variant for a few steps in a shuffled order, so load from other processes on a
shared machine hits all variants alike; the ratio per round is paired with the baseline of
the same round, and the medians are reported.

  baseline               plain SGD step
  baseline (2nd copy)    the same step on another copy of the model: the noise floor (A/A)
  monitor: params        GradientMonitor(params=True) every step (fused norms, on device)
  monitor: params+blocks ... plus ‖∂L/∂x‖ at every block's input and output (the flow profile)
  monitor: params+acts   ... plus activation-gradient norms of every leaf module and block
  twin: baseline         the BatchNorm-free twin (BN -> Identity), which BackPACK supports
  twin: cockpit GradNorm Cockpit (cockpit-for-pytorch 1.0.2) tracking GradNorm every step
  twin: monitor params   GradientMonitor on the same twin, for the like-for-like comparison

Cockpit reports 1.51x for its economy setting (Schneider et al. 2021, Fig. 6). Goals
here: <= 1.03x with parameter norms, <= 1.10x with activation norms.

    .venv/bin/python benchmarks/monitor_overhead.py [--rounds 12] [--steps 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import resgrad
from resgrad.probes import GradientMonitor

Step = Callable[[int], None]


def _sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              after_backward: Callable[[int], None] | None = None) -> Step:
    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if after_backward is not None:
            after_backward(i)
        opt.step()

    return step


def _bn_free(model: nn.Module) -> nn.Module:
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
    return model


def _cockpit_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Step | None, str]:
    """A training step under Cockpit's GradNorm, or (None, why not)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cockpit imports pkg_resources (deprecated)
            from backpack import extend
            from cockpit import Cockpit, quantities
            from cockpit.utils.schedules import linear
    except Exception as e:  # noqa: BLE001 - any import failure means: skip this row, say why
        return None, (f"cockpit not importable ({type(e).__name__}: {e}); pip install "
                      "'cockpit-for-pytorch==1.0.2' backpack-for-pytorch 'setuptools<81'")
    model = extend(model)
    loss_fn = extend(nn.CrossEntropyLoss(reduction="mean"))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cp = Cockpit(list(model.parameters()), quantities=[quantities.GradNorm(linear(1))])  # every step

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        losses = F.cross_entropy(out.detach(), y, reduction="none")
        with cp(i, info={"batch_size": len(x), "individual_losses": losses, "loss": loss, "optimizer": opt}):
            loss.backward(create_graph=cp.create_graph(i))
        opt.step()

    return step, ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="interleaved rounds (medians over them)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: stable on a shared machine; 0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    # BackPACK's IO hooks warn on every step that the input needs no grad; it is expected here.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    base = resgrad.build("resnet20", dims=2, in_channels=3)

    variants: dict[str, Step] = {}
    monitors: list[GradientMonitor] = []

    def with_monitor(model: nn.Module, **kw) -> Step:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        mon = GradientMonitor(model, every=1, **kw).attach()
        monitors.append(mon)
        return _sgd_step(model, opt, x, y, after_backward=lambda i: mon.step(i))

    m0 = copy.deepcopy(base)
    variants["baseline"] = _sgd_step(m0, torch.optim.SGD(m0.parameters(), lr=0.01, momentum=0.9), x, y)
    m1 = copy.deepcopy(base)  # A/A control: the same step on another copy shows the noise floor
    variants["baseline (2nd copy)"] = _sgd_step(m1, torch.optim.SGD(m1.parameters(), lr=0.01, momentum=0.9), x, y)
    variants["monitor: params"] = with_monitor(copy.deepcopy(base), params=True)
    variants["monitor: params+blocks"] = with_monitor(copy.deepcopy(base), params=True, activations="blocks")
    variants["monitor: params+acts"] = with_monitor(copy.deepcopy(base), params=True, activations=True)
    twin = _bn_free(copy.deepcopy(base))
    t0 = copy.deepcopy(twin)
    variants["twin: baseline"] = _sgd_step(t0, torch.optim.SGD(t0.parameters(), lr=0.01, momentum=0.9), x, y)
    cstep, why = _cockpit_step(copy.deepcopy(twin), x, y)
    if cstep is not None:
        variants["twin: cockpit GradNorm"] = cstep
    variants["twin: monitor params"] = with_monitor(copy.deepcopy(twin), params=True)

    print(f"ResNet-20 2-D, batch {args.batch_size}, CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
          f"{args.rounds} rounds x {args.steps} steps per variant, interleaved")
    if why:
        print(f"skipped: twin: cockpit GradNorm -- {why}")
    counter = {k: 0 for k in variants}
    for name, step in variants.items():  # warm-up (allocator, first-call costs)
        for _ in range(2):
            step(counter[name])
            counter[name] += 1
    times: dict[str, list[float]] = {k: [] for k in variants}
    rng = random.Random(args.seed)
    try:
        for _ in range(args.rounds):
            order = list(variants)
            rng.shuffle(order)
            for name in order:
                t = time.perf_counter()
                for _ in range(args.steps):
                    variants[name](counter[name])
                    counter[name] += 1
                times[name].append((time.perf_counter() - t) / args.steps)
    finally:
        for mon in monitors:
            mon.detach()
    for mon in monitors:  # reading syncs once; make sure the records are real
        assert mon.records and all(r["norm"] is not None for r in mon.records if r["kind"] == "param")

    # min: other processes only ever add time, so the fastest round is the least disturbed one.
    print(f"{'variant':<26}{'median step':>13}{'ratio (paired median)':>24}{'IQR of ratio':>18}{'ratio of min':>14}")
    for name, ts in times.items():
        ref = "twin: baseline" if name.startswith("twin") else "baseline"
        ratios = [a / b for a, b in zip(ts, times[ref], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"{name:<26}{statistics.median(ts) * 1e3:>10.1f} ms{statistics.median(ratios):>23.3f}x"
              f"{q[0]:>10.3f}-{q[2]:.3f}{min(ts) / min(times[ref]):>13.3f}x")
    print("goals: monitor params <= 1.03x, params+acts <= 1.10x; Cockpit's published economy setting 1.51x")


if __name__ == "__main__":
    main()
