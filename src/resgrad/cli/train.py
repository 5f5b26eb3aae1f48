"""``resgrad train``: train one registered net on one dataset, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import (
    CheckFailed,
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    SeedOpt,
    UsageError,
    console,
    guarded,
    resolve_device,
)

__all__ = ["command"]

_DATA_HELP = "Dataset: mnist1d, cifar10, digits or synthetic."


@guarded
def command(
    model: Annotated[str, typer.Argument(help="Registered model name, e.g. resnet20, plain56, resmlp-16x64.")],
    data: Annotated[str, typer.Option("--data", "-d", help=_DATA_HELP)],
    epochs: Annotated[int, typer.Option(help="Passes over the training set (He et al.: 164).")] = 164,
    batch_size: Annotated[int, typer.Option(help="Examples per SGD step.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate; divided by 10 at 50% and 75% of training.")] = 0.1,
    warmup_iters: Annotated[int, typer.Option(help="Steps at lr 0.01 first (He et al. used ~400 for ResNet-110).")] = 0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (smoke runs).")] = None,
    active_blocks: Annotated[
        int | None, typer.Option(help="Train only K random blocks per batch (Veit et al. 2016 §5.2).")
    ] = None,
    amp: Annotated[str | None, typer.Option(
        help="Mixed precision: bf16 runs forward and loss under torch.autocast(bfloat16) (CPU or CUDA).")] = None,
    channels_last: Annotated[bool, typer.Option(
        "--channels-last", help="Image nets and batches in channels_last memory format (faster on GPUs).")] = False,
    checkpoint_every: Annotated[str, typer.Option(
        help="Checkpoint every N epochs (2), N steps (500s) or N minutes (10m); each epoch's end counts.")] = "1",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue the run in --out if there is one.")] = True,
    data_dir: DataDirOpt = None,
) -> None:
    """Train a model with the He et al. 2015 recipe, writing a resumable run folder.

    Rerun the same command after an interruption (kill -9 included) to resume it. On
    SIGTERM, SIGINT or SIGUSR1 (Slurm's preemption signals) it finishes the current step,
    checkpoints mid-epoch and exits 128 + the signal; the rerun continues at that step.

    Examples:
      resgrad train resnet20 --data mnist1d --epochs 30
      resgrad train plain56 --data cifar10 --data-dir ~/data --device cuda
      resgrad train resmlp-16x64 --data synthetic --epochs 3 --out runs/smoke
      resgrad train resnet110 --data cifar10 --checkpoint-every 10m
      resgrad train resnet56 --data cifar10 --device cuda --amp bf16 --channels-last
      torchrun --nproc-per-node 4 -m resgrad train resnet110 --data cifar10   (one run, DDP over 4 GPUs)

    Under torchrun the run is one DistributedDataParallel job: the global batch is
    --batch-size (a multiple of the process count), rank 0 writes the run folder.
    """
    import torch

    import resgrad
    from resgrad import distributed
    from resgrad.train import NonFiniteLoss

    config = resgrad.TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, warmup_iters=warmup_iters, max_steps=max_steps,
        active_blocks=active_blocks, seed=seed, device=resolve_device(device), **checkpoint_option(checkpoint_every),
        amp=amp_option(amp), channels_last=channels_last,
    )
    name = model.strip().lower()
    try:  # an unknown name or a bad depth: say so before loading any data
        with torch.device("meta"):
            resgrad.build_for(name, (1, 8), 2)
    except (NotImplementedError, RuntimeError):
        pass  # the meta device could not build it; the real build below will tell
    key = data.strip().lower().replace("-", "").replace("_", "")
    bundle = resgrad.load_data(data, **({"data_dir": data_dir} if data_dir is not None and key == "cifar10" else {}))
    torch.manual_seed(seed)  # the initial weights are part of the run's seed
    net = resgrad.build_for(name, bundle.input_shape, bundle.num_classes)
    spec = {"name": name, "input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes, "kwargs": {}}
    run_dir = out if out is not None else Path("runs") / f"{name}-{bundle.name}-s{seed}"
    try:
        result = resgrad.fit(net, bundle, config, out_dir=run_dir, resume=resume, model_spec=spec)
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
    """``--checkpoint-every``: ``"2"`` epochs, ``"500s"`` steps or ``"10m"`` minutes, as TrainConfig fields."""
    t = text.strip().lower()
    try:
        if t.endswith("s"):
            n = int(t[:-1])
            key = "checkpoint_steps"
        elif t.endswith("m"):
            n = float(t[:-1])
            key = "checkpoint_minutes"
        else:
            n = int(t)
            key = "checkpoint_every"
    except ValueError:
        n, key = 0, ""
    if not key or not n > 0:
        raise ValueError(f"--checkpoint-every takes N epochs (2), N steps (500s) or N minutes (10m), received {text!r}")
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
