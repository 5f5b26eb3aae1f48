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

Framework rows (same run, after the core rows; each group interleaved the same way, a
fresh Trainer per round on the same model, steps timed inside the Trainer by a timing
callback from batch start to batch end, so Trainer start-up is not counted):

  lightning: baseline / callback     Lightning Trainer step, ResNet-20, with
                                     resgrad.integrations.lightning.GradientMonitorCallback
                                     every step (params) vs without          goal <= 1.03x
  hf: baseline / params / params+acts  HF Trainer step, a small GPT-2 from a config, with the
                                     HF callback every step                 goals <= 1.03x, <= 1.10x
  compiled: baseline / params / params+blocks / params+acts  torch.compile'd ResNet-20 (inductor), monitored
                                     vs bare compiled step                  goal <= 1.05x

    .venv/bin/python benchmarks/monitor_overhead.py [--rounds 12] [--steps 2] [--threads 1]
        [--groups core,lightning,hf,compiled]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

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


def _report(title: str, times: dict[str, list[float]], ref_of: Callable[[str], str]) -> None:
    print(title)
    # min: other processes only ever add time, so the fastest round is the least disturbed one.
    print(f"{'variant':<26}{'median step':>13}{'ratio (paired median)':>24}{'IQR of ratio':>18}{'ratio of min':>14}")
    for name, ts in times.items():
        ref = ref_of(name)
        n = min(len(ts), len(times[ref]))
        ratios = [a / b for a, b in zip(ts[:n], times[ref][:n], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"{name:<26}{statistics.median(ts) * 1e3:>10.1f} ms{statistics.median(ratios):>23.3f}x"
              f"{q[0]:>10.3f}-{q[2]:.3f}{min(ts) / min(times[ref]):>13.3f}x")


def _interleave(variants: dict[str, Callable[[], list[float]]], rounds: int, seed: int) -> dict[str, list[float]]:
    """Each variant's callable runs a few steps and returns their times; rounds shuffled."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            ts = variants[name]()
            times[name].append(statistics.median(ts))  # one number per round, like the core rows
    return times


def _lightning_group(args: argparse.Namespace) -> None:
    try:
        import lightning.pytorch as pl

        from resgrad.integrations.lightning import GradientMonitorCallback
    except ImportError as e:
        print(f"skipped: lightning rows -- {e}")
        return

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self._t)

    class Module(pl.LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    steps = args.steps + 1  # the first step of each fit (loop start-up) is dropped
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.repeat(steps, 1, 1, 1), y.repeat(steps)),
                                         batch_size=args.batch_size)
    base = resgrad.build("resnet20", dims=2, in_channels=3)

    def variant(callback: Any) -> Callable[[], list[float]]:
        module = Module(copy.deepcopy(base))

        def run() -> list[float]:
            timer = Timer()
            cbs = [timer] + ([callback()] if callback is not None else [])
            trainer = pl.Trainer(max_steps=steps, callbacks=cbs, logger=pl.loggers.CSVLogger(args.tmp),
                                 log_every_n_steps=1, enable_progress_bar=False, enable_checkpointing=False,
                                 enable_model_summary=False, accelerator="cpu", devices=1)
            trainer.fit(module, loader)
            return timer.times[1:]

        return run

    # "baseline B" is a second, identical baseline: its ratio (A/A) shows the noise floor.
    variants = {"lightning: baseline": variant(None),
                "lightning: baseline B": variant(None),
                "lightning: callback": variant(lambda: GradientMonitorCallback(every=1)),
                "lightning: via log_dict": variant(lambda: GradientMonitorCallback(every=1, log_via="log_dict"))}
    for v in variants.values():  # warm-up
        v()
    times = _interleave(variants, args.rounds, args.seed)
    _report(f"Lightning Trainer, ResNet-20 2-D, batch {args.batch_size}, CPU; callback every step (params), "
            f"logged every step", times, lambda n: "lightning: baseline")
    print(f"goal: lightning callback <= 1.03x; load average {os.getloadavg()[0]:.2f} "
          f"(shared machine: compare with the A/A row)")


def _hf_group(args: argparse.Namespace) -> None:
    try:
        import transformers

        from resgrad.integrations.hf import GradientMonitorCallback
    except ImportError as e:
        print(f"skipped: hf rows -- {e}")
        return
    transformers.logging.set_verbosity_error()

    class Timer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, a, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    cfg = transformers.GPT2Config(vocab_size=512, n_positions=128, n_embd=128, n_layer=4, n_head=4)
    torch.manual_seed(args.seed)
    base = transformers.GPT2LMHeadModel(cfg)
    n, seq = 8, 128
    steps = args.steps + 1
    ids = torch.randint(0, cfg.vocab_size, (n * steps, seq))

    class Tokens(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": ids[i], "labels": ids[i]}

    def variant(callback: Any) -> Callable[[], list[float]]:
        model = copy.deepcopy(base)

        def run() -> list[float]:
            timer = Timer()
            targs = transformers.TrainingArguments(
                output_dir=args.tmp, per_device_train_batch_size=n, max_steps=steps, logging_steps=1,
                report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
            cbs = [timer] + ([callback()] if callback is not None else [])
            trainer = transformers.Trainer(model=model, args=targs, train_dataset=Tokens(), callbacks=cbs)
            # printing every log line to the console would time the terminal, not the monitor
            trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
            trainer.remove_callback(transformers.trainer_callback.ProgressCallback)
            trainer.train()
            return timer.times[1:]

        return run

    variants = {"hf: baseline": variant(None),
                "hf: params": variant(lambda: GradientMonitorCallback(every=1)),
                "hf: params+acts": variant(lambda: GradientMonitorCallback(every=1, activations=True))}
    for v in variants.values():
        v()
    times = _interleave(variants, args.rounds, args.seed)
    _report(f"HF Trainer, GPT-2 from a config (4 layers, d=128, seq {seq}, batch {n}), CPU; callback every step, "
            "logged every step", times, lambda n: "hf: baseline")
    print("goals: hf params <= 1.03x, params+acts <= 1.10x")


def _compiled_group(args: argparse.Namespace) -> None:
    # Three instances of one class compiled in one process: dynamo would reuse the code
    # traced for the hook-free baseline on the hooked copies unless hooks are guarded.
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    base = resgrad.build("resnet20", dims=2, in_channels=3)
    steps: dict[str, Step] = {}
    monitors: list[GradientMonitor] = []
    for name, kw in (("compiled: baseline", None), ("compiled: params", {}),
                     ("compiled: params+blocks", {"activations": "blocks"}),
                     ("compiled: params+acts", {"activations": True})):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if kw is not None:
            mon = GradientMonitor(model, every=1, **kw).attach()  # hooks before compiling: traced in
            monitors.append(mon)
        cm = torch.compile(model)
        after = (lambda i, mon=mon: mon.step(i)) if kw is not None else None
        steps[name] = _sgd_step(cm, opt, x, y, after_backward=after)
    t0 = time.perf_counter()
    counter = {k: 0 for k in steps}
    for name, step in steps.items():  # compile (forward + backward) and warm up
        for _ in range(2):
            step(counter[name])
            counter[name] += 1
    print(f"(compiling took {time.perf_counter() - t0:.0f} s)")

    def runner(name: str) -> Callable[[], list[float]]:
        def run() -> list[float]:
            ts = []
            for _ in range(args.steps):
                t = time.perf_counter()
                steps[name](counter[name])
                counter[name] += 1
                ts.append(time.perf_counter() - t)
            return ts

        return run

    try:
        times = _interleave({k: runner(k) for k in steps}, args.rounds, args.seed)
    finally:
        for mon in monitors:
            mon.detach()
    for mon in monitors:
        assert mon.records and all(r["norm"] is not None for r in mon.records if r["kind"] == "param")
    assert any(r["kind"] == "activation" for r in monitors[-1].records)
    _report(f"torch.compile (inductor) ResNet-20 2-D, batch {args.batch_size}, CPU; monitor every step",
            times, lambda n: "compiled: baseline")
    print("goal: compiled monitored <= 1.05x")


def _core_group(args: argparse.Namespace) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="interleaved rounds (medians over them)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: stable on a shared machine; 0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eager-only", action="store_true", help="resnet20 group: skip its compiled rows")
    ap.add_argument("--groups", default="core,lightning,hf,compiled,resnet20",
                    help="comma-separated: core (the rows above), lightning, hf, compiled, resnet20 "
                         "(benchmarks/monitor_resnet20.py)")
    args = ap.parse_args()
    groups = set(args.groups.split(","))
    unknown = groups - {"core", "lightning", "hf", "compiled", "resnet20"}
    if unknown:
        ap.error(f"unknown group(s) {sorted(unknown)}; choose from core, lightning, hf, compiled, resnet20")
    import tempfile

    args.tmp = tempfile.mkdtemp(prefix="resgrad-bench-")
    # BackPACK's IO hooks warn on every step that the input needs no grad; it is expected here.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    if args.threads:
        torch.set_num_threads(args.threads)
    if "core" in groups:
        _core_group(args)
    if "lightning" in groups:
        _lightning_group(args)
    if "hf" in groups:
        _hf_group(args)
    if "compiled" in groups:
        _compiled_group(args)
    if "resnet20" in groups:
        import monitor_resnet20  # beside this file (python puts the script's folder on sys.path)

        monitor_resnet20.run(args)


if __name__ == "__main__":
    main()
