"""diagnose's flags: the trend of the gradient through depth, and the causes that explain them.

:func:`_layers` turns GradientMonitor's records into one row per module, :func:`_trend`
fits the trend and flags the rows against it, :func:`_causes` names what explains each
flag (or lists it under "no known cause"). :class:`_Outputs` and :func:`_dead_hook` are the
forward hooks ``experiments/diagnose.py``'s ``run`` installs for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import nn

from ..verdicts import DEAD_RELU_FRACTION
from .flow import fit_slope, verdict


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
