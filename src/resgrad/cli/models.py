"""``resgrad models``: list the registered networks."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ._common import console, guarded


@guarded
def command(
    pattern: Annotated[str, typer.Argument(help="Glob over model names, e.g. 'plain*'.")] = "*",
    dims: Annotated[int, typer.Option(help="1 for signals (MNIST-1D), 2 for images.")] = 2,
) -> None:
    """List registered models with their parameter count and number of blocks.

    Examples:
      resgrad models
      resgrad models 'resnet*'
    """
    import resgrad
    from resgrad.nets.registry import describe

    names = resgrad.list_models(pattern)
    if not names:
        raise ValueError(f"no model matches {pattern!r}; try `resgrad models` for all of them")
    table = Table("model", "parameters", "blocks", "description", box=None)
    for name in names:
        kw = {} if "mlp" in name else {"dims": dims, "in_channels": 3 if dims == 2 else 1}
        with _meta_device():
            m = resgrad.build(name, **kw)
        n_params = sum(p.numel() for p in m.parameters())
        table.add_row(name, f"{n_params:,}", str(len(resgrad.blocks(m))), describe(name))
    console.print(table)


def _meta_device():
    # Build on the meta device: counting ResNet-1202's 19M parameters allocates nothing.
    import torch

    return torch.device("meta")
