"""The training loop: :func:`fit` checks its inputs and builds a :class:`Loop`, which trains.

One step: draw the batch (the epoch's derived order), lesion all but ``active_blocks``
random blocks if asked, forward (bf16 autocast if asked), backward, callbacks, optimizer
and schedule step. After the step a signal, a step count or the clock may ask for a
mid-epoch checkpoint; after the epoch, evaluation, one metrics line, a checkpoint.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..callbacks import Callback
from ..data import DataBundle
from ..io import jsonable
from ..nets import blocks, gates
from ..rundir import RunDir
from ..stopping import NonFiniteLoss, Preempted, StopSignals
from .config import TrainConfig, validate
from .device import autocast, on_device, resolve_device
from .evaluation import _evaluate_on
from .model_spec import check_spec
from .progress import Progress
from .resume import load_callback_states, open_shared, run_record, save_checkpoint
from .rng import ORDER, PICK, derived_seed, seed_all, set_rng_state
from .schedule import lr_factor, make_optimizer, milestone_steps

__all__ = ["fit", "FitResult", "Loop"]


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model and the per-epoch metrics."""

    model: nn.Module
    history: list[dict[str, Any]]  # one dict per epoch, as in metrics.jsonl
    final: dict[str, Any]  # the last epoch's metrics
    out_dir: Path | None = None  # the run folder, when one was written
    resumed_from: int = 0  # epochs already done when this call started (0: a fresh run)
    schedule: dict[str, Any] = field(default_factory=dict)  # steps_per_epoch, total_steps, milestone_steps


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
    validate(config)  # fields may have been changed after construction
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

    device = resolve_device(config.device)
    if config.channels_last and len(data.input_shape) != 3:
        raise ValueError(f"channels_last applies to images (C, H, W); dataset {data.name!r} has inputs of shape "
                         f"{tuple(data.input_shape)}; drop channels_last (--channels-last) for it")
    spe = data.num_batches(config.batch_size)
    _check_world(config, data, spe)  # before joining the group: a bad batch size fails in one line
    ddp, device = distributed.setup(device)
    data = on_device(data, device)
    total = spe * config.epochs if config.max_steps is None else min(spe * config.epochs, config.max_steps)
    # Milestones are fractions of the steps actually run, so a max_steps run keeps the shape.
    marks = milestone_steps(config, total)
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
        model_spec = check_spec(model_spec, model)

    model.to(device)
    optimizer = make_optimizer(model, config)

    def factor(step: int) -> float:  # lr / config.lr for the step about to run
        return lr_factor(config, marks, step)

    # Stepped once per iteration, not per epoch, so warm-up and milestones fall on steps.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    run = RunDir(out_dir) if out_dir is not None else None
    loop = Loop(model=model, data=data, config=config, callbacks=cbs, folder=run, resume=resume,
                model_spec=model_spec, progress=progress, device=device, steps_per_epoch=spe, total=total,
                marks=marks, schedule=schedule, blocks=bl, optimizer=optimizer, scheduler=scheduler, ddp=ddp)
    with ExitStack() as held:
        if run is not None and ddp.main:  # one writer per run folder; a finished run may be read on read-only storage
            held.enter_context(run.locked(read_only_ok=True))
        return loop.train()


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


@dataclass
class Loop:
    """One training run, resolved by :func:`fit`: what it trains, where, and how far it has come."""

    model: nn.Module
    data: DataBundle  # on the training device when it fits there (device.on_device)
    config: TrainConfig
    callbacks: list[Callback]
    folder: RunDir | None  # the run folder, or None (nothing written, nothing resumed)
    resume: bool
    model_spec: dict[str, Any] | None
    progress: bool | None
    device: torch.device
    steps_per_epoch: int
    total: int  # SGD steps in all (max_steps applied)
    marks: list[int]  # lr milestone steps
    schedule: dict[str, Any]  # steps_per_epoch, total_steps, milestone_steps (recorded)
    blocks: list[nn.Module]  # the model's resgrad blocks (active_blocks samples among them)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ddp: distributed.Dist
    # Where it stands (set by train): global steps done, epochs done when this call started,
    # the epoch of the last checkpoint and its monotonic clock, a mid-epoch checkpoint's position.
    step: int = 0
    epoch0: int = 0
    last_ckpt: int = 0
    saved_at: float = 0.0
    partial: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # Set up by train for its epochs: the memory format, the forward module (DDP or the model),
    # the loss, the per-step losses of the epoch, the progress display, the signal flag.
    fmt: torch.memory_format | None = field(default=None, init=False)
    net: nn.Module | None = field(default=None, init=False)
    loss_fn: nn.Module | None = field(default=None, init=False)
    step_losses: Tensor | None = field(default=None, init=False)
    bar: Progress | None = field(default=None, init=False)
    stop: StopSignals | None = field(default=None, init=False)

    @property
    def writer(self) -> RunDir | None:
        """The run folder when this process writes it (under torchrun only rank 0 does)."""
        return self.folder if self.ddp.main else None

    @property
    def out(self) -> Path | None:
        return self.folder.path if self.folder is not None else None

    def _restore(self) -> FitResult | None:
        """Open the run folder; resume from its checkpoint. A finished run: its recorded result."""
        assert self.folder is not None
        record = run_record(self.config, self.device, self.model, self.data, self.model_spec, self.schedule,
                            self.ddp)
        state, self.history = open_shared(self.folder, record, self.resume, self.marks, self.ddp)
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch0, self.step = int(state["epoch"]), int(state["step"])
        if state["finished"] and self.step >= self.total:
            final = self.history[-1] if self.history else {}
            return FitResult(self.model, self.history, final, self.out, self.epoch0, self.schedule)
        set_rng_state(state["rng"])
        load_callback_states(self.callbacks, state.get("callbacks", {}))
        self.partial = state.get("partial")
        return None

    def train(self) -> FitResult:
        """Train to ``total`` steps (from the checkpoint, when the folder holds one)."""
        config, model, cbs, ddp, device = self.config, self.model, self.callbacks, self.ddp, self.device
        metrics_file = None
        if self.folder is not None:
            done = self._restore()
            if done is not None:
                return done
            if self.writer is not None:
                self.writer.need_write()  # there is training left to do
                metrics_file = self.writer.open_metrics()  # closed in the finally below
        if self.epoch0 == 0 and self.partial is None:
            seed_all(config.seed)
        self.fmt = torch.channels_last if config.channels_last else None
        if self.fmt is not None:
            model.to(memory_format=self.fmt)  # in place: the optimizer's parameters stay the same objects
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
        # Under torchrun: forward through DDP (it averages the gradients over ranks in backward);
        # callbacks, checkpoints and evaluation see the inner model (the single-process names).
        self.net = model
        if ddp.active:
            from torch.nn.parallel import DistributedDataParallel

            # A lesioned branch (active_blocks) takes no part in the step: DDP must be told to look.
            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=config.active_blocks is not None)
        self.loss_fn = nn.CrossEntropyLoss()
        # Per-step losses stay on the device; one host sync per epoch checks them all and
        # still names the first bad step (no .item() in the hot loop: it stalls CUDA queues).
        # Under torchrun each entry is this rank's share of the global batch's mean loss, summed
        # over ranks at the epoch's end (its one all-reduce of metrics).
        self.step_losses = torch.empty(self.steps_per_epoch, device=device)
        self.bar = Progress(self.progress if ddp.main else False, self.total, self.step, config.epochs)
        self.last_ckpt = self.epoch0
        self.stop = StopSignals(forward=True)  # a flag read after each step: stop at a checkpoint
        self.saved_at = time.monotonic()
        try:
            self.stop.__enter__()
            for cb in cbs:
                cb.on_train_start(model)
            epoch = self.epoch0
            while self.step < self.total:
                epoch += 1
                self._epoch(epoch, metrics_file)
            for cb in cbs:
                cb.on_train_end(model)
            ddp.barrier()  # rank 0's last checkpoint is written before any rank reports success
        except BaseException as exc:
            for cb in cbs:  # let callbacks release what they hold (hooks, files); Lightning's name
                cb.on_exception(model, exc)
            raise
        finally:
            self.stop.__exit__()
            self.bar.close()
            if metrics_file is not None:
                metrics_file.close()
        final = self.history[-1] if self.history else {}
        return FitResult(model, self.history, final, self.out, self.epoch0, self.schedule)

    def _epoch(self, epoch: int, metrics_file: Any) -> None:
        """Train epoch ``epoch`` (1-based) from where it stands, evaluate, record, checkpoint."""
        config, model, cbs, ddp, device = self.config, self.model, self.callbacks, self.ddp, self.device
        k, bl, spe = config.active_blocks, self.blocks, self.steps_per_epoch
        step_losses, optimizer, scheduler = self.step_losses, self.optimizer, self.scheduler
        t0 = time.perf_counter()
        model.train()
        order = torch.Generator().manual_seed(derived_seed(config.seed, epoch, ORDER))
        pick = torch.Generator().manual_seed(derived_seed(config.seed, epoch, PICK)) if k else None
        wrong = torch.zeros((), dtype=torch.long, device=device)
        sizes: list[int] = []
        skip = 0
        if self.partial is not None:  # resume inside this epoch: replay its data order up to the position
            partial = self.partial
            skip = int(partial["pos"])
            # The checkpoint holds the sums over ranks: rank 0 carries them, the others start at 0.
            step_losses[:skip] = partial["losses"].to(step_losses) if ddp.main else 0
            wrong += int(partial["wrong"]) if ddp.main else 0
            sizes = [int(n) for n in partial["sizes"]]
            if pick is not None and partial.get("pick") is not None:
                pick.set_state(partial["pick"])
            self.partial = None
        lr = optimizer.param_groups[0]["lr"]
        for i, (xb, yb) in enumerate(self.data.batches(config.batch_size, train=True, generator=order)):
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
            if self.fmt is not None:
                xb = xb.contiguous(memory_format=self.fmt)
            if pick is not None:
                # Veit et al. 2016 §5.2: lesion all but k random blocks for this batch, so
                # every path that trains passes through at most k branches.
                off = torch.randperm(len(bl), generator=pick)[k:].tolist()
                ctx = gates(bl, lesion=off)
            else:
                ctx = nullcontext()
            with ctx, autocast(config.amp, device):
                logits = self.net(xb)
                if ddp.active:
                    # This rank's summed loss over the GLOBAL batch size, times world (DDP
                    # averages over ranks): the gradient of the global batch's mean loss, also
                    # when the last batch splits unevenly.
                    loss = F.cross_entropy(logits, yb, reduction="sum") * (ddp.world / n_global)
                else:
                    loss = self.loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for cb in cbs:
                cb.on_after_backward(model, self.step)
            for cb in cbs:
                cb.on_before_optimizer_step(model, optimizer, self.step)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step_losses[i] = loss.detach() / ddp.world if ddp.active else loss.detach()
            wrong += (logits.detach().argmax(1) != yb).sum()
            sizes.append(n_global)
            self.step += 1
            self.bar.advance()
            if self.step >= self.total:
                break
            if i + 1 == spe:
                continue  # the epoch's last step: its end below checkpoints (and stops on a signal)
            signum, due = self._agree(self.stop.signum, bool(config.checkpoint_minutes) and
                                      time.monotonic() - self.saved_at >= 60 * (config.checkpoint_minutes or 0))
            if self.folder is not None and (
                    signum is not None or due
                    or (config.checkpoint_steps and self.step % config.checkpoint_steps == 0)):
                self._save_partial(epoch, i + 1, wrong, sizes, pick)
                self.saved_at = time.monotonic()
            if signum is not None:
                raise self._preempted(signum, epoch)
        self._end_epoch(epoch, t0, lr, wrong, sizes, metrics_file)

    def _end_epoch(self, epoch: int, t0: float, lr: float, wrong: Tensor, sizes: list[int], metrics_file: Any) -> None:
        config, model = self.config, self.model
        losses, wrong = self._global_sums(self.step_losses[: len(sizes)], wrong)
        train = _epoch_train_metrics(losses, sizes, wrong, epoch, self.step, self.out, self.last_ckpt)
        test = _evaluate_on(model, self.data, config.eval_batch_size, self.device, self.ddp, config)
        if not math.isfinite(test["loss"]):
            raise NonFiniteLoss(
                f"non-finite test loss after epoch {epoch} (global step {self.step}): the weights diverged; "
                + _keeps(self.out, self.last_ckpt), epoch=epoch, step=self.step - 1)
        metrics = {"epoch": epoch, **train, "test_loss": test["loss"], "test_error": test["error"],
                   "lr": lr, "seconds": time.perf_counter() - t0, "steps": self.step}
        for cb in self.callbacks:  # callbacks may add entries; they are written with the epoch
            cb.on_train_epoch_end(model, epoch, metrics)
        metrics = jsonable(metrics)  # in memory exactly as metrics.jsonl will give it back
        self.history.append(metrics)
        self.bar.epoch_end(metrics)
        signum, _ = self._agree(self.stop.signum, False)
        writer = self.writer
        if writer is not None:
            assert metrics_file is not None
            writer.append_metrics(metrics_file, metrics)
        if self.folder is not None:
            done = self.step >= self.total
            if done or epoch % config.checkpoint_every == 0 or signum is not None:
                if writer is not None:
                    save_checkpoint(writer, model, self.optimizer, self.scheduler, epoch, self.step, done,
                                    self.callbacks, history=self.history, config=config)
                self.last_ckpt = epoch
                self.saved_at = time.monotonic()
        if signum is not None and self.step < self.total:
            raise self._preempted(signum, epoch)

    def _global_sums(self, losses: Tensor, wrong: Tensor) -> tuple[Tensor, Tensor]:
        # Every rank's share of the losses and its wrong count, summed over ranks (one all-reduce).
        if not self.ddp.active:
            return losses, wrong
        buf = torch.cat([losses.detach(), wrong.to(losses.dtype).view(1)])
        self.ddp.all_sum_(buf)
        return buf[:-1], buf[-1].round().long()

    def _save_partial(self, epoch: int, pos: int, wrong: Tensor, sizes: list[int], pick: torch.Generator | None) -> None:
        losses, wrong = self._global_sums(self.step_losses[:pos], wrong)  # every rank takes part; rank 0 writes
        if self.writer is not None:
            part = {"pos": pos, "losses": losses.detach().cpu(), "wrong": int(wrong), "sizes": list(sizes),
                    "pick": pick.get_state() if pick is not None else None}
            save_checkpoint(self.writer, self.model, self.optimizer, self.scheduler, epoch - 1, self.step, False,
                            self.callbacks, part, history=self.history, config=self.config)

    def _agree(self, signum: int | None, due: bool) -> tuple[int | None, bool]:
        # One signal on one rank stops them all at the same step; a clock checkpoint likewise.
        if not self.ddp.active:
            return signum, due
        sig, d = self.ddp.all_max([signum or 0, int(due)])
        return (sig or None), bool(d)

    def _preempted(self, signum: int, epoch: int) -> Preempted:
        self.ddp.barrier()  # rank 0's checkpoint is on disk before any rank exits (torchrun then stops the rest)
        name = signal.Signals(signum).name
        where = ("rerun the same command to resume" if self.folder is not None
                 else "no run folder was written, so it cannot resume (pass out_dir / --out)")
        return Preempted(f"stopped at epoch {epoch} step {self.step} on {name}; {where}", signum=signum, epoch=epoch,
                         step=self.step)


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
