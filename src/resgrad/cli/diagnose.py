"""``resgrad diagnose``: per-layer gradient norms of any model, with vanishing/exploding flags."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any

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
    pyplot,
    resolve_device,
    save_figure,
)
from ._spec import SPEC_HELP, parse_shape

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
    threshold: Annotated[float, typer.Option(help="Flag layers this many decades from the median gradient RMS.")] = 2.0,
    max_rows: Annotated[int, typer.Option(help="Rows shown in the table (all are in the JSON).")] = 60,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
) -> None:
    """Measure every layer's gradient on one batch and flag vanishing, exploding and non-finite ones.

    SPEC `package.module:factory` imports and runs your code. Writes diagnose.json and
    diagnose.png; exits 1 when a gradient is NaN/Inf.

    Examples:
      resgrad diagnose plain56 --data mnist1d
      resgrad diagnose torchvision:resnet18 --input-shape 3,224,224
      resgrad diagnose mypkg.models:make_net --input-shape 3,32,32 --steps 5
      resgrad diagnose runs/resnet20-mnist1d-s0
    """
    if input_shape is not None and data is not None:
        raise UsageError("pass --input-shape or --data, not both")
    if steps < 1 or batch_size < 1:
        raise UsageError(f"--steps and --batch-size must be >= 1, received {steps} and {batch_size}")
    result = diagnose(spec, input_shape=parse_shape(input_shape), data=data, steps=steps, batch_size=batch_size,
                      threshold=threshold, seed=seed, device=resolve_device(device), out=out)
    _print(result, max_rows)
    bad = [r["name"] for r in result["layers"] if r["nonfinite"]]
    if bad:
        raise CheckFailed(f"non-finite gradients in {len(bad)} layer(s), first {bad[0]}; see {result['files'][0]}")


def diagnose(spec: str, *, input_shape: tuple[int, ...] | None = None, data: str | None = None, steps: int = 1,
             batch_size: int = 16, threshold: float = 2.0, seed: int = 0, device: str = "cpu",
             out: Path | None = None) -> dict[str, Any]:
    """Run the diagnosis; return the JSON-able result (also written to ``out``)."""
    import torch
    import torch.nn.functional as F

    import resgrad
    from resgrad.io import environment, write_json
    from resgrad.probes import GradientMonitor

    from ._spec import resolve_spec

    torch.manual_seed(seed)
    bundle = None
    if data is not None:
        bundle = resgrad.load_data(data)
        input_shape = bundle.input_shape
    rm = resolve_spec(spec, input_shape=input_shape,
                      num_classes=bundle.num_classes if bundle is not None else None)
    shape = input_shape or rm.input_shape
    if shape is None:
        raise UsageError(f"cannot tell the input shape of {spec!r}: pass --input-shape (e.g. 3,32,32) or --data")
    if bundle is None and rm.data and input_shape is None:  # a run folder: its own dataset
        bundle = resgrad.load_data(rm.data)
    model = rm.model.to(device).train()

    g = torch.Generator().manual_seed(seed)
    if bundle is not None:
        batches = bundle.batches(batch_size, generator=g)
    x0 = _batch(bundle, batches if bundle is not None else None, shape, batch_size, g)[0].to(device)
    try:
        with torch.no_grad():
            probe = model(x0)
    except Exception as e:  # the model's own complaint, in one line
        raise UsageError(
            f"{spec} failed on input of shape {tuple(x0.shape)}: {_one_line(e)}; pass --input-shape matching "
            "the model (one example, no batch dim)"
        ) from None
    if not isinstance(probe, torch.Tensor):
        raise UsageError(f"{spec} returned {type(probe).__name__}; diagnose needs a model returning one tensor")
    n_classes = probe.shape[1] if probe.dim() == 2 else None

    def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if n_classes is not None:
            return F.cross_entropy(out, y % n_classes)
        return 0.5 * out.float().pow(2).mean()  # not a classifier: a quadratic loss on the output

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    with GradientMonitor(model, activations=True, weights=True) as mon:
        for step in range(steps):
            xb, yb = _batch(bundle, batches if bundle is not None else None, shape, batch_size, g, n_classes)
            opt.zero_grad(set_to_none=True)
            loss = loss_of(model(xb.to(device)), yb.to(device))
            loss.backward()
            losses.append(float(loss.detach()))
            mon.step(step, optimizer=opt)
            if step < steps - 1:
                opt.step()
    records = mon.records
    layers = _layers(records, steps - 1, threshold)
    block_summary = _blocks(records, steps - 1, len(resgrad.blocks(model)), threshold)

    result: dict[str, Any] = {
        "spec": spec, "kind": rm.kind, "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_shape": list(shape), "num_classes": n_classes, "data": bundle.name if bundle is not None else "random",
        "batch_size": batch_size, "steps": steps, "seed": seed, "losses": losses,
        "thresholds": {"decades": threshold, "reference": "median gradient RMS over layers at the last step"},
        "layers": layers, "blocks": block_summary, "records": records,
        "environment": environment(device), "files": [],
    }
    out_dir = Path(out) if out is not None else Path("runs") / f"diagnose-{_slug(spec)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = _figure(layers, spec, out_dir / "diagnose.png", threshold)
    result["files"] = [str(out_dir / "diagnose.json")] + ([str(fig)] if fig else [])
    write_json(out_dir / "diagnose.json", result)
    return result


def _batch(bundle, batches, shape, batch_size, g, n_classes=None):
    import torch

    if bundle is not None:
        try:
            return next(batches)
        except StopIteration:
            pass
        xb = bundle.x_train[:batch_size]
        return xb, bundle.y_train[: len(xb)]
    x = torch.randn(batch_size, *shape, generator=g)
    y = torch.randint(0, n_classes or 10, (batch_size,), generator=g)
    return x, y


def _layers(records: list[dict[str, Any]], step: int, threshold: float) -> list[dict[str, Any]]:
    """One row per module at ``step``, in forward order: activation gradient, its params' gradients."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["step"] != step or r["kind"] != "activation":
            continue
        rows[r["name"]] = {"name": r["name"], "block": r["block"], "grad_norm": r["norm"], "grad_rms": r["rms"],
                           "numel": r["numel"], "nonfinite": r["nonfinite"] or 0, "param_grad_norm": None,
                           "weight_norm": None, "params": 0, "flags": []}
    sq: dict[str, float] = {}
    wsq: dict[str, float] = {}
    missing: dict[str, int] = {}
    for r in records:
        if r["step"] != step or r["kind"] not in ("param", "weight"):
            continue
        owner = r["name"].rsplit(".", 1)[0] if "." in r["name"] else "<model>"
        row = rows.setdefault(owner, {"name": owner, "block": r["block"], "grad_norm": None, "grad_rms": None,
                                      "numel": None, "nonfinite": 0, "param_grad_norm": None,
                                      "weight_norm": None, "params": 0, "flags": []})
        if r["kind"] == "weight":
            wsq[owner] = wsq.get(owner, 0.0) + (r["norm"] or 0.0) ** 2
            continue
        row["params"] += r["numel"]
        if r["norm"] is None:
            missing[owner] = missing.get(owner, 0) + 1
        else:
            sq[owner] = sq.get(owner, 0.0) + r["norm"] ** 2
            row["nonfinite"] += r["nonfinite"] or 0
    for owner, row in rows.items():
        if owner in sq:
            row["param_grad_norm"] = math.sqrt(sq[owner])
        if owner in wsq:
            row["weight_norm"] = math.sqrt(wsq[owner])
        if missing.get(owner) and owner not in sq:
            row["flags"].append("no grad")
    logs = [math.log10(r["grad_rms"]) for r in rows.values()
            if r["grad_rms"] is not None and math.isfinite(r["grad_rms"]) and r["grad_rms"] > 0]
    median = sorted(logs)[len(logs) // 2] if logs else None
    for row in rows.values():
        rms = row["grad_rms"]
        if row["nonfinite"]:
            row["flags"].append("non-finite")
        if rms == 0:
            row["flags"].append("zero")
        elif rms is not None and median is not None and math.isfinite(rms):
            row["decades_from_median"] = math.log10(rms) - median
            if row["decades_from_median"] <= -threshold:
                row["flags"].append("vanishing")
            elif row["decades_from_median"] >= threshold:
                row["flags"].append("exploding")
    return list(rows.values())


def _blocks(records: list[dict[str, Any]], step: int, n_blocks: int, threshold: float) -> dict[str, Any] | None:
    """For models with resgrad blocks: the per-block input gradient, ratio, slope, verdict."""
    if not n_blocks:
        return None
    from resgrad.experiments.flow import fit_slope, verdict

    prof: list[float | None] = [None] * n_blocks
    for r in records:
        if r["step"] == step and r["kind"] == "input" and r["block"] is not None and "#" not in r["name"]:
            prof[r["block"]] = r["rms"]
    if any(v is None or not v > 0 or not math.isfinite(v) for v in prof):
        return {"profile_rms": prof, "verdict": "non-finite"}
    logs = [math.log10(v) for v in prof]  # type: ignore[arg-type]
    slope = fit_slope(logs)
    return {"profile_rms": prof, "ratio_first_last": prof[0] / prof[-1],  # type: ignore[operator]
            "slope": slope, "decades": slope * (n_blocks - 1),
            "verdict": verdict(slope, None, n_blocks, threshold) if n_blocks > 1 else "healthy"}


def _figure(layers: list[dict[str, Any]], spec: str, path: Path, threshold: float) -> Path | None:
    plt = pyplot()

    pts = [(i, math.log10(r["grad_rms"]), r) for i, r in enumerate(layers)
           if r["grad_rms"] and math.isfinite(r["grad_rms"]) and r["grad_rms"] > 0]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, len(layers) * 0.12)), 3.2))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=2.5, lw=0.8, label="activation gradient rms")
    bad = [p for p in pts if {"vanishing", "exploding", "non-finite"} & set(p[2]["flags"])]
    if bad:
        ax.plot([p[0] for p in bad], [p[1] for p in bad], "o", color="C3", ms=5, label="flagged")
    med = sorted(p[1] for p in pts)[len(pts) // 2]
    for d in (-threshold, threshold):
        ax.axhline(med + d, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("log10 rms ∂L/∂output")
    ax.set_title(f"resgrad diagnose {spec}", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110, tight=True)


def _print(result: dict[str, Any], max_rows: int) -> None:
    layers = result["layers"]
    flagged = [r for r in layers if r["flags"]]
    table = Table(Column("layer", overflow="fold"), "‖∂L/∂out‖", "rms", "‖∂L/∂w‖", "‖∂L/∂w‖/‖w‖", "nonfinite",
                  "flags", box=None)
    shown = layers
    if len(layers) > max_rows:
        keep = {id(r) for r in layers[:5] + layers[-5:] + flagged}
        shown = [r for r in layers if id(r) in keep]
    for r in shown:
        rel = (r["param_grad_norm"] / r["weight_norm"]
               if r["param_grad_norm"] is not None and r["weight_norm"] else None)
        style = "red" if {"non-finite", "vanishing", "exploding"} & set(r["flags"]) else None
        table.add_row(r["name"], _fmt(r["grad_norm"]), _fmt(r["grad_rms"]), _fmt(r["param_grad_norm"]), _fmt(rel),
                      str(r["nonfinite"]) if r["nonfinite"] else "", ", ".join(r["flags"]), style=style)
    console.print(table)
    if len(shown) < len(layers):
        console.print(f"({len(layers) - len(shown)} unflagged rows not shown; all {len(layers)} are in the JSON)",
                      style="dim")
    b = result["blocks"]
    if b and b.get("ratio_first_last") is not None:
        console.print(f"blocks: ‖∂L/∂x_first‖/‖∂L/∂x_last‖ = {b['ratio_first_last']:.3g} "
                      f"({b['decades']:+.2f} decades fitted over {len(b['profile_rms'])} blocks): {b['verdict']}",
                      highlight=False)
    console.print(f"{len(flagged)} of {len(layers)} layers flagged (threshold ±{result['thresholds']['decades']:g} "
                  f"decades from the median rms); loss {result['losses'][-1]:.4g}", highlight=False)
    console.print(f"wrote {', '.join(result['files'])}", highlight=False, soft_wrap=True)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3g}"


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else s or type(e).__name__


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.strip("/")).strip("-")[:60] or "model"
