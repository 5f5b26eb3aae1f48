"""The training loop: the He et al. recipe, a step-wise schedule, checkpoints, resume, callbacks.

``fit(model, data, TrainConfig())`` trains with SGD the way He et al. 2015 (arXiv
1512.03385, §4.2) trained their CIFAR-10 nets: batch 128, lr 0.1 divided by 10 at 50% and
75% of training, momentum 0.9, weight decay 1e-4, an optional constant warm-up at 0.01.

With ``out_dir`` a run writes one folder::

    config.json          resolved config, model_spec, data, schedule, environment (atomic)
    metrics.jsonl        one JSON line per finished epoch (flushed and fsynced)
    checkpoints/last.pt  model, optimizer, scheduler, epoch, step, RNG states and callback
                         states, written atomically (temp file + os.replace)

Rerunning ``fit`` on the folder continues from ``checkpoints/last.pt`` (kill -9 included):
``metrics.jsonl`` is cut back to the checkpointed epochs first, every source of randomness
is restored or re-derived from ``(seed, epoch)``, so on CPU the final weights are bitwise
those of an uninterrupted run. A finished run returns its recorded result.

Preemption (Slurm sends SIGTERM, or SIGUSR1 with ``--signal``; people press Ctrl-C): on
SIGTERM, SIGINT or SIGUSR1 the current step finishes, a mid-epoch checkpoint is written
(the position in the epoch's data order, the epoch's partial losses, every RNG and callback
state) and :class:`Preempted` is raised; the CLI prints one line and exits 128 + signal.
The rerun continues at that step, bitwise. ``checkpoint_steps`` / ``checkpoint_minutes``
write such checkpoints on a clock too, for epochs that take hours. Only one process writes
a run folder at a time (:meth:`resgrad.rundir.RunDir.locked`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .callbacks import Callback
from .data import DataBundle
from .io import environment, jsonable
from .nets import blocks, build, build_for, gates
from .rundir import RunDir

__all__ = ["TrainConfig", "FitResult", "NonFiniteLoss", "Preempted", "fit", "evaluate", "load_run"]

RUN_KIND = "resgrad.train"  # config.json["kind"]: what load_run recognises as a run folder
_FORMAT = 1  # bump when the checkpoint or config.json layout changes

# Fields that do not change what is trained: a resumed run may differ in them.
OPTIMIZERS = ("sgd", "adamw")
WARMUP_SHAPES = ("constant", "linear")
_FREE_FIELDS = ("device", "checkpoint_every", "checkpoint_steps", "checkpoint_minutes", "eval_batch_size")
_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")  # Slurm's SIGTERM, Ctrl-C, sbatch --signal=USR1@...
_AMP = (None, "bf16")  # mixed precision: bfloat16 needs no loss scaling (its exponent range is float32's)


@dataclass
class TrainConfig:
    """How to train. The defaults are He et al. 2015's CIFAR-10 recipe (arXiv 1512.03385, §4.2)."""

    epochs: int = 164  # passes over the training set; 164 x 391 steps ~ the paper's 64k iterations
    batch_size: int = 128  # examples per SGD step ("mini-batch size of 128", §4.2)
    lr: float = 0.1  # peak learning rate, per step of batch_size examples (§4.2)
    momentum: float = 0.9  # SGD momentum (§4.2)
    weight_decay: float = 1e-4  # L2 coefficient on every parameter, BN included (§4.2)
    nesterov: bool = False  # He et al. use classical momentum
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of all steps where lr *= gamma (32k, 48k of 64k)
    gamma: float = 0.1  # lr multiplier at each milestone ("divide it by 10", §4.2)
    warmup_iters: int = 0  # first steps run at warmup_lr (ResNet-110: ~400 iterations, §4.2)
    warmup_lr: float = 0.01  # constant lr during warm-up, then back to lr (not a ramp, §4.2)
    seed: int = 0  # seeds the global RNGs at a fresh start, the data order and the block sampling
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N", "mps"
    checkpoint_every: int = 1  # epochs between checkpoints; the last epoch is always saved
    checkpoint_steps: int | None = None  # also a mid-epoch checkpoint every this many steps (long epochs)
    checkpoint_minutes: float | None = None  # ... or once this many minutes have passed since the last one
    eval_batch_size: int = 1000  # test examples per forward pass (memory only, same result)
    max_steps: int | None = None  # stop after this many SGD steps in all (smoke runs); the schedule fits them
    active_blocks: int | None = None  # k: per batch only k random blocks' branches train (Veit et al. 2016 §5.2)
    # Transformers train with Adam and a linear warm-up (Vaswani et al. 2017 §5.3; Xiong et al.
    # 2020, arXiv 2002.04745, §3): "adamw" uses betas and a decoupled weight_decay (momentum,
    # nesterov unused); warmup_shape "linear" ramps lr from lr/warmup_iters to lr over warmup_iters
    # steps (warmup_lr unused), "constant" is He et al.'s fixed warmup_lr.
    optimizer: str = "sgd"  # "sgd" (He et al. 2015) or "adamw" (Loshchilov & Hutter 2019)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decay rates (Transformers: (0.9, 0.98))
    warmup_shape: str = "constant"  # "constant" (He et al. §4.2) or "linear" (Transformers)
    amp: str | None = None  # "bf16": forward and loss under torch.autocast(bfloat16), training and evaluation
    channels_last: bool = False  # image nets and batches in torch.channels_last (faster convolutions on GPUs)

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]  # JSON gives a list
        _validate(self)


def _validate(c: TrainConfig) -> None:
    def need(ok: bool, what: str, value: Any) -> None:
        if not ok:
            raise ValueError(f"{what}, received {value!r}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def pos(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    need(is_int(c.epochs) and c.epochs >= 1, "epochs must be an integer >= 1", c.epochs)
    need(is_int(c.batch_size) and c.batch_size >= 1, "batch_size must be an integer >= 1", c.batch_size)
    need(pos(c.lr), "lr must be a finite number > 0", c.lr)
    need(isinstance(c.momentum, (int, float)) and 0 <= c.momentum < 1, "momentum must be in [0, 1)", c.momentum)
    need(isinstance(c.weight_decay, (int, float)) and c.weight_decay >= 0, "weight_decay must be >= 0",
         c.weight_decay)
    need(all(0 < m <= 1 for m in c.milestones) and list(c.milestones) == sorted(c.milestones),
         "milestones must be increasing fractions of training in (0, 1], e.g. (0.5, 0.75)", c.milestones)
    need(pos(c.gamma), "gamma must be a finite number > 0", c.gamma)
    need(is_int(c.warmup_iters) and c.warmup_iters >= 0, "warmup_iters must be an integer >= 0", c.warmup_iters)
    need(pos(c.warmup_lr), "warmup_lr must be a finite number > 0", c.warmup_lr)
    need(is_int(c.seed) and c.seed >= 0, "seed must be an integer >= 0", c.seed)
    need(isinstance(c.device, str) and c.device.strip() != "", "device must be a string such as 'auto' or 'cpu'",
         c.device)
    need(is_int(c.checkpoint_every) and c.checkpoint_every >= 1, "checkpoint_every must be an integer >= 1",
         c.checkpoint_every)
    need(is_int(c.eval_batch_size) and c.eval_batch_size >= 1, "eval_batch_size must be an integer >= 1",
         c.eval_batch_size)
    need(c.checkpoint_steps is None or (is_int(c.checkpoint_steps) and c.checkpoint_steps >= 1),
         "checkpoint_steps must be None or an integer >= 1", c.checkpoint_steps)
    need(c.checkpoint_minutes is None or pos(c.checkpoint_minutes),
         "checkpoint_minutes must be None or a number > 0", c.checkpoint_minutes)
    need(c.max_steps is None or (is_int(c.max_steps) and c.max_steps >= 1),
         "max_steps must be None or an integer >= 1", c.max_steps)
    need(c.active_blocks is None or (is_int(c.active_blocks) and c.active_blocks >= 1),
         "active_blocks must be None (all blocks) or an integer >= 1", c.active_blocks)
    need(c.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}", c.optimizer)
    need(len(c.betas) == 2 and all(0 <= b < 1 for b in c.betas), "betas must be two numbers in [0, 1)", c.betas)
    need(c.warmup_shape in WARMUP_SHAPES, f"warmup_shape must be one of {', '.join(WARMUP_SHAPES)}",
         c.warmup_shape)
    need(c.amp in _AMP, f"amp must be one of {', '.join(map(repr, _AMP))}", c.amp)
    need(isinstance(c.channels_last, bool), "channels_last must be True or False", c.channels_last)


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model and the per-epoch metrics."""

    model: nn.Module
    history: list[dict[str, Any]]  # one dict per epoch, as in metrics.jsonl
    final: dict[str, Any]  # the last epoch's metrics
    out_dir: Path | None = None  # the run folder, when one was written
    resumed_from: int = 0  # epochs already done when this call started (0: a fresh run)
    schedule: dict[str, Any] = field(default_factory=dict)  # steps_per_epoch, total_steps, milestone_steps


class Preempted(RuntimeError):
    """fit stopped on a signal after a mid-epoch checkpoint; rerun the same command to resume."""

    def __init__(self, message: str, *, signum: int, epoch: int, step: int) -> None:
        super().__init__(message)
        self.signum = signum  # the signal that stopped it (exit code 128 + signum)
        self.epoch = epoch  # 1-based epoch in progress
        self.step = step  # global steps done

    def __reduce__(self) -> tuple:  # keyword-only fields: spelled out, so a pool worker can send it home
        return functools.partial(type(self), signum=self.signum, epoch=self.epoch, step=self.step), (str(self),)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run folder keeps its last good checkpoint."""

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch  # 1-based epoch in which it happened
        self.step = step  # 0-based global step index

    def __reduce__(self) -> tuple:  # keyword-only fields: spelled out, so a pool worker can send it home
        return functools.partial(type(self), epoch=self.epoch, step=self.step), (str(self),)


# ---- the loop -----------------------------------------------------------------------


def fit(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig | None = None,
    *,
    callbacks: Iterable[Callback] = (),
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    model_spec: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` with SGD and the step-wise schedule of ``config``.

    ``out_dir``: write a run folder there and resume from it (``resume=False`` starts over,
    discarding its checkpoint and metrics). ``model_spec``: ``{"name": registry name,
    "kwargs": {...}}`` (plus ``"input_shape"``/``"num_classes"`` to rebuild through
    ``build_for``), recorded so :func:`load_run` can rebuild the model. ``progress``: None
    shows a bar on a terminal and one line per epoch otherwise; True a bar; False nothing.
    Epochs are numbered from 1; ``step`` passed to callbacks is the 0-based global step.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, received {type(config).__name__}; "
                        "build one with resgrad.TrainConfig(**fields)")
    _validate(config)  # fields may have been changed after construction
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, received {type(model).__name__}")
    if not isinstance(data, DataBundle):
        raise TypeError(f"data must be a resgrad DataBundle (resgrad.load_data(name)), received {type(data).__name__}")
    cbs = list(callbacks)
    for cb in cbs:
        if not isinstance(cb, Callback):
            hint = "; instantiate it before passing it" if isinstance(cb, type) else ""
            raise TypeError(f"callbacks must be resgrad.Callback instances, received {cb!r}{hint}")
    n_train = len(data.x_train)
    if n_train == 0 or len(data.x_test) == 0:
        raise ValueError(f"dataset {data.name!r} has {n_train} training and {len(data.x_test)} test examples; "
                         "both must be non-empty")

    device = _resolve_device(config.device)
    if config.channels_last and len(data.input_shape) != 3:
        raise ValueError(f"channels_last applies to images (C, H, W); dataset {data.name!r} has inputs of shape "
                         f"{tuple(data.input_shape)}; drop channels_last (--channels-last) for it")
    spe = data.num_batches(config.batch_size)
    _check_world(config, data, spe)  # before joining the group: a bad batch size fails in one line
    ddp, device = distributed.setup(device)
    data = _on_device(data, device)
    total = spe * config.epochs if config.max_steps is None else min(spe * config.epochs, config.max_steps)
    # Milestones are fractions of the steps actually run, so a max_steps run keeps the shape;
    # never step 0 (a one-step run would otherwise run at the post-milestone lr).
    marks = _milestone_steps(config, total)
    schedule = {"steps_per_epoch": spe, "total_steps": total, "milestone_steps": marks}

    bl = blocks(model)
    k = config.active_blocks
    if k is not None:
        if not bl:
            raise ValueError(f"active_blocks={k} needs a model with resgrad blocks (Residual/Plain), "
                             f"and {type(model).__name__} has none; build it with resgrad.build or drop active_blocks")
        if k > len(bl):
            raise ValueError(f"active_blocks={k} but the model has only {len(bl)} blocks; "
                             f"choose active_blocks <= {len(bl)}")
    if model_spec is not None:
        model_spec = _check_spec(model_spec, model)

    model.to(device)
    optimizer = _optimizer(model, config)

    def factor(step: int) -> float:  # lr / config.lr for the step about to run
        return _lr_factor(config, marks, step)

    # Stepped once per iteration, not per epoch, so warm-up and milestones fall on steps.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    run = RunDir(out_dir) if out_dir is not None else None
    with ExitStack() as held:
        if run is not None and ddp.main:  # one writer per run folder; a finished run may be read on read-only storage
            held.enter_context(run.locked(read_only_ok=True))
        return _fit(model, data, config, cbs, run, resume, model_spec, progress, device, spe, total, marks,
                    schedule, bl, k, optimizer, scheduler, ddp)


def _check_world(config: TrainConfig, data: DataBundle, spe: int) -> None:
    """Under torchrun: the global batch must split evenly, and its last one must reach every rank."""
    world = (torch.distributed.get_world_size()
             if torch.distributed.is_available() and torch.distributed.is_initialized()
             else distributed.world_from_env())
    if world == 1:
        return
    if config.batch_size % world:
        lo = config.batch_size - config.batch_size % world
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} processes "
                         f"(each takes batch_size / {world}); choose a multiple of {world}, e.g. {lo or world}")
    n = len(data.x_train)
    if n > config.batch_size and n % config.batch_size == 1:
        n -= 1  # data.batches drops a last batch of one
    last = n - (spe - 1) * config.batch_size
    if last < world:
        raise ValueError(f"the last batch of each epoch holds {last} of {n} training examples, fewer than the "
                         f"{world} processes, so a rank would get none; choose a batch size that divides {n}")


def _fit(
    model: nn.Module, data: DataBundle, config: TrainConfig, cbs: list[Callback], run: RunDir | None, resume: bool,
    model_spec: dict[str, Any] | None, progress: bool | None, device: torch.device, spe: int, total: int,
    marks: list[int], schedule: dict[str, Any], bl: list, k: int | None, optimizer: torch.optim.Optimizer,
    scheduler: Any, ddp: distributed.Dist,
) -> FitResult:
    out = run.path if run is not None else None
    writer = run if ddp.main else None  # under torchrun only rank 0 writes the run folder
    epoch0, step, history = 0, 0, []
    metrics_file = None
    partial: dict[str, Any] | None = None  # a mid-epoch checkpoint's position and partial losses
    if run is not None:
        record = _run_record(config, device, model, data, model_spec, schedule, ddp)
        state, history = _open_shared(run, record, resume, marks, ddp)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            epoch0, step = int(state["epoch"]), int(state["step"])
            if state["finished"] and step >= total:
                final = history[-1] if history else {}
                return FitResult(model, history, final, out, epoch0, schedule)
            _set_rng_state(state["rng"])
            _load_callback_states(cbs, state.get("callbacks", {}))
            partial = state.get("partial")
        if writer is not None:
            writer.need_write()  # there is training left to do
            metrics_file = writer.open_metrics()  # closed in the finally below
    if epoch0 == 0 and partial is None:
        _seed_all(config.seed)
    fmt = torch.channels_last if config.channels_last else None
    if fmt is not None:
        model.to(memory_format=fmt)  # in place: the optimizer's parameters stay the same objects
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
    # Under torchrun: forward through DDP (it averages the gradients over ranks in backward);
    # callbacks, checkpoints and evaluation see the inner model (the single-process names).
    net = model
    if ddp.active:
        from torch.nn.parallel import DistributedDataParallel

        # A lesioned branch (active_blocks) takes no part in the step: DDP must be told to look.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=k is not None)

    loss_fn = nn.CrossEntropyLoss()
    # Per-step losses stay on the device; one host sync per epoch checks them all and
    # still names the first bad step (no .item() in the hot loop: it stalls CUDA queues).
    # Under torchrun each entry is this rank's share of the global batch's mean loss, summed
    # over ranks at the epoch's end (its one all-reduce of metrics).
    step_losses = torch.empty(spe, device=device)
    bar = _Progress(progress if ddp.main else False, total, step, config.epochs)
    last_ckpt = epoch0
    stop = _Stop()
    saved_at = time.monotonic()

    def global_sums(losses: Tensor, wrong: Tensor) -> tuple[Tensor, Tensor]:
        # Every rank's share of the losses and its wrong count, summed over ranks (one all-reduce).
        if not ddp.active:
            return losses, wrong
        buf = torch.cat([losses.detach(), wrong.to(losses.dtype).view(1)])
        ddp.all_sum_(buf)
        return buf[:-1], buf[-1].round().long()

    def save_partial(epoch: int, pos: int, wrong: Tensor, sizes: list[int], pick: torch.Generator | None) -> None:
        losses, wrong = global_sums(step_losses[:pos], wrong)  # every rank takes part; rank 0 writes
        if writer is not None:
            part = {"pos": pos, "losses": losses.detach().cpu(), "wrong": int(wrong), "sizes": list(sizes),
                    "pick": pick.get_state() if pick is not None else None}
            _save_checkpoint(writer, model, optimizer, scheduler, epoch - 1, step, False, cbs, part)

    def agree(signum: int | None, due: bool) -> tuple[int | None, bool]:
        # One signal on one rank stops them all at the same step; a clock checkpoint likewise.
        if not ddp.active:
            return signum, due
        sig, d = ddp.all_max([signum or 0, int(due)])
        return (sig or None), bool(d)

    def preempted(signum: int, epoch: int) -> Preempted:
        ddp.barrier()  # rank 0's checkpoint is on disk before any rank exits (torchrun then stops the rest)
        return _preempted(signum, epoch, step, run)

    try:
        stop.__enter__()
        for cb in cbs:
            cb.on_train_start(model)
        epoch = epoch0
        while step < total:
            epoch += 1
            t0 = time.perf_counter()
            model.train()
            order = torch.Generator().manual_seed(_derived_seed(config.seed, epoch, 0))
            pick = torch.Generator().manual_seed(_derived_seed(config.seed, epoch, 1)) if k else None
            wrong = torch.zeros((), dtype=torch.long, device=device)
            sizes: list[int] = []
            skip = 0
            if partial is not None:  # resume inside this epoch: replay its data order up to the position
                skip = int(partial["pos"])
                # The checkpoint holds the sums over ranks: rank 0 carries them, the others start at 0.
                step_losses[:skip] = partial["losses"].to(step_losses) if ddp.main else 0
                wrong += int(partial["wrong"]) if ddp.main else 0
                sizes = [int(n) for n in partial["sizes"]]
                if pick is not None and partial.get("pick") is not None:
                    pick.set_state(partial["pick"])
                partial = None
            lr = optimizer.param_groups[0]["lr"]
            for i, (xb, yb) in enumerate(data.batches(config.batch_size, train=True, generator=order)):
                if i < skip:
                    continue  # drawn (so the order and augmentation RNG advance exactly), already trained
                n_global = yb.numel()  # scored labels: per example, or per position for token targets
                if ddp.active:
                    # Every rank draws the same global batch (same permutation, same augmentation
                    # draws) and keeps every world-th example from its rank on: together the ranks
                    # train exactly the single-process batch.
                    xb, yb = xb[ddp.rank :: ddp.world], yb[ddp.rank :: ddp.world]
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True)
                if fmt is not None:
                    xb = xb.contiguous(memory_format=fmt)
                if pick is not None:
                    # Veit et al. 2016 §5.2: lesion all but k random blocks for this batch, so
                    # every path that trains passes through at most k branches.
                    off = torch.randperm(len(bl), generator=pick)[k:].tolist()
                    ctx = gates(bl, lesion=off)
                else:
                    ctx = nullcontext()
                with ctx, _autocast(config.amp, device):
                    logits = net(xb)
                    if ddp.active:
                        # This rank's summed loss over the GLOBAL batch size, times world (DDP
                        # averages over ranks): the gradient of the global batch's mean loss, also
                        # when the last batch splits unevenly.
                        loss = F.cross_entropy(logits, yb, reduction="sum") * (ddp.world / n_global)
                    else:
                        loss = loss_fn(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for cb in cbs:
                    cb.on_after_backward(model, step)
                for cb in cbs:
                    cb.on_before_optimizer_step(model, optimizer, step)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                step_losses[i] = loss.detach() / ddp.world if ddp.active else loss.detach()
                wrong += (logits.detach().argmax(1) != yb).sum()
                sizes.append(n_global)
                step += 1
                bar.advance()
                if step >= total:
                    break
                if i + 1 == spe:
                    continue  # the epoch's last step: its end below checkpoints (and stops on a signal)
                signum, due = agree(stop.signum, bool(config.checkpoint_minutes) and
                                    time.monotonic() - saved_at >= 60 * (config.checkpoint_minutes or 0))
                if run is not None and (
                        signum is not None or due
                        or (config.checkpoint_steps and step % config.checkpoint_steps == 0)):
                    save_partial(epoch, i + 1, wrong, sizes, pick)
                    saved_at = time.monotonic()
                if signum is not None:
                    raise preempted(signum, epoch)
            losses, wrong = global_sums(step_losses[: len(sizes)], wrong)
            train = _epoch_train_metrics(losses, sizes, wrong, epoch, step, out, last_ckpt)
            test = _evaluate_on(model, data, config.eval_batch_size, device, ddp, config)
            if not math.isfinite(test["loss"]):
                raise NonFiniteLoss(
                    f"non-finite test loss after epoch {epoch} (global step {step}): the weights diverged; "
                    + _keeps(out, last_ckpt), epoch=epoch, step=step - 1)
            metrics = {"epoch": epoch, **train, "test_loss": test["loss"], "test_error": test["error"],
                       "lr": lr, "seconds": time.perf_counter() - t0, "steps": step}
            for cb in cbs:  # callbacks may add entries; they are written with the epoch
                cb.on_train_epoch_end(model, epoch, metrics)
            metrics = jsonable(metrics)  # in memory exactly as metrics.jsonl will give it back
            history.append(metrics)
            bar.epoch_end(metrics)
            signum, _ = agree(stop.signum, False)
            if writer is not None:
                assert metrics_file is not None
                writer.append_metrics(metrics_file, metrics)
            if run is not None:
                done = step >= total
                if done or epoch % config.checkpoint_every == 0 or signum is not None:
                    if writer is not None:
                        _save_checkpoint(writer, model, optimizer, scheduler, epoch, step, done, cbs)
                    last_ckpt = epoch
                    saved_at = time.monotonic()
            if signum is not None and step < total:
                raise preempted(signum, epoch)
        for cb in cbs:
            cb.on_train_end(model)
        ddp.barrier()  # rank 0's last checkpoint is written before any rank reports success
    except BaseException as exc:
        for cb in cbs:  # let callbacks release what they hold (hooks, files); Lightning's name
            cb.on_exception(model, exc)
        raise
    finally:
        stop.__exit__()
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    final = history[-1] if history else {}
    return FitResult(model, history, final, out, epoch0, schedule)


def _milestone_steps(config: TrainConfig, total: int) -> list[int]:
    return [max(1, round(m * total)) for m in config.milestones]


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                 weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov)


def _lr_factor(config: TrainConfig, marks: list[int], step: int) -> float:
    if step < config.warmup_iters:
        if config.warmup_shape == "linear":
            return (step + 1) / config.warmup_iters
        return config.warmup_lr / config.lr
    return config.gamma ** sum(step >= m for m in marks)


def _preempted(signum: int, epoch: int, step: int, run: RunDir | None) -> Preempted:
    name = signal.Signals(signum).name
    where = ("rerun the same command to resume" if run is not None
             else "no run folder was written, so it cannot resume (pass out_dir / --out)")
    return Preempted(f"stopped at epoch {epoch} step {step} on {name}; {where}", signum=signum, epoch=epoch, step=step)


class _Stop:
    """SIGTERM / SIGINT / SIGUSR1 set a flag that the loop reads after each step (main thread only).

    A second signal while the checkpoint is written changes nothing: the write is atomic and
    the loop stops right after it.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for name in _SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _epoch_train_metrics(
    losses: Tensor, sizes: list[int], wrong: Tensor, epoch: int, step: int, out: Path | None, last_ckpt: int
) -> dict[str, float]:
    n = sum(sizes)
    w = torch.tensor(sizes, dtype=losses.dtype, device=losses.device)
    finite = torch.isfinite(losses)
    total, n_wrong, all_finite = torch.stack(
        [(losses * w).sum(), wrong.to(losses.dtype), finite.all().to(losses.dtype)]
    ).tolist()  # the epoch's one host sync
    if not all_finite:
        bad = int((~finite).nonzero()[0])
        g = step - len(sizes) + bad
        raise NonFiniteLoss(
            f"non-finite loss ({float(losses[bad])}) at epoch {epoch}, step {bad + 1} of the epoch "
            f"(global step {g}); " + _keeps(out, last_ckpt) + "; try a lower lr or a warm-up",
            epoch=epoch, step=g)
    return {"train_loss": total / n, "train_error": n_wrong / n}


def _keeps(out: Path | None, last: int) -> str:
    if out is None:
        return "no run folder was written"
    if not RunDir(out).has_checkpoint():
        return f"the run folder {out} has no checkpoint yet (it stopped before the first one)"
    return f"the run folder {out} keeps the last good checkpoint (epoch {last})"


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DataBundle, *, batch_size: int = 1000, device: str | torch.device | None = None
) -> dict[str, float]:
    """Mean cross-entropy and error (fraction wrong) on the test split, in eval mode.

    ``device``: where to run (default: where the model's parameters are). The model's
    train/eval mode is restored afterwards.
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    return _evaluate(model, data, batch_size, dev, distributed.Dist())


def _evaluate_on(
    model: nn.Module, data: DataBundle, batch_size: int, dev: torch.device, ddp: distributed.Dist,
    config: TrainConfig,
) -> dict[str, float]:
    """:func:`evaluate` inside fit: under torchrun sharded over ranks (below), in the run's precision
    and memory format (so the test numbers are those of the model as it trains)."""
    ddp.sync_buffers(model)
    return _evaluate(model, data, batch_size, dev, ddp, config.amp, config.channels_last)


def _autocast(amp: str | None, device: torch.device) -> Any:
    # bf16 autocast runs matmuls/convolutions in bfloat16 and keeps reductions such as
    # cross_entropy in float32 (torch's autocast op lists), on CPU and CUDA alike.
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()


@torch.no_grad()
def _evaluate(
    model: nn.Module, data: DataBundle, batch_size: int, dev: torch.device, ddp: distributed.Dist,
    amp: str | None = None, channels_last: bool = False,
) -> dict[str, float]:
    # Under torchrun the test batches are dealt round-robin to the ranks (every rank holds
    # rank 0's weights and BN statistics, see Dist.sync_buffers) and the sums are all-reduced,
    # so every rank gets the same numbers; single-process up to the order of the float64 sums.
    # Scored labels: one per example for a classifier, one per position for token targets
    # ((B, T) labels against (B, V, T) logits, resgrad.tokens.TokenView).
    n = data.y_test.numel()
    if n == 0:
        raise ValueError(f"dataset {data.name!r} has no test examples to evaluate")
    acc = torch.float32 if dev.type == "mps" else torch.float64
    loss_sum = torch.zeros((), dtype=acc, device=dev)
    wrong = torch.zeros((), dtype=torch.long, device=dev)
    was_training = model.training
    model.eval()
    try:
        for i, (xb, yb) in enumerate(data.batches(batch_size, train=False)):
            if i % ddp.world != ddp.rank:
                continue
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(amp, dev):
                logits = model(xb)
            loss_sum += F.cross_entropy(logits.float() if amp else logits, yb, reduction="sum").to(acc)
            wrong += (logits.argmax(1) != yb).sum()
    finally:
        model.train(was_training)
    sums = torch.stack([loss_sum, wrong.to(acc)])
    loss, n_wrong = ddp.all_sum_(sums).tolist()
    return {"loss": loss / n, "error": n_wrong / n}


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a run's model from ``config.json``'s ``model_spec`` with its last weights.

    Returns ``(model in eval mode on device, the config.json dict)``.
    """
    run = RunDir(run_dir)
    record = run.read_config(RUN_KIND)
    spec = record.get("model_spec")
    if not spec:
        raise ValueError(f"{run.path} records no model_spec, so its model cannot be rebuilt; train with "
                         "`resgrad train` or pass fit(..., model_spec={'name': ..., 'kwargs': {...}})")
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no checkpoint yet: the run stopped before its first "
                                "checkpoint; rerun the same train command to resume it")
    with torch.random.fork_rng(devices=[]):  # building initialises weights: keep the caller's RNG
        model = _build_from_spec(spec)
    model.load_state_dict(_load_checkpoint(run)["model"])
    return model.to(device).eval(), record


# ---- run folder -----------------------------------------------------------------------


def _open_shared(
    run: RunDir, record: dict[str, Any], resume: bool, marks: list[int], ddp: distributed.Dist
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """:func:`_open_run` on rank 0; then every rank holds rank 0's checkpoint and kept metrics.

    Rank 0 checks, claims and cuts back the folder while the others wait; it tells them how
    that went (an error there stops every rank with its line), then they read the checkpoint
    and metrics it left (the run folder is on storage every rank sees).
    """
    state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    if ddp.main:
        try:
            state = _open_run(run, record, resume, marks)
            if state is not None:
                history = run.keep_metrics(int(state["epoch"]))
        except Exception as e:
            if ddp.active:
                usage = isinstance(e, (ValueError, TypeError, FileNotFoundError))
                ddp.from_main({"failed": (str(e).strip().splitlines() or [type(e).__name__])[0], "usage": usage})
            raise
    if not ddp.active:
        return state, history
    told = ddp.from_main({"failed": None, "resume": state is not None})
    if ddp.main:
        return state, history
    if told["failed"] is not None:
        raise (ValueError if told["usage"] else RuntimeError)(f"rank 0 could not open {run.path}: {told['failed']}")
    if told["resume"]:
        state = _load_checkpoint(run)
        history = run.read_metrics()[: int(state["epoch"])]
    return state, history


def _open_run(run: RunDir, record: dict[str, Any], resume: bool, marks: list[int]) -> dict[str, Any] | None:
    """Check and prepare the run folder; return the checkpoint to resume from, if any."""
    if resume and not run.has_config() and run.has_checkpoint():
        raise ValueError(f"{run.path} has a checkpoint but no config.json, so it cannot be checked against this "
                         "config; restore config.json, or start over with --no-resume")
    if resume and run.has_config():
        old = run.read_config(RUN_KIND)
        grown = _grow(run, old, record, marks)
        run.claim(grown or record, compare=lambda r: _comparable(r, record.get("model_spec") is not None),
                  fresh=grown is not None)
        if run.has_checkpoint():
            return _load_checkpoint(run)
    # A fresh start: resume=False, or a run killed before its first checkpoint.
    run.need_write()
    run.remove_checkpoint()
    run.claim(record, fresh=True)
    run.rewrite_metrics([])
    return None


def _grow(run: RunDir, old: dict[str, Any], new: dict[str, Any], marks: list[int]) -> dict[str, Any] | None:
    """The record to continue under when ``new`` only trains for longer than ``old``; else None.

    The lr milestones are fractions of all steps, so more epochs move them. Continuing is
    allowed only when every step already run had the same lr under the new schedule (a
    constant lr, or milestones still ahead); otherwise one line says what to pass instead.
    """
    a, b = {**_DEFAULTS, **(old.get("config") or {})}, dict(new["config"])
    if a.get("epochs") == b.get("epochs") or not isinstance(a.get("epochs"), int):
        return None
    rest = [k for k in set(a) | set(b) if k not in (*_FREE_FIELDS, "epochs") and jsonable(a.get(k)) != jsonable(b.get(k))]
    if rest or jsonable(old.get("data", {}) | {"info": None}) != jsonable(new.get("data", {}) | {"info": None}):
        return None  # other differences: claim() names them
    done = int((old.get("schedule") or {}).get("total_steps", 0))
    if run.has_checkpoint():
        done = int(run.load_checkpoint().get("step", done))
    cfg_old = TrainConfig(**{k: v for k, v in a.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}})
    old_marks = list((old.get("schedule") or {}).get("milestone_steps", _milestone_steps(cfg_old, done)))
    cfg_new = TrainConfig(**{**b, "device": "cpu"})
    moved = [s for s in range(done) if _lr_factor(cfg_old, old_marks, s) != _lr_factor(cfg_new, marks, s)]
    if b["epochs"] < a["epochs"] or moved:
        why = ("fewer epochs than it has" if b["epochs"] < a["epochs"] else
               f"the lr milestones move from steps {old_marks} to {marks}, so step {moved[0]} already ran at "
               "another lr than the longer schedule gives it")
        raise ValueError(f"{run.path} trained with --epochs {a['epochs']}; --epochs {b['epochs']} would change "
                         f"its schedule ({why}); keep --epochs {a['epochs']}, or train the longer run in a new "
                         "--out folder (or here with --no-resume)")
    return {**new, "created": old.get("created"), "grown_from": {"epochs": a["epochs"], "steps": done}}


def _run_record(
    config: TrainConfig, device: torch.device, model: nn.Module, data: DataBundle,
    spec: dict | None, schedule: dict, ddp: distributed.Dist | None = None,
) -> dict[str, Any]:
    return {
        "kind": RUN_KIND,
        "format": _FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**asdict(config), "device": str(device)},
        "seed": config.seed,
        "model_spec": spec,
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "blocks": len(blocks(model)),
        "data": {
            "name": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "n_train": len(data.x_train), "n_test": len(data.x_test), "info": data.info,
        },
        "schedule": schedule,
        # Not part of the config compared on resume: the same global batches under any world size.
        "world_size": ddp.world if ddp is not None else 1,
        "backend": ddp.backend if ddp is not None else None,
        "environment": environment(str(device)),
    }


_DEFAULTS = jsonable(asdict(TrainConfig()))


def _comparable(record: dict[str, Any], spec: bool) -> dict[str, Any]:
    # fit() without a spec: the weights' shapes still must match, checked on load.
    # A field added after a run was recorded compares at its default (an older folder resumes).
    given = {**_DEFAULTS, **record.get("config", {})}
    cfg = {k: v for k, v in given.items() if k not in _FREE_FIELDS}
    data = {k: v for k, v in record.get("data", {}).items() if k != "info"}  # info: local paths
    return {"config": cfg, "data": data, **({"model_spec": record.get("model_spec")} if spec else {})}


# ---- checkpoints ------------------------------------------------------------------


def _callback_keys(cbs: Sequence[Callback]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for cb in cbs:
        name = type(cb).__qualname__
        keys.append(name if name not in seen else f"{name}#{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return keys


_SAFE = (str, int, float, bool, type(None), Tensor)


def _check_loadable(obj: Any, where: str) -> None:
    # torch.load(weights_only=True) refuses arbitrary objects: fail at save time, by name.
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_loadable(k, where)
            _check_loadable(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_loadable(v, f"{where}[{i}]")
    elif not isinstance(obj, _SAFE):
        raise TypeError(f"{where} is a {type(obj).__name__}, which torch.load(weights_only=True) cannot "
                        "read back; keep callback states to tensors, numbers, strings, lists and dicts")


def _save_checkpoint(
    run: RunDir, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    epoch: int, step: int, finished: bool, cbs: Sequence[Callback], partial: dict[str, Any] | None = None,
) -> None:
    cb_states = {}
    for key, cb in zip(_callback_keys(cbs), cbs, strict=True):
        s = cb.state_dict()
        _check_loadable(s, f"{key}.state_dict()")
        cb_states[key] = s
    state = {
        "format": _FORMAT, "epoch": epoch, "step": step, "finished": finished,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": _rng_state(), "callbacks": cb_states,
        "partial": partial,  # None at an epoch's end; else the position inside epoch + 1
    }
    run.save_checkpoint(state)


def _load_checkpoint(run: RunDir) -> dict[str, Any]:
    state = run.load_checkpoint()
    if state.get("format") != _FORMAT:
        raise ValueError(f"{run.checkpoint_path} is not a resgrad checkpoint of format {_FORMAT}; "
                         "use a new --out folder")
    return state


def _load_callback_states(cbs: Sequence[Callback], saved: dict[str, Any]) -> None:
    for key, cb in zip(_callback_keys(cbs), cbs, strict=True):
        if key in saved:  # a callback added since the checkpoint starts fresh
            cb.load_state_dict(saved[key])


def _rng_state() -> dict[str, Any]:
    # Tensors, ints and lists only, so the checkpoint loads under weights_only=True.
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)  # CUDA generators included
    np.random.seed(seed)
    random.seed(seed)


def _derived_seed(seed: int, epoch: int, stream: int) -> int:
    # One generator per (seed, epoch, purpose): a resumed run draws the same batches.
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


# ---- model spec -------------------------------------------------------------------


def _build_from_spec(spec: dict[str, Any]) -> nn.Module:
    kwargs = dict(spec.get("kwargs") or {})
    if "input_shape" in spec:
        return build_for(spec["name"], tuple(spec["input_shape"]), int(spec["num_classes"]), **kwargs)
    return build(spec["name"], **kwargs)


def _check_spec(spec: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"model_spec must be {{'name': registry name, 'kwargs': {{...}}}}, received {spec!r}")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise ValueError(f"model_spec['kwargs'] must be a dict, received {spec['kwargs']!r}")
    try:
        spec = json.loads(json.dumps(spec, allow_nan=False))
    except (TypeError, ValueError):
        raise ValueError(f"model_spec must be JSON-serialisable (it goes into config.json), received {spec!r}") from None
    spec.setdefault("kwargs", {})
    try:  # the meta device allocates nothing, even for ResNet-1202
        with torch.device("meta"):
            ref = _build_from_spec(spec)
    except (NotImplementedError, RuntimeError):
        with torch.random.fork_rng(devices=[]):
            ref = _build_from_spec(spec)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        odd = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        raise ValueError(f"model_spec {spec} does not rebuild this model (differs at {', '.join(odd[:3])}); "
                         "pass the name and kwargs the model was built with")
    return spec


# ---- devices and progress -----------------------------------------------------------


def _resolve_device(device: str | torch.device) -> torch.device:
    d = str(device).strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(d)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, received {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= (n := torch.cuda.device_count()):
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ValueError(f"device {device!r}: this process sees {n} CUDA device(s)"
                         + (f" (CUDA_VISIBLE_DEVICES={seen})" if seen is not None else "")
                         + "; use cuda (a worker of a pool spread over GPUs sees only its own GPU, as cuda:0)")
    return dev


def _on_device(data: DataBundle, device: torch.device, *, budget: float = 0.25) -> DataBundle:
    """``data`` with its tensors on a CUDA ``device`` once, when they take at most ``budget`` of its free memory.

    Batches are then gathered and augmented on the GPU: the permutation and the crop/flip
    draws still come from the same CPU generators (a few hundred numbers per batch), so a
    run draws exactly the batches it drew with host-resident data; no image crosses the bus
    per step. On the CPU (and MPS) the bundle is returned as it is.
    """
    if device.type != "cuda" or data.x_train.device == device:
        return data
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    size = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if size > budget * free:
        return data  # too big to keep resident: batches are copied per step as before
    x_train, y_train, x_test, y_test = (t.to(device) for t in tensors)
    return dataclasses.replace(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _line(m: dict[str, Any], epochs: int) -> str:
    return (f"epoch {m['epoch']}/{epochs}  train loss {m['train_loss']:.4f} error {m['train_error']:.2%}  "
            f"test loss {m['test_loss']:.4f} error {m['test_error']:.2%}  lr {m['lr']:.3g}  {m['seconds']:.1f}s")


class _Progress:
    """A rich bar on a terminal, else one plain line per epoch (stderr), or nothing."""

    def __init__(self, progress: bool | None, total: int, done: int, epochs: int) -> None:
        tty = sys.stderr.isatty()
        self.mode = "off" if progress is False else "bar" if (progress or tty) else "lines"
        self.epochs = epochs
        self._bar = None
        if self.mode == "bar":
            import rich.progress as rp
            from rich.console import Console

            self._bar = rp.Progress(
                rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                rp.TextColumn("steps"), rp.TimeElapsedColumn(), rp.TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("training", total=total, completed=done)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def epoch_end(self, m: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.console.print(_line(m, self.epochs), highlight=False)
        elif self.mode == "lines":
            print(_line(m, self.epochs), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

