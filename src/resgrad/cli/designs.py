"""``resgrad designs``: the residual designs of today side by side, at initialisation and trained, and one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resgrad.experiments import designs as _designs
from resgrad.experiments.config import default

from ._common import DeviceOpt, OutOpt, guarded, resolve_device, run_and_report
from ._executor import ExecutorOptions, executor_options

__all__ = ["command"]


@guarded
@executor_options
def command(
    size: Annotated[str, typer.Option(help="quick (minutes), default (~20 min on 2 CPU cores with the pool), "
                                           "full.")] = default(_designs.DesignsConfig, "size"),
    designs: Annotated[str | None, typer.Option(
        help="Comma-separated design names, e.g. preln,periln,mhc,resnet,fixup (default: every design).")] = None,
    text: Annotated[Path | None, typer.Option(
        help="A local UTF-8 text file for the language model (default: the offline corpus, pydoc_data.topics).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="A local CIFAR-10 folder: the CNN designs train on it instead of MNIST-1D (He et al. 2015's recipe: "
             "SGD lr 0.1, momentum 0.9, weight decay 1e-4, pad-crop-flip), on a class-balanced subset: quick 256 / "
             "128, default 5,000 / 1,000 images, full all.")] = None,
    cifar_train: Annotated[int | None, typer.Option(
        help="CIFAR-10 training images (with --data-dir; 0: all 50,000; default: the size's subset).")] = None,
    cifar_test: Annotated[int | None, typer.Option(
        help="CIFAR-10 test images (with --data-dir; 0: all 10,000; default: the size's subset).")] = None,
    out: OutOpt = None,
    device: DeviceOpt = "auto",  # not DesignsConfig's "cpu": the command takes CUDA when there is one
    *,
    executors: ExecutorOptions,
) -> None:
    """Residual designs side by side: gradients, Amax, signal propagation at init; LM and CNN training.

    Transformer designs (pre-LN, post-LN, no skip, DeepNorm, Peri-LN, LayerNorm Scaling,
    Mix-LN, ReZero, DyT, hyper-connections, mHC) and CNN designs (plain, BN ResNet, Fixup,
    SkipInit, NF-ResNet), measured at initialisation from 2 to 128 layers and trained over
    three seeds with one recipe (a character-level LM on an offline corpus; MNIST-1D, or
    CIFAR-10 with --data-dir); post-LN also at lr/3 (Xiong et al. 2020: it needs a warm-up
    or a smaller lr), its better lr reported. Each paper's claim is judged beside the
    numbers. Rerun the same command to resume; a finished one only re-renders its report.

    Examples:
      resgrad designs --size quick
      resgrad designs --designs preln,periln,mhc,hc --workers 2
      resgrad designs --text corpus.txt --data-dir ~/data/cifar10
      resgrad designs --designs resnet,fixup,nf --data-dir ~/data/cifar10 --cifar-train 0 --cifar-test 0
    """
    from resgrad.experiments.designs import SIZES, preset, run

    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, received {size!r}")
    names = None
    if designs is not None:
        names = tuple(n.strip().lower() for n in designs.split(",") if n.strip())
        if not names:
            raise ValueError(f"--designs must name at least one design, received {designs!r}")
    if text is not None and not text.expanduser().is_file():
        raise FileNotFoundError(f"--text {text}: no such file; give a local text file (nothing is downloaded)")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir}: no such folder; give the CIFAR-10 folder "
                                "(nothing is downloaded)")
    subset = None
    if cifar_train is not None or cifar_test is not None:
        if data_dir is None:
            raise ValueError("--cifar-train/--cifar-test need --data-dir DIR (a CIFAR-10 folder); without it the "
                             "CNN designs train on MNIST-1D")
        for flag, v in (("--cifar-train", cifar_train), ("--cifar-test", cifar_test)):
            if v is not None and v < 0:
                raise ValueError(f"{flag} must be 0 (all) or a positive count of images, received {v}")
        from resgrad.experiments.designs import CIFAR_SUBSET

        base = CIFAR_SUBSET[size]
        subset = tuple(b if v is None else (v or None) for v, b in ((cifar_train, base[0]), (cifar_test, base[1])))
    dev = resolve_device(device)
    config = preset(size, device=dev, designs=names, text=None if text is None else str(text),
                    data_dir=None if data_dir is None else str(data_dir), cifar_subset=subset)
    run_dir = out if out is not None else Path("runs") / f"designs-{size}"

    run_and_report(executors, run_dir, lambda **kw: run(config, run_dir, **kw))
