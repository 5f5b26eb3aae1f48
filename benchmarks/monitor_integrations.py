"""Overhead of resgrad's framework callbacks inside the HF Trainer and Lightning, every step logged.

Issue 22's Measures, the framework rows: the same Trainer with and without the callback,
at most 1.02x.

  hf: baseline / baseline B      HF Trainer step, GPT-2 from a config (6 layers, d=256,
                                 seq 128, batch 8), logging_steps=1; B is a second,
                                 identical baseline: its ratio (A/A) is the noise floor
  hf: callback (pre-clip)        + resgrad.integrations.hf.GradientMonitorCallback(), which
                                 follows logging_steps: per-parameter norms every step,
                                 measured before clipping (max_grad_norm=1.0, the default)
  hf: callback (pre+post)        ... clip="both": the post-clip norms as well
  lightning: baseline / B        Lightning step, timm resnet18 at 64x64 (batch 32),
                                 log_every_n_steps=1, gradient_clip_val=1.0
  lightning: callback (pre-clip) + resgrad.integrations.lightning.GradientMonitorCallback()
  lightning: callback (pre+post) ... clip="both"

In one process, interleaved: every round runs each variant of a group (a fresh Trainer on
its own copy of the model) for a few steps in a shuffled order, so load from other
processes hits all alike; steps are timed inside the Trainer by a timing callback (from
the step's start to its end, so Trainer start-up is not counted; the first step of each
run is dropped), in wall-clock and in the timing thread's CPU time; each ratio is paired
with the same round's baseline and the median over rounds is reported, with the
interquartile range.

    .venv/bin/python benchmarks/monitor_integrations.py [--rounds 10] [--steps 3] [--threads 1]
        [--groups hf,lightning,direct] [--device cpu|cuda]

``direct`` times the callbacks' own work per logged step (the monitor's step and metric
dict, the post-clip norms) beside a forward+backward of the same model, in thread CPU
time: the share a whole-step ratio is trying to resolve.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Run = Callable[[], list[tuple[float, float]]]  # (wall, this thread's CPU) seconds per step


Times = dict[str, list[tuple[float, float]]]


def _interleave(variants: dict[str, Run], rounds: int, seed: int) -> Times:
    """Each variant's callable runs a few steps and returns their times; rounds shuffled.
    One (wall, CPU) pair per variant and round: the medians over its steps."""
    times: Times = {k: [] for k in variants}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            ts = variants[name]()
            times[name].append((statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)))
    return times


def _report(title: str, times: Times, ref: str, goal: float) -> None:
    """Wall-clock and thread-CPU ratios, each paired with the same round's baseline. With one
    intra-op thread the step runs on the timing thread, so its CPU time leaves out the time
    other processes held the core: the steadier of the two on a shared machine."""
    print(title)
    print(f"{'variant':<32}{'wall step':>11}{'wall ratio':>12}{'IQR':>14}{'CPU step':>11}{'CPU ratio':>11}{'IQR':>14}")
    for name, ts in times.items():
        n = min(len(ts), len(times[ref]))
        cols = []
        for k in (0, 1):
            ratios = [a[k] / b[k] for a, b in zip(ts[:n], times[ref][:n], strict=True)]
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            cols.append(f"{statistics.median(t[k] for t in ts) * 1e3:>8.1f} ms{statistics.median(ratios):>11.3f}x"
                        f"{q[0]:>8.3f}-{q[2]:.3f}")
        print(f"{name:<32}{cols[0]}{cols[1]}")
    print(f"goal: callback rows <= {goal:.2f}x; load average {os.getloadavg()[0]:.2f} "
          "(on a shared machine compare with the A/A row)")


def hf_group(args: argparse.Namespace) -> Times | None:
    """HF Trainer rows: a 6-layer GPT-2 (d=256) from a config, every step logged."""
    try:
        import transformers

        from resgrad.integrations.hf import GradientMonitorCallback
    except ImportError as e:
        print(f"skipped: hf rows -- {e}")
        return None
    transformers.logging.set_verbosity_error()
    cuda = args.device == "cuda"

    class Timer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.times: list[tuple[float, float]] = []

        def on_step_begin(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self._t = (time.perf_counter(), time.thread_time())

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.times.append((time.perf_counter() - self._t[0], time.thread_time() - self._t[1]))

    cfg = transformers.GPT2Config(vocab_size=1024, n_positions=128, n_embd=256, n_layer=6, n_head=4)
    torch.manual_seed(args.seed)
    base = transformers.GPT2LMHeadModel(cfg)
    n, seq = 8, 128
    steps = args.steps + 1
    ids = torch.randint(0, cfg.vocab_size, (n * steps, seq))
    data = [{"input_ids": i, "labels": i} for i in ids]

    def variant(callback: Callable[[], Any] | None) -> Run:
        model = copy.deepcopy(base)

        def run() -> list[float]:
            timer = Timer()
            targs = transformers.TrainingArguments(
                output_dir=args.tmp, per_device_train_batch_size=n, max_steps=steps, logging_steps=1,
                report_to=[], save_strategy="no", use_cpu=not cuda, disable_tqdm=True,
                dataloader_num_workers=0)
            trainer = transformers.Trainer(model=model, args=targs, train_dataset=data, callbacks=[timer])
            if callback is not None:
                callback().add_to(trainer)
            # printing every log line would time the terminal, not the monitor
            trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
            trainer.remove_callback(transformers.trainer_callback.ProgressCallback)
            trainer.train()
            return timer.times[1:]

        return run

    variants = {"hf: baseline": variant(None),
                "hf: baseline B": variant(None),
                "hf: callback (pre-clip)": variant(lambda: GradientMonitorCallback()),
                "hf: callback (pre+post)": variant(lambda: GradientMonitorCallback(clip="both"))}
    for v in variants.values():  # warm-up
        v()
    times = _interleave(variants, args.rounds, args.seed)
    _report(f"HF Trainer, GPT-2 from a config (6 layers, d=256, seq {seq}, batch {n}), {args.device}; "
            "callback every step, logged every step", times, "hf: baseline", 1.02)
    return times


def lightning_group(args: argparse.Namespace) -> Times | None:
    """Lightning rows: timm resnet18 at 64x64, every step logged."""
    try:
        import lightning.pytorch as pl
        import timm

        from resgrad.integrations.lightning import GradientMonitorCallback
    except ImportError as e:
        print(f"skipped: lightning rows -- {e}")
        return None
    cuda = args.device == "cuda"
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner per Trainer
    warnings.filterwarnings("ignore", module="lightning")

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[tuple[float, float]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            self._t = (time.perf_counter(), time.thread_time())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            self.times.append((time.perf_counter() - self._t[0], time.thread_time() - self._t[1]))

    class Module(pl.LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, i):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("loss", loss)  # the baseline logs every step too
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    torch.manual_seed(args.seed)
    bs = 32
    x = torch.randn(bs, 3, 64, 64)
    y = torch.randint(0, 100, (bs,))
    steps = args.steps + 1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.repeat(steps, 1, 1, 1), y.repeat(steps)),
                                         batch_size=bs)
    base = timm.create_model("resnet18", pretrained=False, num_classes=100)

    def variant(callback: Callable[[], Any] | None) -> Run:
        module = Module(copy.deepcopy(base))

        def run() -> list[float]:
            timer = Timer()
            cbs = [timer] + ([callback()] if callback is not None else [])
            trainer = pl.Trainer(max_steps=steps, callbacks=cbs, logger=pl.loggers.CSVLogger(args.tmp),
                                 log_every_n_steps=1, gradient_clip_val=1.0, enable_progress_bar=False,
                                 enable_checkpointing=False, enable_model_summary=False,
                                 accelerator="gpu" if cuda else "cpu", devices=1)
            trainer.fit(module, loader)
            return timer.times[1:]

        return run

    variants = {"lightning: baseline": variant(None),
                "lightning: baseline B": variant(None),
                "lightning: callback (pre-clip)": variant(lambda: GradientMonitorCallback()),
                "lightning: callback (pre+post)": variant(lambda: GradientMonitorCallback(clip="both"))}
    for v in variants.values():
        v()
    times = _interleave(variants, args.rounds, args.seed)
    _report(f"Lightning Trainer, timm resnet18 at 64x64 (batch {bs}), {args.device}; callback every step, "
            "logged every step", times, "lightning: baseline", 1.02)
    return times


def direct_group(args: argparse.Namespace) -> None:
    """What the callbacks add per logged step, timed directly (thread CPU time, medians of
    ``--rounds``): the monitor's measured step with its metric dict (pre-clip), the post-clip
    norms, against one forward+backward of the same model and batch. Load on a shared
    machine disturbs a few-ms difference between whole Trainer steps more than this."""
    from resgrad.integrations._clip import PostClip, metric_dict
    from resgrad.probes import GradientMonitor

    models: list[tuple[str, Callable[[], tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]]]] = []
    try:
        import transformers

        transformers.logging.set_verbosity_error()

        def gpt2() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
            cfg = transformers.GPT2Config(vocab_size=1024, n_positions=128, n_embd=256, n_layer=6, n_head=4)
            ids = torch.randint(0, 1024, (8, 128))
            return transformers.GPT2LMHeadModel(cfg), lambda m: m(input_ids=ids, labels=ids).loss

        models.append(("GPT-2 6x256, seq 128, batch 8", gpt2))
    except ImportError as e:
        print(f"skipped: GPT-2 -- {e}")
    try:
        import timm

        def resnet18() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
            x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 100, (32,))
            return timm.create_model("resnet18", pretrained=False, num_classes=100), \
                lambda m: F.cross_entropy(m(x), y)

        models.append(("timm resnet18, 64x64, batch 32", resnet18))
    except ImportError as e:
        print(f"skipped: resnet18 -- {e}")
    print("Per logged step, thread CPU time (medians): the callbacks' own work beside a forward+backward")
    print(f"{'model':<34}{'fwd+bwd':>10}{'pre-clip':>10}{'post-clip':>11}{'share':>16}")
    for label, make in models:
        torch.manual_seed(args.seed)
        model, loss_of = make()
        mon = GradientMonitor(model, every=1).attach()
        post = PostClip(mon)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        fb, pre, pst = [], [], []
        # Training steps, not repeated backwards at the initial weights: timm's zero-initialised
        # last BN makes nearly every gradient exactly 0 at step 0, which the CPU norm path
        # re-checks in float64 (about 50 ms on resnet18, that step only).
        for k in range(args.rounds + 2):
            model.zero_grad(set_to_none=True)
            t0 = time.thread_time()
            loss_of(model).backward()
            t1 = time.thread_time()
            mon.step(k)
            metric_dict([r for r in mon.records if r["step"] == k])
            t2 = time.thread_time()
            post.collect(k)
            metric_dict([r for r in post.rows if r["step"] == k])
            t3 = time.thread_time()
            opt.step()
            if k > 1:  # the first two are warm-up
                fb.append(t1 - t0)
                pre.append(t2 - t1)
                pst.append(t3 - t2)
        mon.detach()
        m_fb, m_pre, m_post = (statistics.median(v) for v in (fb, pre, pst))
        print(f"{label:<34}{m_fb * 1e3:>7.0f} ms{m_pre * 1e3:>7.1f} ms{m_post * 1e3:>8.1f} ms"
              f"{m_pre / m_fb:>8.2%} +{m_post / m_fb:.2%}")


GROUPS = {"hf": hf_group, "lightning": lightning_group, "direct": direct_group}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (medians over them)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: stable on a shared machine; 0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--groups", default="hf,lightning,direct", help="comma-separated: hf, lightning, direct")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    groups = [g for g in args.groups.split(",") if g]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        ap.error(f"unknown group(s) {unknown} in --groups {args.groups!r}; choose from {', '.join(GROUPS)}")
    if args.rounds < 1 or args.steps < 1:
        ap.error(f"--rounds and --steps must be >= 1, received {args.rounds} and {args.steps}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here; use --device cpu")
    args.tmp = tempfile.mkdtemp(prefix="resgrad-bench-")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {platform.node()} ({name}, {os.cpu_count()} CPUs), torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} thread(s)")
    for g in groups:
        GROUPS[g](args)


if __name__ == "__main__":
    main()
