"""Diagnose any model: per-layer gradient norms on a few batches, flagged against their trend.

``run(config, out, model=...)`` measures every module's output gradient and its
parameters' gradients with :class:`~resgrad.probes.GradientMonitor` on ``config.steps``
batches (SGD steps, lr 0.01, between them). The flags follow the gradient through depth
(:func:`_trend`): a least-squares line of log10 ``‖∂L/∂h‖·‖h‖`` along the forward order,
judged as the flow experiment judges a net; layers ``config.threshold`` decades or more
off the line, or that far from its output end where the line itself vanishes or
explodes, are *vanishing* / *exploding*; also *zero*, *non-finite*, *no grad*. Each flag
is explained by a named cause or listed under "no known cause". For models with resgrad
blocks it also gives the per-block input-gradient profile and the flow experiment's
verdict. The result is a :class:`resgrad.results.DiagnoseResult`; ``resgrad diagnose``
resolves the SPEC to a model and prints it.
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
from . import driver
from ._diagnose_flags import (
    TREND_REFERENCE,
    _causes,
    _dead_hook,
    _layers,
    _Outputs,
    _saturating,
    _scaled_branches,
    _small_scales,
    _trend,
)
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
    threshold: float = 2.0  # flag layers this many decades (100x) off the gradient's trend through depth
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
        loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        train_mode: bool = True) -> DiagnoseResult:
    """Diagnose ``model`` (named ``config.spec``; ``source``: how the SPEC resolved) on ``data``'s
    batches, or on random inputs of ``config.input_shape``; with ``out``, a run folder.

    ``loss(model, x, y) -> scalar``: how a step's loss is computed (token models:
    ``resgrad.tokens.own_loss``); default cross-entropy for a classifier's ``(B, C)``
    output, else a quadratic loss on the output. ``train_mode=False``: measure in eval mode (dropout
    off; a pretrained model's gradient at its weights as loaded)."""
    return driver.run(config, out, log=None, model=model, data=data, source=source, loss=loss,
                      train_mode=train_mode)


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
    model = model.to(device).train(bool(ctx.input("train_mode", True)))
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
    init = _small_scales(model)  # before any step: layer-scale vectors as initialised
    fwd = _Outputs(model)  # ‖h‖ of every module's output and the query/key outputs, last forward
    with GradientMonitor(model, activations=True, weights=True, per="param") as mon:  # its layer table reads parameter rows
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
    fwd.remove()
    records = mon.records
    last = config.steps - 1
    layers = _layers(records, last, config.threshold, fwd.norms)
    trend = _trend(layers, config.threshold, _scaled_branches(records, init, layers))
    result = DiagnoseResult.of(jsonable({
        "spec": config.spec, "kind": source, "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_shape": list(shape), "num_classes": n_classes, "data": data.name if data is not None else "random",
        "batch_size": config.batch_size, "steps": config.steps, "seed": config.seed, "losses": losses,
        "thresholds": {"decades": config.threshold, "reference": TREND_REFERENCE},
        "layers": layers, "trend": trend,
        "causes": _causes(records, layers, config.steps, dead, mon.nonfinite_origin, init=init,
                          attention=fwd.attention(model), saturating=_saturating(model), trend=trend),
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


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else s or type(e).__name__
