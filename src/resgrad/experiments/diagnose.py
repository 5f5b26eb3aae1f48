"""Diagnose any model: per-layer gradient norms on a few batches, flagged against their median.

``run(config, out, model=...)`` measures every module's output gradient and its
parameters' gradients with :class:`~resgrad.probes.GradientMonitor` on ``config.steps``
batches (SGD steps, lr 0.01, between them) and flags layers whose gradient RMS lies
``config.threshold`` decades or more from the median layer's: *vanishing* / *exploding*,
*zero*, *non-finite*, *no grad*. For models with resgrad blocks it also gives the per-block
input-gradient profile and the flow experiment's verdict. The result is a
:class:`resgrad.results.DiagnoseResult`; ``resgrad diagnose`` resolves the SPEC to a model
and prints it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataBundle
from ..io import environment, jsonable
from ..nets import blocks as _model_blocks
from ..probes import GradientMonitor
from ..results import DiagnoseResult
from ..rundir import RunDir
from ..verdicts import DEAD_RELU_FRACTION
from . import driver
from .config import Config as BaseConfig
from .config import check_int, check_number
from .flow import fit_slope, verdict

__all__ = ["DiagnoseConfig", "run", "compute", "KIND"]

KIND = "resgrad.diagnose"  # config.json's kind for a diagnose run folder
LABEL = "diagnose"
NEEDS_OUT = False  # without a folder nothing is written
CLAIM = "fresh"  # the model comes from the caller: a used folder records the latest diagnosis
REUSE = False
Result = DiagnoseResult


@dataclass
class DiagnoseConfig(BaseConfig):
    """What to measure (every field is recorded in the run folder's config.json)."""

    spec: str  # the model as the user named it (registry name, torchvision:NAME, module:factory, run folder)
    input_shape: tuple[int, ...] | None = None  # one example's shape (random inputs); None: from the data
    data: str | None = None  # dataset whose training batches are used; None: random inputs
    steps: int = 1  # measured steps (SGD, lr 0.01, between them); 1 = at initialisation
    batch_size: int = 16  # examples per step
    threshold: float = 2.0  # flag layers this many decades (log10 units) from the median gradient RMS (100x)
    seed: int = 0  # the inputs and the SGD steps
    device: str = "cpu"
    tokens: dict[str, Any] | None = None  # token inputs: vocab, seq_len, text, causal (resgrad.tokens)

    def __post_init__(self) -> None:
        if self.input_shape is not None:
            self.input_shape = tuple(int(s) for s in self.input_shape)
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_number("threshold", self.threshold, lo=0, open_lo=True, rule="a number > 0 (decades)")


Config = DiagnoseConfig  # the experiment contract: this module's config type


def run(config: DiagnoseConfig, out: str | Path | RunDir | None = None, *, model: nn.Module,
        data: DataBundle | None = None, source: str = "object",
        loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> DiagnoseResult:
    """Diagnose ``model`` (named ``config.spec``; ``source``: how the SPEC resolved) on ``data``'s
    batches, or on random inputs of ``config.input_shape``; with ``out``, a run folder.

    ``loss(model, x, y) -> scalar``: how a step's loss is computed (token models:
    ``resgrad.tokens.own_loss``); default cross-entropy for a classifier's ``(B, C)``
    output, else a quadratic loss on the output."""
    return driver.run(config, out, log=None, model=model, data=data, source=source, loss=loss)


def compute(config: DiagnoseConfig, ctx: driver.Context) -> DiagnoseResult:
    """The diagnosis of ``ctx.input("model")`` (inputs ``data``, ``source``, ``loss`` as :func:`run`'s)."""
    model, data, loss = ctx.input("model"), ctx.input("data"), ctx.input("loss")
    source = ctx.input("source", "object")
    shape = tuple(data.input_shape) if data is not None else config.input_shape
    if shape is None:
        raise ValueError(f"cannot tell the input shape of {config.spec!r}: pass --input-shape (e.g. 3,32,32) or --data")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{config.spec} has no parameters that need gradients, so there is no gradient to "
                         "diagnose; give a model with trainable weights")
    torch.manual_seed(config.seed)
    device = config.device
    model = model.to(device).train()
    g = torch.Generator().manual_seed(config.seed)
    batches = data.batches(config.batch_size, generator=g) if data is not None else None
    x0, y0 = (t.to(device) for t in _batch(data, batches, shape, config.batch_size, g))
    try:
        with torch.no_grad():
            probe = loss(model, x0, y0) if loss is not None else model(x0)
    except Exception as e:  # the model's own complaint, in one line
        shape_like = isinstance(e, RuntimeError) and any(
            w in str(e) for w in ("shape", "size", "dimension", "mat1", "channels", "Expected"))
        hint = ("pass --input-shape matching the model (one example, no batch dim)" if shape_like else
                "the error comes from the model's own forward (RESGRAD_DEBUG=1 shows where)")
        raise ValueError(f"{config.spec} failed on input of shape {tuple(x0.shape)}: "
                         f"{type(e).__name__}: {_one_line(e)}; {hint}") from None
    if not isinstance(probe, torch.Tensor):
        raise ValueError(f"{config.spec} returned {type(probe).__name__}; diagnose needs a model returning one tensor")
    n_classes = probe.shape[1] if probe.dim() == 2 and loss is None else None

    def loss_of(xb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if loss is not None:
            return loss(model, xb, y)
        out = model(xb)
        if n_classes is not None:
            return F.cross_entropy(out, y % n_classes)
        return 0.5 * out.float().pow(2).mean()  # not a classifier: a quadratic loss on the output

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    dead: dict[str, float] = {}  # ReLU name -> share of units never active over the last step's batch
    relu_hooks = [m.register_forward_hook(_dead_hook(name, dead)) for name, m in model.named_modules()
                  if isinstance(m, nn.ReLU)]
    with GradientMonitor(model, activations=True, weights=True) as mon:
        for step in range(config.steps):
            xb, yb = _batch(data, batches, shape, config.batch_size, g, n_classes)
            opt.zero_grad(set_to_none=True)
            value = loss_of(xb.to(device), yb.to(device))
            value.backward()
            losses.append(float(value.detach()))
            mon.step(step, optimizer=opt)
            if step < config.steps - 1:
                opt.step()
    for h in relu_hooks:
        h.remove()
    records = mon.records
    last = config.steps - 1
    layers = _layers(records, last, config.threshold)
    result = DiagnoseResult.of(jsonable({
        "spec": config.spec, "kind": source, "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_shape": list(shape), "num_classes": n_classes, "data": data.name if data is not None else "random",
        "batch_size": config.batch_size, "steps": config.steps, "seed": config.seed, "losses": losses,
        "thresholds": {"decades": config.threshold, "reference": "median gradient RMS over layers at the last step"},
        "layers": layers,
        "causes": _causes(records, layers, config.steps, dead, mon.nonfinite_origin),
        "blocks": _blocks(records, last, len(_model_blocks(model)), config.threshold),
        "records": records, "environment": environment(device),
    }))
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




def _dead_hook(name: str, into: dict[str, float]):
    def hook(module: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[0] > 0:
            with torch.no_grad():
                into[name] = float((~(out.detach() > 0).flatten(1).any(0)).double().mean())

    return hook


def _few(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _causes(records: list[dict[str, Any]], layers: list[dict[str, Any]], steps: int, dead: dict[str, float],
            origin: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Named causes behind what the table shows, as ``Cause`` records (kind, modules, message)."""
    out: list[dict[str, Any]] = []
    # (a) Weights exactly 0 at initialisation (not biases, which are commonly 0): a zero-initialised
    # residual branch -- its last norm's gamma or scale set to 0 so each block starts as the identity
    # (Goyal et al. 2017, arXiv 1706.02677, §5.1; timm's zero_init_last; Fixup, ReZero).
    w0 = {r["name"]: r["norm"] for r in records if r["step"] == 0 and r["kind"] == "weight"}
    zero = [n for n, v in w0.items() if v == 0 and not n.endswith("bias")]
    if zero:
        last = {r["name"]: r["norm"] for r in records if r["step"] == steps - 1 and r["kind"] == "weight"}
        moved = [n for n in zero if last.get(n)]
        after = (f"; after {steps - 1} SGD step(s) {len(moved)} of them are no longer 0" if steps > 1 else
                 "; pass --steps N to see them after N-1 SGD steps")
        out.append({"kind": "zero-init-branch", "modules": zero, "message": (
            f"{len(zero)} weight tensor(s) are exactly 0 at initialisation ({_few(zero)}): zero-initialised "
            "residual branches (the branch's last scale starts at 0, so each block starts as the identity; "
            "Goyal et al. 2017 §5.1, timm zero_init_last). Expected at init: the layers inside such a branch get "
            f"zero gradient until that weight moves{after}")})
    # (b) Dead ReLUs.
    gone = sorted((n for n, f in dead.items() if f > DEAD_RELU_FRACTION), key=lambda n: -dead[n])
    if gone:
        out.append({"kind": "dead-relu", "modules": gone, "message": (
            f"{len(gone)} ReLU layer(s) have more than {DEAD_RELU_FRACTION:.0%} of their units never active over "
            f"the batch ({', '.join(f'{n}: {dead[n]:.0%}' for n in gone[:4])}): no gradient flows through a dead "
            "unit; look at the biases and the inputs' scale before them")})
    # (c) Parameters that need grad but got none: not used in the forward.
    unused = [r["name"] for r in layers if "no grad" in r["flags"]]
    if unused:
        out.append({"kind": "no-grad", "modules": unused, "message": (
            f"{len(unused)} module(s) have parameters that need grad but got none ({_few(unused)}): they are not "
            "used in the forward to the loss (dead code, a skipped branch, or a head the loss does not read)")})
    # (d) Non-finite values: the first module in backward order to show one (GradientMonitor's origin).
    if origin is not None:
        by = f", produced by the backward of {origin['produced_by']!r}" if origin.get("produced_by") else ""
        out.append({"kind": "non-finite", "modules": [origin["name"]], "message": (
            f"the first non-finite gradient (step {origin['step']}) appeared at the {'output' if origin['kind'] == 'activation' else origin['kind']} of "
            f"{origin['name']!r}{by}; "
            "everything before it in the backward only inherits it")})
    return out


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else s or type(e).__name__
