"""``resgrad train``: train one registered net on one dataset, resumably.

Every option that sets a :class:`~resgrad.train.TrainConfig` field takes its default and its
help from that field (``TrainConfig`` declares them once); ``CONFIG_OPTIONS`` maps options to
fields, and a test checks that each default is the config's.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from resgrad.train.config import TrainConfig

from ._common import (
    CheckFailed,
    DataDirOpt,
    OutOpt,
    UsageError,
    console,
    err_console,
    guarded,
    resolve_device,
)

__all__ = ["command", "CONFIG_OPTIONS"]

_DATA_HELP = "Dataset: mnist1d, cifar10, digits or synthetic."
_D = TrainConfig()  # the defaults, declared once in TrainConfig


def _opt(name: str, *flags: str, extra: str = "") -> typer.models.OptionInfo:
    return typer.Option(*flags, help=TrainConfig.help(name) + (f" {extra}" if extra else ""))


# TrainConfig field each option sets (the option's parameter name is the field name).
CONFIG_OPTIONS = ("epochs", "batch_size", "lr", "warmup_iters", "max_steps", "active_blocks", "amp", "channels_last",
                  "checkpoint_every", "checkpoint_steps", "checkpoint_minutes", "seed", "device")


@guarded
def command(
    model: Annotated[str, typer.Argument(help="Registered model name, e.g. resnet20, plain56, resmlp-16x64.")],
    data: Annotated[str, typer.Option("--data", "-d", help=_DATA_HELP)],
    epochs: Annotated[int, _opt("epochs")] = _D.epochs,
    batch_size: Annotated[int, _opt("batch_size")] = _D.batch_size,
    lr: Annotated[float, _opt("lr", extra="Divided by 10 at 50% and 75% of training.")] = _D.lr,
    warmup_iters: Annotated[int, _opt("warmup_iters")] = _D.warmup_iters,
    max_steps: Annotated[int | None, _opt("max_steps")] = _D.max_steps,
    active_blocks: Annotated[int | None, _opt("active_blocks")] = _D.active_blocks,
    amp: Annotated[str | None, _opt("amp", extra="(bf16 or none; CPU or CUDA).")] = _D.amp,
    channels_last: Annotated[bool, _opt("channels_last", "--channels-last")] = _D.channels_last,
    checkpoint_every: Annotated[str, _opt(
        "checkpoint_every", extra="(The older 500s and 10m forms still work: use --checkpoint-steps / "
                                  "--checkpoint-minutes.)")] = str(_D.checkpoint_every),
    checkpoint_steps: Annotated[int | None, _opt("checkpoint_steps")] = _D.checkpoint_steps,
    checkpoint_minutes: Annotated[float | None, _opt("checkpoint_minutes")] = _D.checkpoint_minutes,
    seed: Annotated[int, _opt("seed", "--seed", extra="(and of the initial weights).")] = _D.seed,
    device: Annotated[str, _opt("device", "--device")] = _D.device,
    out: OutOpt = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue the run in --out if there is one.")] = True,
    data_dir: DataDirOpt = None,
    monitor: Annotated[int | None, typer.Option(
        "--monitor", metavar="N", help="Every N steps write per-layer gradient norms and alarms to "
                                       "OUT/monitor.jsonl; follow them live with `resgrad watch OUT`.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Train even when the model's estimated memory exceeds the "
                                                        "free memory.")] = False,
) -> None:
    """Train a model with the He et al. 2015 recipe, writing a resumable run folder.

    Rerun the same command after an interruption (kill -9 included) to resume it. On
    SIGTERM, SIGINT or SIGUSR1 (Slurm's preemption signals) it finishes the current step,
    checkpoints mid-epoch and exits 128 + the signal; the rerun continues at that step.

    Examples:
      resgrad train resnet20 --data mnist1d --epochs 30
      resgrad train plain56 --data cifar10 --data-dir ~/data --device cuda
      resgrad train resmlp-16x64 --data synthetic --epochs 3 --out runs/smoke
      resgrad train resnet110 --data cifar10 --checkpoint-minutes 10
      resgrad train resnet56 --data cifar10 --device cuda --amp bf16 --channels-last
      torchrun --nproc-per-node 4 -m resgrad train resnet110 --data cifar10   (one run, DDP over 4 GPUs)

    Under torchrun the run is one DistributedDataParallel job: the global batch is
    --batch-size (a multiple of the process count), rank 0 writes the run folder.
    """
    import torch

    import resgrad
    from resgrad import distributed
    from resgrad.train import NonFiniteLoss

    if monitor is not None and monitor < 1:
        raise UsageError(f"--monitor takes N >= 1 (measure every N steps), received {monitor}")
    cadence = checkpoint_option(checkpoint_every)
    for key, given in (("checkpoint_steps", checkpoint_steps), ("checkpoint_minutes", checkpoint_minutes)):
        if given is not None:
            if key in cadence:
                raise UsageError(f"--{key.replace('_', '-')} is given twice (also as --checkpoint-every "
                                 f"{checkpoint_every}); pass it once")
            cadence[key] = given
    config = resgrad.TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, warmup_iters=warmup_iters, max_steps=max_steps,
        active_blocks=active_blocks, seed=seed, device=resolve_device(device), **cadence,
        amp=amp_option(amp), channels_last=channels_last,
    )
    name = model.strip().lower()
    from resgrad.train.memory import check_fits, estimate

    # An unknown name or a bad depth: say so before loading any data (meta device: nothing allocated);
    # a net the meta device cannot build is left to the real build below to tell.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        estimate(name, (1, 8), 2, batch_size=1)
    key = data.strip().lower().replace("-", "").replace("_", "")
    bundle = resgrad.load_data(data, **({"data_dir": data_dir} if data_dir is not None and key == "cifar10" else {}))
    # Parameters and activations against free memory, before building (resmlp-100000000x64 would never end).
    check_fits(name, bundle.input_shape, bundle.num_classes, batch_size=config.batch_size,
               optimizer=config.optimizer, device=config.device, force=force)
    torch.manual_seed(seed)  # the initial weights are part of the run's seed
    net = resgrad.build_for(name, bundle.input_shape, bundle.num_classes)
    spec = {"name": name, "input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes, "kwargs": {}}
    run_dir = out if out is not None else Path("runs") / f"{name}-{bundle.name}-s{seed}"
    callbacks = []
    if monitor is not None:
        from resgrad.integrations.monitor_file import run_callbacks
        from resgrad.rundir import RunDir

        callbacks = run_callbacks(net, RunDir(run_dir).monitor_path, monitor, log=lambda line: err_console.print(
            f"[yellow]alarm:[/] {line}", highlight=False, soft_wrap=True))
    try:
        result = resgrad.fit(net, bundle, config, out_dir=run_dir, resume=resume, model_spec=spec,
                             callbacks=callbacks)
    except NonFiniteLoss as e:
        raise CheckFailed(str(e)) from e
    finally:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        distributed.shutdown()  # under torchrun: leave the process group fit joined
    if rank != 0:
        return  # rank 0 prints the result for the run

    if result.history and result.history[-1]["epoch"] == result.resumed_from:  # nothing left to train
        console.print(f"{run_dir} already finished; showing its recorded result", highlight=False, soft_wrap=True)
    _print_table(result.history, sum(p.numel() for p in net.parameters()))
    console.print(f"run folder: {run_dir}", highlight=False, soft_wrap=True)


def amp_option(text: str | None) -> str | None:
    """``--amp``: ``bf16`` (or ``none``/``fp32`` for full precision) as ``TrainConfig.amp``."""
    if text is None or text.strip().lower() in ("none", "fp32", "float32"):
        return None
    t = text.strip().lower().replace("bfloat16", "bf16")
    if t != "bf16":
        raise UsageError(f"--amp takes bf16 (or none), received {text!r}")
    return t


def checkpoint_option(text: str) -> dict[str, int | float]:
    """``--checkpoint-every N`` (epochs) as TrainConfig fields.

    The older forms ``500s`` (steps: it read as seconds) and ``10m`` (minutes) still work,
    with one deprecation line naming ``--checkpoint-steps`` / ``--checkpoint-minutes``.
    """
    t = text.strip().lower()
    try:
        if t.endswith("s"):
            n: int | float = int(t[:-1])
            key, new = "checkpoint_steps", f"--checkpoint-steps {int(t[:-1])}"
        elif t.endswith("m"):
            n = float(t[:-1])
            key, new = "checkpoint_minutes", f"--checkpoint-minutes {t[:-1]}"
        else:
            n = int(t)
            key, new = "checkpoint_every", ""
    except ValueError:
        n, key, new = 0, "", ""
    if not key or not n > 0:
        raise UsageError(f"--checkpoint-every takes N epochs (2); for steps or minutes pass --checkpoint-steps N "
                         f"or --checkpoint-minutes M; received {text!r}")
    if new:
        msg = f"--checkpoint-every {text.strip()} is deprecated; use {new}"
        warnings.warn(msg, DeprecationWarning, stacklevel=2)
        err_console.print(f"[yellow]warning:[/] {msg}", highlight=False, soft_wrap=True)
    return {key: n}


def _print_table(history: list[dict], n_params: int) -> None:
    if not history:
        return
    last = history[-1]
    table = Table("", "loss", "error", box=None)
    table.add_row("train", f"{last['train_loss']:.4f}", f"{last['train_error']:.2%}")
    table.add_row("test", f"{last['test_loss']:.4f}", f"{last['test_error']:.2%}")
    console.print(table)
    seconds = sum(h.get("seconds", 0.0) for h in history)
    n = last["epoch"]
    console.print(f"{n} epoch{'s' * (n != 1)}, {last['steps']:,} steps, {n_params:,} parameters, {seconds:.1f} s",
                  highlight=False)
