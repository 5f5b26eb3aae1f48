"""``resgrad pretrained``: the seed's question asked of real pretrained models on real text, and one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resgrad.experiments import pretrained as _pretrained
from resgrad.experiments.config import default

from ._common import DeviceOpt, OutOpt, UsageError, guarded, resolve_device, say

__all__ = ["command"]


@guarded
def command(
    specs: Annotated[list[str] | None, typer.Argument(
        metavar="[SPEC]...", help="Models: pretrained:smollm2-135m, pretrained:minilm-l6, gguf:PATH, hf:FOLDER "
        "(default: the two pretrained ones).")] = None,
    size: Annotated[str, typer.Option(help="quick (seconds per model), default (<= 10 min for both on 2 CPU "
                                           "cores), full.")] = default(_pretrained.PretrainedConfig, "size"),
    text: Annotated[Path | None, typer.Option(
        help="A UTF-8 text file (default: the offline corpus, the standard library's pydoc_data.topics).")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per sequence (default: the size's).")] = None,
    out: OutOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Gradient flow, branch Jacobians, hidden-state growth, paths and layer removal of pretrained models.

    For each model, on one fixed batch of real text with the model's own loss: per-unit weight
    and residual-stream gradients, how far each unit is from the identity (||J_F u||/||u||, the
    input/output cosine, the skip/branch split of the gradient), the hidden-state norm per
    layer and the angular distance between every pair of layers (Gromov et al. 2024), the exact
    gradient by path length over all 2L units beside Veit's sampled view, and layers removed
    one at a time and k consecutive (chosen by angular distance, ShortGPT's Block Influence and
    the oracle), the middle ones skipped, reversed and shuffled (Sun et al. 2024). Rerun the same
    command to reuse a finished folder; it only re-renders the report.

    Examples:
      resgrad pretrained --size quick
      resgrad pretrained pretrained:minilm-l6 --text notes.txt --seq-len 32
    """
    from resgrad.report import render

    if size not in _pretrained.SIZES:
        raise UsageError(f"--size must be one of {', '.join(_pretrained.SIZES)}, received {size!r}")
    if seq_len is not None and seq_len < 2:
        raise UsageError(f"--seq-len must be >= 2, received {seq_len}")
    if text is not None and not text.expanduser().is_file():
        raise FileNotFoundError(f"--text {text}: no such file; give a local UTF-8 text file (nothing is downloaded)")
    from resgrad.pretrained import is_pretrained_spec

    bad = [s for s in specs or () if not is_pretrained_spec(s)]
    if bad:
        raise UsageError(f"SPEC {bad[0]!r} is not a pretrained model; give pretrained:NAME, gguf:PATH or hf:FOLDER")
    config = _pretrained.preset(size, specs=tuple(specs) if specs else None, text=None if text is None else str(text),
                                seq_len=seq_len, device=resolve_device(device))
    run_dir = out if out is not None else Path("runs") / f"pretrained-{size}"
    result = _pretrained.run(config, run_dir, log=say)
    if not result.models:
        raise typer.Exit(_missing(result))
    say(f"report: {render(result, run_dir / 'report.html')}")


def _missing(result: _pretrained.PretrainedResult) -> int:
    from ._common import err_console

    for s in result.skipped:
        err_console.print(f"[bold red]error:[/] {s.spec}: {s.reason}", highlight=False, soft_wrap=True)
    return 2
