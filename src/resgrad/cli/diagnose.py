"""``resgrad diagnose``: per-layer gradient norms of any model, flagged against their trend through depth."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

from ._common import (
    CheckFailed,
    DeviceOpt,
    OutOpt,
    SeedOpt,
    UsageError,
    console,
    guarded,
    resolve_device,
)
from ._spec import SPEC_HELP, TOKEN_HELP, parse_shape

if TYPE_CHECKING:
    from resgrad.results import DiagnoseResult

__all__ = ["command", "diagnose"]


@guarded
def command(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP, show_default=False)],
    input_shape: Annotated[
        str | None, typer.Option("--input-shape", help="One example's shape, e.g. 3,224,224 (random inputs).")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", help="Use a dataset's batch: mnist1d, cifar10, digits, synthetic.")] = None,
    steps: Annotated[int, typer.Option(help="Measured steps; SGD steps (lr 0.01) between them. 1 = at init.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 16,
    threshold: Annotated[float, typer.Option(
        help="Flag layers this many decades off the gradient's trend through depth (or, where the trend "
             "vanishes or explodes, from its output end).")] = 2.0,
    max_rows: Annotated[int, typer.Option(help="Rows shown in the table (all are in the JSON).")] = 60,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    vocab: Annotated[int | None, typer.Option("--vocab", help=TOKEN_HELP["vocab"])] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help=TOKEN_HELP["seq_len"])] = None,
    text: Annotated[Path | None, typer.Option("--text", help=TOKEN_HELP["text"])] = None,
    layers: Annotated[int | None, typer.Option("--layers", help=TOKEN_HELP["layers"])] = None,
    width: Annotated[int | None, typer.Option("--width", help=TOKEN_HELP["width"])] = None,
) -> None:
    """Measure every layer's gradient on one batch and flag vanishing, exploding and non-finite ones.

    SPEC `package.module:factory` imports and runs your code. Writes results.json and
    diagnose.png; exits 1 when a gradient is NaN/Inf.

    Examples:
      resgrad diagnose plain56 --data mnist1d
      resgrad diagnose torchvision:resnet18 --input-shape 3,224,224
      resgrad diagnose mypkg.models:make_net --input-shape 3,32,32 --steps 5
      resgrad diagnose runs/resnet20-mnist1d-s0
      resgrad diagnose hf:gpt2 --layers 4 --width 64 --vocab 256 --seq-len 32
      resgrad diagnose hf:bert --text README.md --seq-len 64   (bytes as ids; the model's own loss)
      resgrad diagnose pretrained:smollm2-135m --seq-len 32   (the offline corpus; next-token loss)
      resgrad diagnose pretrained:minilm-l6 --text notes.txt   (its contrastive loss on sentence pairs)
    """
    if input_shape is not None and data is not None:
        raise UsageError("pass --input-shape or --data, not both")
    if (vocab is not None or seq_len is not None or text is not None) and (input_shape or data):
        raise UsageError("token options (--vocab/--seq-len/--text) replace --input-shape/--data; pass one kind")
    if steps < 1 or batch_size < 1:
        raise UsageError(f"--steps and --batch-size must be >= 1, received {steps} and {batch_size}")
    result, out_dir = diagnose(spec, input_shape=parse_shape(input_shape), data=data, steps=steps,
                               batch_size=batch_size, threshold=threshold, seed=seed, device=resolve_device(device),
                               out=out, vocab=vocab, seq_len=seq_len, text=text, layers=layers, width=width)
    from resgrad.report import diagnose_figure, save_figure

    fig = diagnose_figure(result)
    if fig is not None:
        fig = save_figure(fig, out_dir / "diagnose.png", dpi=110, tight=True)
    _print(result, max_rows, [out_dir / "results.json"] + ([fig] if fig else []))
    bad = [r.name for r in result.layers if r.nonfinite]
    if bad:
        raise CheckFailed(f"non-finite gradients in {len(bad)} layer(s), first {bad[0]}; "
                          f"see {out_dir / 'results.json'}")


def diagnose(spec: str, *, input_shape: tuple[int, ...] | None = None, data: str | None = None, steps: int = 1,
             batch_size: int = 16, threshold: float = 2.0, seed: int = 0, device: str = "cpu",
             out: Path | None = None, vocab: int | None = None, seq_len: int | None = None,
             text: Path | None = None, layers: int | None = None,
             width: int | None = None) -> tuple[DiagnoseResult, Path]:
    """Resolve SPEC, run the diagnose experiment into ``out``; return (result, folder).

    Token models (any of ``vocab``/``seq_len``/``text``, or an ``hf:ARCH`` text model) are
    measured on token ids with the model's own loss (``resgrad.tokens.own_loss``)."""
    import torch

    import resgrad
    from resgrad.experiments.diagnose import DiagnoseConfig, run

    from ._spec import resolve_spec, token_inputs, wants_tokens

    config = DiagnoseConfig(spec=spec, input_shape=input_shape, data=data, steps=steps, batch_size=batch_size,
                            threshold=threshold, seed=seed, device=device)
    from ._pretrained import is_pretrained

    if is_pretrained(spec):  # real text through its own tokenizer; the loss is its own training objective
        return _pretrained(config, spec, out, text, seq_len, run, vocab=vocab, layers=layers, width=width,
                           input_shape=input_shape, data=data)
    torch.manual_seed(seed)  # a registry/factory model initialises its weights from the seed
    bundle = resgrad.load_data(data) if data is not None else None
    rm = resolve_spec(spec, input_shape=bundle.input_shape if bundle is not None else input_shape,
                      num_classes=bundle.num_classes if bundle is not None else None,
                      layers=layers, width=width, vocab=vocab)
    out_dir = Path(out) if out is not None else Path("runs") / f"diagnose-{_slug(spec)}"
    if bundle is None and input_shape is None and wants_tokens(rm, vocab, seq_len, text):
        from resgrad.tokens import model_vocab, own_loss, token_bundle

        ids, causal = token_inputs(rm, vocab=vocab, seq_len=seq_len, text=text, n=batch_size, seed=seed)
        nv = model_vocab(rm.model) or int(ids.max()) + 1
        config.tokens = {"vocab": nv, "seq_len": int(ids.shape[1]), "text": None if text is None else str(text),
                         "causal": causal, "tokenisation": "bytes" if text is not None else "random ids"}
        tb = token_bundle(ids, nv, causal, "text" if text is not None else "random-tokens")
        return run(config, out_dir, model=rm.model, data=tb, source=rm.kind,
                   loss=lambda m, x, y: own_loss(m, x, causal)), out_dir
    if bundle is None and rm.data and input_shape is None:  # a run folder: its own dataset
        bundle = resgrad.load_data(rm.data)
    if bundle is None and config.input_shape is None and rm.input_shape is not None:
        config.input_shape = tuple(rm.input_shape)
    return run(config, out_dir, model=rm.model, data=bundle, source=rm.kind), out_dir


def _pretrained(config: Any, spec: str, out: Path | None, text: Path | None, seq_len: int | None, run: Any,
                **unused: Any) -> tuple[DiagnoseResult, Path]:
    from resgrad.pretrained import loss

    from ._pretrained import bundle_of, refuse, text_batch, tokens_record

    refuse(spec, **unused)
    pre, batch = text_batch(spec, text, seq_len, config.batch_size, config.seed)
    config.tokens = tokens_record(pre, batch, text)
    out_dir = Path(out) if out is not None else Path("runs") / f"diagnose-{_slug(spec)}"
    return run(config, out_dir, model=pre.model, data=bundle_of(pre, batch), source=spec.split(":", 1)[0].lower(),
               loss=lambda m, x, y: loss(pre, x, model=m), train_mode=False), out_dir


def _print(result: DiagnoseResult, max_rows: int, files: list[Path]) -> None:
    layers = result.layers
    flagged = [r for r in layers if r.flags]
    heads = ["‖∂L/∂h‖", "‖∂L/∂h‖‖h‖", "Δtrend", "‖∂L/∂w‖/‖w‖", "flags"]  # h: the layer's output
    shown = layers
    if len(layers) > max_rows:
        keep = {id(r) for r in layers[:5] + layers[-5:] + flagged}
        shown = [r for r in layers if id(r) in keep]
    cells = []
    for r in shown:
        rel = r.param_grad_norm / r.weight_norm if r.param_grad_norm is not None and r.weight_norm else None
        trend = "" if r.decades_from_trend is None else f"{r.decades_from_trend:+.1f}"
        flags = ", ".join(r.flags) + (f" ({r.nonfinite})" if r.nonfinite else "")
        cells.append([_fmt(r.grad_norm), _fmt(r.sensitivity), trend, _fmt(rel), flags])
    # The name column gets what the terminal leaves: long names lose their head, not their tail.
    others = sum(max([len(h)] + [len(c[j]) for c in cells]) + 2 for j, h in enumerate(heads))  # + padding
    room = max(12, console.width - others - 1)
    table = Table(Column("layer", no_wrap=True, min_width=min(room, max(len(r.name) for r in shown))),
                  *(Column(h, no_wrap=True) for h in heads), box=None, pad_edge=False)
    for r, c in zip(shown, cells, strict=True):
        style = "red" if {"non-finite", "vanishing", "exploding"} & set(r.flags) else None
        table.add_row(_truncate(r.name, room), *c, style=style)
    console.print(table)
    if len(shown) < len(layers):
        console.print(f"({len(layers) - len(shown)} unflagged rows not shown; all {len(layers)} are in the JSON)",
                      style="dim")
    b = result.blocks
    if b and b.ratio_first_last is not None and b.decades is not None:
        console.print(f"blocks: ‖∂L/∂x_first‖/‖∂L/∂x_last‖ = {b.ratio_first_last:.3g} "
                      f"({b.decades:+.2f} decades fitted over {len(b.profile_rms)} blocks): {b.verdict}",
                      highlight=False)
    t = result.trend
    if t is not None and t.decades is not None:
        off = f", {t.left_out} rows off it left out" if t.left_out else ""
        console.print(f"trend: ‖∂L/∂h‖‖h‖ changes {t.decades:+.2f} decades from the output to the input, "
                      f"fitted along {t.rows} layers ({t.last} back to {t.first}{off}): {t.verdict}",
                      highlight=False)
    console.print(f"{len(flagged)} of {len(layers)} layers flagged (±{result.thresholds['decades']:g} decades from "
                  f"the trend, or from its output end where the trend vanishes or explodes); loss "
                  f"{_fmt(result.losses[-1])}", highlight=False)
    for c in result.causes:
        console.print(f"cause ({c.kind}): {c.message}", style="yellow", highlight=False)
    console.print(f"wrote {', '.join(map(str, files))}", highlight=False, soft_wrap=True)


def _truncate(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: its tail after an ellipsis when it is longer."""
    return name if len(name) <= width else "…" + name[len(name) - width + 1:]


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3g}"


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.strip("/")).strip("-")[:60] or "model"
