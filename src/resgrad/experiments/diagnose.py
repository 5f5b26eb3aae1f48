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
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
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
from .flow import fit_slope, verdict

__all__ = ["DiagnoseConfig", "run", "KIND"]

KIND = "resgrad.diagnose"  # config.json's kind for a diagnose run folder


@dataclass
class DiagnoseConfig:
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
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, received {self.steps} and {self.batch_size}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"threshold must be a number > 0 (decades), received {self.threshold!r}")


def run(config: DiagnoseConfig, out: str | Path | RunDir | None = None, *, model: nn.Module,
        data: DataBundle | None = None, source: str = "object",
        loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> DiagnoseResult:
    """Diagnose ``model`` (named ``config.spec``; ``source``: how the SPEC resolved) on ``data``'s
    batches, or on random inputs of ``config.input_shape``.

    ``loss(model, x, y) -> scalar``: how a step's loss is computed (token models:
    ``resgrad.tokens.own_loss``); default cross-entropy for a classifier's ``(B, C)``
    output, else a quadratic loss on the output."""
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
    init = _small_scales(model)  # before any step: layer-scale vectors as initialised
    fwd = _Outputs(model)  # ‖h‖ of every module's output and the query/key outputs, last forward
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
    if out is not None:
        run_dir = out if isinstance(out, RunDir) else RunDir(out)
        with run_dir.locked():
            run_dir.claim({"kind": KIND, "config": jsonable(asdict(config)), "environment": result.environment},
                          fresh=True)
            run_dir.write_results(result)
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


def _layers(records: list[dict[str, Any]], step: int, threshold: float,
            out_norms: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per module at ``step``, in forward order: activation gradient, its params' gradients,
    ``‖∂L/∂h‖·‖h‖`` (``sensitivity``, from ``out_norms``: ``‖h‖`` by row name); flags "zero",
    "non-finite", "no grad" here, "vanishing" / "exploding" by :func:`_trend`."""
    out_norms = out_norms or {}
    rows: dict[str, dict[str, Any]] = {}

    def blank(name: str, block: int | None) -> dict[str, Any]:
        return {"name": name, "block": block, "grad_norm": None, "grad_rms": None, "numel": None, "nonfinite": 0,
                "param_grad_norm": None, "weight_norm": None, "params": 0, "flags": [], "output_norm": None,
                "sensitivity": None}

    for r in records:
        if r["step"] != step or r["kind"] != "activation":
            continue
        row = rows[r["name"]] = blank(r["name"], r["block"])
        row.update(grad_norm=r["norm"], grad_rms=r["rms"], numel=r["numel"], nonfinite=r["nonfinite"] or 0)
        h = out_norms.get(r["name"])
        if h is not None and r["norm"] is not None:
            row["output_norm"] = h
            row["sensitivity"] = r["norm"] * h
    sq: dict[str, float] = {}
    wsq: dict[str, float] = {}
    missing: dict[str, int] = {}
    for r in records:
        if r["step"] != step or r["kind"] not in ("param", "weight"):
            continue
        owner = r["name"].rsplit(".", 1)[0] if "." in r["name"] else "<model>"
        row = rows.setdefault(owner, blank(owner, r["block"]))
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
    for row in rows.values():
        if row["nonfinite"]:
            row["flags"].append("non-finite")
        if row["grad_rms"] == 0:
            row["flags"].append("zero")
    return list(rows.values())


# What the flags are judged on (thresholds["reference"] in results.json).
TREND_REFERENCE = ("log10 of ‖∂L/∂h‖·‖h‖ per module output h, least-squares line along the forward order "
                   "(flow's fit_slope and flow_verdict) fitted on the rows within the threshold below it")
# Refits of the trend, each leaving out the rows that lie the threshold or more below the last line.
TREND_REFITS = 20


def _positive(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def _trend(layers: list[dict[str, Any]], threshold: float, side: Collection[str] = ()) -> dict[str, Any] | None:
    """Fit the gradient's trend through depth and flag the rows against it (in place).

    The measure is ``s = ‖∂L/∂h‖·‖h‖`` of each module's output ``h``. Per-element norms of
    ``∂L/∂h`` change with the tensor's shape, not with the gradient: average pooling over
    ``n`` positions multiplies the pooled gradient's RMS by ``n``, a broadcast output (a
    position embedding added to every example) sums the batch's gradients. ``<∂L/∂h, h>``
    is the same on both sides of any positively homogeneous map (pooling, flattening,
    ReLU, a bias-free linear layer: Euler's theorem), and ``s`` bounds it; it is also
    unchanged by any rescaling of ``h`` (normalisation layers), so it moves only where
    the loss's dependence on the layer does. Where activations keep their scale, as in
    the flow experiment's nets, its slope is the gradient's.

    The trend is a least-squares line of ``log10 s`` along the forward order
    (:func:`resgrad.experiments.flow.fit_slope`), judged by
    :func:`resgrad.verdicts.flow_verdict` as the flow experiment judges a net. It is
    fitted on the main path: rows inside ``side`` (blocks whose branch a layer scale
    shrinks at init) and rows ``threshold`` decades or
    more below the line (side branches, attention scores) are left out and the line
    refitted, so that they neither drag it down nor make the main path look "exploding"
    (a ConvNeXt's branch layers outnumber its stem, downsampling and head). A row is flagged
    *vanishing* (*exploding*) when it lies ``threshold`` decades or more below (above)
    the line, or when the trend itself vanishes (explodes) and the row lies that far
    below (above) the line's output end.
    """
    pts = [i for i, r in enumerate(layers) if _positive(r.get("sensitivity"))]
    y = {i: math.log10(layers[i]["sensitivity"]) for i in pts}
    main = [i for i in pts if not any(_inside(b, layers[i]["name"]) for b in side)]
    if len(main) < 2:
        main = list(pts)
    if len(main) < 2:
        return None
    for _ in range(TREND_REFITS):
        a, b = _line(main, y)
        keep = [i for k, i in enumerate(main) if y[i] - (a + b * k) > -threshold]
        if len(keep) == len(main) or len(keep) < 2:
            break
        main = keep
    slope = fit_slope([y[i] for i in main])  # decades per row crossed backward (flow's convention)
    a, b = _line(main, y)
    n = len(main)
    end = a + b * (n - 1)  # the line at the output end
    label = verdict(slope, None, n, threshold)
    rank = {i: k for k, i in enumerate(main)}
    k = -0.5
    for i, r in enumerate(layers):
        if i in rank:
            k = rank[i]
        elif k == int(k):
            k += 0.5  # between two main rows
        if i not in y:
            continue
        fitted = a + b * min(max(k, 0.0), n - 1.0)
        r["decades_from_trend"] = y[i] - fitted
        r["decades_from_output"] = y[i] - end
        if r["decades_from_trend"] <= -threshold or (label == "vanishing" and r["decades_from_output"] <= -threshold):
            r["flags"].append("vanishing")
        elif r["decades_from_trend"] >= threshold or (label == "exploding" and r["decades_from_output"] >= threshold):
            r["flags"].append("exploding")
    return {"measure": "grad_norm*output_norm", "slope": slope, "decades": slope * (n - 1), "rows": n,
            "left_out": len(pts) - n, "verdict": label, "threshold": threshold, "first": layers[main[0]]["name"],
            "last": layers[main[-1]]["name"]}


def _inside(prefix: str, name: str) -> bool:
    """``name`` is a module strictly inside ``prefix`` (the whole model when ``prefix`` is "")."""
    return name != prefix and (not prefix or name.startswith(prefix + "."))


def _scaled_branches(records: list[dict[str, Any]], init: dict[str, float], layers: list[dict[str, Any]]) -> set[str]:
    """The blocks whose branch a layer-scale vector scales down at init. (A zero-initialised
    branch needs no leaving out: its layers' gradient is 0, which no line is fitted on, while
    the block's own stream layers -- its post-addition activation, its downsampling -- are
    on the main path.)"""
    names = {r["name"] for r in layers}
    return {_branch_of(n, names) for n in init}


def _line(idx: list[int], y: dict[int, float]) -> tuple[float, float]:
    """Intercept and forward slope of the least-squares line through ``y[idx]`` at positions 0..n-1,
    from :func:`fit_slope` (whose positions run backward: its slope is minus the forward one)."""
    vals = [y[i] for i in idx]
    b = -fit_slope(vals)
    return sum(vals) / len(vals) - b * (len(vals) - 1) / 2, b


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


# Attention projections by the names the common implementations give them (BERT/ViT: query,
# key; Llama, Mistral, OPT, BART, CLIP: q_proj, k_proj; T5: q, k; diffusers: to_q, to_k).
QUERY_NAMES = ("query", "q_proj", "q", "to_q", "wq")
KEY_NAMES = ("key", "k_proj", "k", "to_k", "wk")


class _Outputs:
    """Forward hooks: ``‖h‖`` of every module's output in the last forward, named as
    GradientMonitor names its rows (``name#k`` for the k-th reuse in one forward), and the
    query/key outputs of attention modules (their softmax, measured in :meth:`attention`)."""

    def __init__(self, model: nn.Module) -> None:
        self.norms: dict[str, float] = {}
        self.qk: dict[str, dict[str, torch.Tensor]] = {}
        self._calls: dict[str, int] = {}
        self._handles = [model.register_forward_pre_hook(self._reset)]
        for name, m in model.named_modules():
            if name:
                self._handles.append(m.register_forward_hook(self._hook(name)))

    def _reset(self, module: nn.Module, args: Any) -> None:
        self._calls = {}

    def _hook(self, name: str):
        parent, _, leaf = name.rpartition(".")
        role = "q" if leaf in QUERY_NAMES else "k" if leaf in KEY_NAMES else None

        def hook(module: nn.Module, args: Any, out: Any) -> None:
            t = out if isinstance(out, torch.Tensor) else next(
                (o for o in out if isinstance(o, torch.Tensor)), None) if isinstance(out, (tuple, list)) else None
            if t is None or not t.requires_grad or not torch.is_grad_enabled():
                return
            k = self._calls.get(name, -1) + 1
            self._calls[name] = k
            with torch.no_grad():
                self.norms[f"{name}#{k}" if k else name] = float(t.detach().double().norm())
            if role is not None and k == 0 and t.dim() == 3:
                self.qk.setdefault(parent, {})[role] = t.detach()

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def attention(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Per attention module: the mean largest softmax probability of its scores
        ``q kᵀ/√d`` (heads from the model's config when it gives ``num_attention_heads``),
        and ``1/T``, the value for uniform attention over ``T`` keys."""
        heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
        out: dict[str, dict[str, float]] = {}
        for parent, qk in self.qk.items():
            q, k = qk.get("q"), qk.get("k")
            if q is None or k is None or q.shape != k.shape:
                continue
            b, t, d = q.shape
            h = heads if isinstance(heads, int) and heads > 0 and d % heads == 0 else 1
            qh = q.float().reshape(b, t, h, d // h).transpose(1, 2)
            kh = k.float().reshape(b, t, h, d // h).transpose(1, 2)
            p = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
            out[parent] = {"max_prob": float(p.max(-1).values.mean()), "uniform": 1.0 / t, "heads": h, "keys": t}
        return out


# A layer-scale vector: every entry the same small value at initialisation. 1e-3 and below:
# CaiT starts at 0.1 for 12 layers down to 1e-6 for deeper ones (Touvron et al. 2021, §3.1),
# ConvNeXt at 1e-6 (Liu et al. 2022); at 0.1 the branch's gradient is within the threshold.
LAYER_SCALE_MAX = 1e-3


def _small_scales(model: nn.Module) -> dict[str, float]:
    """Parameters that are constant small vectors at initialisation (layer scale), by name -> value."""
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 1 or p.numel() < 2 or name.endswith("bias"):
                continue
            v = float(p.detach().flatten()[0])
            if 0 < abs(v) <= LAYER_SCALE_MAX and bool((p == v).all()):
                out[name] = v
    return out


def _saturating(model: nn.Module) -> list[str]:
    """The model's sigmoid and tanh modules (saturating activations), by name."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softsign))]


def _few(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _branch_of(param: str, model_names: set[str] | None = None) -> str:
    """The module a parameter scales the output of: its owner's parent (``layer1.0`` for
    ``layer1.0.bn2.weight``, ``blocks.0`` for ``blocks.0.ls1.gamma``), or the owner itself when
    the parameter belongs to the block directly (timm ConvNeXt's ``stages.0.blocks.0.gamma``)."""
    owner = param.rsplit(".", 1)[0] if "." in param else ""
    if model_names is not None and any(n.startswith(owner + ".") for n in model_names if owner):
        return owner  # the owner has sub-modules: it is the block
    return owner.rsplit(".", 1)[0] if "." in owner else owner


def _causes(records: list[dict[str, Any]], layers: list[dict[str, Any]], steps: int, dead: dict[str, float],
            origin: dict[str, Any] | None, *, init: dict[str, float] | None = None,
            attention: dict[str, dict[str, float]] | None = None, saturating: list[str] | None = None,
            trend: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Named causes behind what the table shows, as ``Cause`` records (kind, modules, message).

    Every flagged row gets the kind of the first cause that explains it in ``row["cause"]``;
    rows no cause explains are listed under "no-known-cause"."""
    out: list[dict[str, Any]] = []
    names = {r["name"] for r in layers}
    explains: list[tuple[str, Callable[[int, dict[str, Any]], bool]]] = []
    index = {r["name"]: i for i, r in enumerate(layers)}
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
        branches = {_branch_of(n, names) for n in zero}
        explains.append(("zero-init-branch", lambda i, r: any(_inside(b, r["name"]) for b in branches)))
    # (b) Layer scale: a branch's output multiplied by a small constant vector at init, so the
    # branch's layers get gradients that much smaller than the stream's (Touvron et al. 2021, CaiT
    # §3.1 "LayerScale"; Liu et al. 2022, ConvNeXt, at 1e-6).
    if init:
        scaled = sorted(init)
        values = sorted({f"{v:.0e}" for v in init.values()})
        branches_ls = {_branch_of(n, names) for n in scaled}
        out.append({"kind": "layer-scale", "modules": scaled, "message": (
            f"{len(scaled)} layer-scale vector(s) start at {', '.join(values)} ({_few(scaled)}): each multiplies a "
            "residual branch's output, so the layers inside the branch get gradients about that many times the "
            "stream's at initialisation (Touvron et al. 2021 CaiT §3.1; ConvNeXt uses 1e-6). Expected at init: the "
            "scale itself gets the stream's gradient and grows as it trains")})
        explains.append(("layer-scale", lambda i, r: any(_inside(b, r["name"]) for b in branches_ls)))
    # (c) Dead ReLUs.
    gone = sorted((n for n, f in dead.items() if f > DEAD_RELU_FRACTION), key=lambda n: -dead[n])
    if gone:
        out.append({"kind": "dead-relu", "modules": gone, "message": (
            f"{len(gone)} ReLU layer(s) have more than {DEAD_RELU_FRACTION:.0%} of their units never active over "
            f"the batch ({', '.join(f'{n}: {dead[n]:.0%}' for n in gone[:4])}): no gradient flows through a dead "
            "unit; look at the biases and the inputs' scale before them")})
        upto = max((index[n] for n in gone if n in index), default=-1)
        explains.append(("dead-relu", lambda i, r: i <= upto))  # a dead unit stops the gradient upstream
    # (d) Parameters that need grad but got none: not used in the forward.
    unused = [r["name"] for r in layers if "no grad" in r["flags"]]
    if unused:
        out.append({"kind": "no-grad", "modules": unused, "message": (
            f"{len(unused)} module(s) have parameters that need grad but got none ({_few(unused)}): they are not "
            "used in the forward to the loss (dead code, a skipped branch, or a head the loss does not read)")})
        explains.append(("no-grad", lambda i, r: "no grad" in r["flags"]))
    # (e) Non-finite values: the first module in backward order to show one (GradientMonitor's origin).
    if origin is not None:
        by = f", produced by the backward of {origin['produced_by']!r}" if origin.get("produced_by") else ""
        out.append({"kind": "non-finite", "modules": [origin["name"]], "message": (
            f"the first non-finite gradient (step {origin['step']}) appeared at the {'output' if origin['kind'] == 'activation' else origin['kind']} of "
            f"{origin['name']!r}{by}; "
            "everything before it in the backward only inherits it")})
        explains.append(("non-finite", lambda i, r: "non-finite" in r["flags"]))
    # (f) Query/key projections: the loss reaches them only through the attention softmax, whose
    # Jacobian diag(p) - p pᵀ is small both when attention is near uniform over T keys (entries
    # about 1/T: small weights at init) and when it is saturated (one-hot p); the score q·k/√d
    # also scales each one's gradient by the other's size (Vaswani et al. 2017 §3.2.1).
    qk = [r for r in layers if "vanishing" in r["flags"] and r["name"].rpartition(".")[2] in QUERY_NAMES + KEY_NAMES]
    if qk:
        att = attention or {}
        seen = [att[p] for p in dict.fromkeys(r["name"].rpartition(".")[0] for r in qk) if p in att]
        if seen:
            mp = sum(a["max_prob"] for a in seen) / len(seen)
            un = sum(a["uniform"] for a in seen) / len(seen)
            state = (f"here near uniform: the largest attention probability is {mp:.3g} on average against "
                     f"1/T = {un:.3g}" if mp < 5 * un else
                     f"here saturated: the largest attention probability is {mp:.3g} on average" if mp > 0.9 else
                     f"the largest attention probability is {mp:.3g} on average (1/T = {un:.3g})")
        else:
            state = "its probabilities were not measured here (no matching query/key pair)"
        out.append({"kind": "attention-scores", "modules": [r["name"] for r in qk], "message": (
            f"{len(qk)} query/key projection(s) ({_few([r['name'] for r in qk])}) get small gradients: the loss "
            "reaches them only through the attention softmax, whose Jacobian diag(p) - ppᵀ is small when attention "
            f"is near uniform (entries about 1/T) or saturated (one-hot), {state}; the score q·k/√d also scales each "
            "one's gradient by the other's size (Vaswani et al. 2017 §3.2.1). Expected with small initial weights")})
        qk_names = {r["name"] for r in qk}
        explains.append(("attention-scores", lambda i, r: r["name"] in qk_names))
    # (g) A trend that vanishes through saturating activations without skips: their derivative is at
    # most 1/4 (sigmoid) or 1 (tanh), less once saturated, so the gradient shrinks layer by layer
    # (Hochreiter 1991; Bengio et al. 1994; Glorot & Bengio 2010).
    if trend is not None and trend["verdict"] == "vanishing" and saturating:
        out.append({"kind": "saturating-activation", "modules": saturating, "message": (
            f"the gradient's trend falls {-trend['decades']:.1f} decades from the output to the input through "
            f"{len(saturating)} saturating activation(s) ({_few(saturating)}): a sigmoid's derivative is at most "
            "1/4 and a tanh's at most 1, smaller once saturated, so each layer without a skip shrinks the gradient "
            "(Hochreiter 1991; Bengio et al. 1994; Glorot & Bengio 2010)")})
        explains.append(("saturating-activation", lambda i, r: "vanishing" in r["flags"]
                         and r.get("decades_from_trend", 0.0) > -trend["threshold"]))
    unknown = []
    for i, r in enumerate(layers):
        if not r["flags"]:
            continue
        r["cause"] = next((kind for kind, why in explains if why(i, r)), None)
        if r["cause"] is None:
            unknown.append(r["name"])
    if unknown:
        out.append({"kind": "no-known-cause", "modules": unknown, "message": (
            f"no known cause for {len(unknown)} flagged layer(s) ({_few(unknown)}): none of the mechanisms above "
            "applies to them; compare their initialisation and their place in the forward with their neighbours'")})
    return out


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else s or type(e).__name__
