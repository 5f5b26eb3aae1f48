"""``resgrad transformer``: pre-LN vs post-LN vs no-skip Transformer twins, and one report."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from resgrad.experiments import transformer as _transformer
from resgrad.experiments.config import default

from ._common import DeviceOpt, OutOpt, guarded, resolve_device, run_and_report
from ._executor import ExecutorOptions, executor_options

__all__ = ["command"]


@guarded
@executor_options
def command(
    size: Annotated[str, typer.Option(help="quick (seconds), default (~40 s on 2 CPU cores), full.")] = default(
        _transformer.TransformerConfig, "size"),
    text: Annotated[Path | None, typer.Option(
        help="A local text file: a character-level language model instead of MNIST-1D patches.")] = None,
    seq_len: Annotated[int, typer.Option(help="Characters per training window with --text.")] = inspect.signature(
        _transformer.preset).parameters["seq_len"].default,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per run (default: the size's).")] = None,
    out: OutOpt = None,
    device: DeviceOpt = "auto",  # not TransformerConfig's "cpu": the command takes CUDA when there is one
    *,
    executors: ExecutorOptions,
) -> None:
    """Where the LayerNorm sits on the residual path: gradients at init, warm-up, paths, lesions.

    Builds three Transformer twins with identical parameters (pre-LN x + F(LN(x)), post-LN
    LN(x + F(x)), no skip F(LN(x))), measures their gradients at initialisation from 2 to
    64 layers (Xiong et al. 2020), trains each with and without a learning-rate warm-up,
    decomposes the trained pre-LN net's gradient by path length over its 2L units, and
    deletes and reorders its layers (Gromov et al. 2024; Sun et al. 2024). Rerun the same
    command to resume; a finished one only re-renders its report.

    Examples:
      resgrad transformer
      resgrad transformer --size quick --out runs/tf-first-look
      resgrad transformer --text corpus.txt --seq-len 64
    """
    from resgrad.experiments.transformer import SIZES, preset, run

    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, received {size!r}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be >= 1, received {epochs}")
    if seq_len < 2:
        raise ValueError(f"--seq-len must be >= 2, received {seq_len}")
    if text is not None and not text.expanduser().is_file():
        raise FileNotFoundError(f"--text {text}: no such file; give a local text file (nothing is downloaded)")
    dev = resolve_device(device)
    config = preset(size, device=dev, text=None if text is None else str(text), seq_len=seq_len, epochs=epochs)
    if text is not None:  # a file too short for a training set: one line now, not after the flow stage
        from resgrad.experiments.transformer import load_data_for

        load_data_for(config)
    run_dir = out if out is not None else Path("runs") / f"transformer-{size}"

    run_and_report(executors, run_dir, lambda **kw: run(config, run_dir, **kw))
