"""The Transformer study: pre-LN vs post-LN vs no skip, at initialisation and trained.

Every Transformer layer is two residual units (attention, MLP); where the LayerNorm sits
decides whether gradients behave (Xiong et al. 2020, arXiv 2002.04745): post-LN
(``LN(x + F(x))``, Vaswani et al. 2017) has large gradients near the output at
initialisation and needs a learning-rate warm-up; pre-LN (``x + F(LN(x))``) has about the
same gradient in every layer and trains without one. Three twins with identical
parameters (``nets/transformer.py``: ``preln-L``, ``postln-L``, ``noskip-L``) measure it:

- ``flow``: per-unit parameter-gradient norms and the residual-stream gradient at every
  unit's input, at initialisation, across depth (Xiong et al. Fig. 3);
- ``runs``: each twin trained with and without a linear warm-up, same recipe otherwise
  (AdamW, betas (0.9, 0.98), as Xiong et al. §3 / Vaswani et al. §5.3);
- ``ensemble``: the trained pre-LN net's gradient split by path length over its 2L units,
  the effective window, the sampled view and unit lesions (experiments/ensemble.py);
- ``lesions``: whole layers removed, one and k consecutive (Gromov et al. 2024, with their
  angular-distance choice of which), and the middle layers reordered (Sun et al. 2024).

Data: MNIST-1D as a sequence of patches (classification), or a character-level language
model on a local text file (``text=``). Nothing downloads. ``run(config, out)`` writes one
run folder (``runs/<model>-<warm>-s<seed>`` trained through ``fit``, resumable;
``ensemble/``; ``results.json``, a :class:`resgrad.results.TransformerResult`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import paths, stats
from ..data import DataBundle
from ..executors import Executor
from ..io import environment, jsonable
from ..nets import blocks, build_for
from ..nets.transformer import KINDS
from ..results import TransformerResult
from ..rundir import RunDir
from ..train import TrainConfig, load_run
from . import degradation as _degradation
from . import driver
from .config import Config as BaseConfig
from .config import check_int, need
from .ensemble import EnsembleConfig

__all__ = ["TransformerConfig", "SIZES", "REFERENCE", "run", "compute", "KIND", "flow_at_init"]

KIND = "resgrad.transformer"  # config.json's kind for a transformer run folder
LABEL = "transformer study"
Result = TransformerResult

# Xiong et al. 2020 §3 / Vaswani et al. 2017 §5.3: Adam with beta2 = 0.98; lr 1e-3 is the
# rate at which Xiong et al. train pre-LN without warm-up. No step decay: the question is
# the start of training. Weight decay 0.01: AdamW's usual value for Transformers.
RECIPE = TrainConfig(epochs=8, batch_size=128, lr=1e-3, optimizer="adamw", betas=(0.9, 0.98), weight_decay=0.01,
                     milestones=(), warmup_shape="linear", device="cpu")

REFERENCE: dict[str, Any] = {
    "xiong2020": {
        "source": "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture, arXiv 2002.04745",
        "claims": [
            "at initialisation the gradient of post-LN's parameters grows toward the output layer; "
            "pre-LN's is about the same in every layer (Fig. 3)",
            "post-LN needs a learning-rate warm-up; without one it does not reach a usable model; "
            "pre-LN trains without warm-up (§3, Fig. 2)",
        ],
    },
    "liu2020": {"source": "Liu et al. 2020, Understanding the Difficulty of Training Transformers, arXiv 2004.08249",
                "claims": ["vanishing gradients alone do not explain post-LN's instability: its heavy dependence on "
                           "the residual branches amplifies small parameter changes"]},
    "gromov2024": {"source": "Gromov et al. 2024, The Unreasonable Ineffectiveness of the Deeper Layers, "
                             "arXiv 2403.17887",
                   "claims": ["up to about half of an LLM's layers can be removed (consecutive, chosen by the "
                              "smallest angular distance between the block's input and output) with little loss "
                              "after a small healing fine-tune"]},
    "men2024": {"source": "Men et al. 2024, ShortGPT, arXiv 2403.03853",
                "claims": ["removing the ~25% of layers with the lowest Block Influence keeps most of the "
                           "benchmark performance"]},
    "sun2024": {"source": "Sun et al. 2024, Transformer Layers as Painters, arXiv 2407.09298",
                "claims": ["the first and last layers are special; the middle layers share a representation "
                           "space: skipping or reordering them degrades gracefully"]},
}


@dataclass
class TransformerConfig(BaseConfig):
    """What the Transformer study measures (``preset(size)`` for the quick/default/full sizes)."""

    size: str = "default"  # the preset this came from (recorded only)
    data: str = "mnist1d"  # "mnist1d" (patches, classification) or "text" (give data_kwargs path=)
    data_kwargs: dict[str, Any] = field(default_factory=dict)  # resgrad.load_data options (text: path, seq_len)
    n_train: int | None = None  # cut the training split to this many examples (None: all)
    n_test: int | None = None
    d_model: int = 32  # width of every twin (the registry's default Transformer)
    n_heads: int = 4
    flow_depths: tuple[int, ...] = (2, 4, 8, 16, 32, 64)  # layers, at initialisation (the issue: 2 to 64)
    flow_seeds: tuple[int, ...] = (0, 1, 2)  # initialisations averaged per depth
    flow_batch: int = 256  # training examples in the measured step
    layers: int = 4  # depth of the trained twins
    seeds: tuple[int, ...] = (0,)  # training seeds per (twin, warm-up)
    warmup_epochs: float = 1.0  # the warm-up twin's linear ramp, in epochs (Xiong et al.: 4,000 steps)
    train: TrainConfig = field(default_factory=lambda: replace(RECIPE))  # the recipe of every run
    ensemble: EnsembleConfig = field(default_factory=lambda: EnsembleConfig.preset("default", samples=200,
                                                                                  examples=256, trials=3))
    shuffles: int = 5  # random orders of the middle layers (Sun et al. 2024)
    eval_examples: int | None = None  # test examples for layer lesions (None: the whole test split)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if isinstance(self.ensemble, dict):
            self.ensemble = EnsembleConfig.from_dict(self.ensemble)
        self.flow_depths = tuple(int(d) for d in self.flow_depths)
        self.flow_seeds = tuple(int(s) for s in self.flow_seeds)
        self.seeds = tuple(int(s) for s in self.seeds)
        for name in ("layers", "flow_batch", "shuffles", "d_model", "n_heads"):
            check_int(name, getattr(self, name), 1)
        need(bool(self.flow_depths) and min(self.flow_depths) >= 1, "flow_depths", "layer counts >= 1",
             self.flow_depths)
        need(bool(self.seeds), "seeds", "at least one seed", self.seeds)
        need(bool(self.flow_seeds), "flow_seeds", "at least one seed", self.flow_seeds)
        need(isinstance(self.warmup_epochs, (int, float)) and not isinstance(self.warmup_epochs, bool)
             and 0 < self.warmup_epochs <= self.train.epochs, "warmup_epochs", f"in (0, epochs={self.train.epochs}]",
             self.warmup_epochs)

    @property
    def task(self) -> str:
        return "lm" if self.data == "text" else "classify"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"], d["ensemble"] = asdict(self.train), self.ensemble.to_dict()
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "transformer config") -> TransformerConfig:
        """Strictly load a TransformerConfig dict (an unknown or mistyped field is one line naming it)."""
        return cls.from_json(d, source=source)


Config = TransformerConfig  # the experiment contract: this module's config type


SIZES: dict[str, dict[str, Any]] = {
    # Seconds: tests and the quick study.
    "quick": {"flow_depths": (2, 4), "flow_seeds": (0,), "flow_batch": 64, "layers": 2, "n_train": 512,
              "n_test": 256, "train": replace(RECIPE, epochs=2), "warmup_epochs": 1.0, "shuffles": 2,
              # Lesions on every test example (eval_examples=None), so the pre-LN net has one baseline.
              "ensemble": EnsembleConfig.preset("quick", eval_examples=None)},
    # The default study's stage: ~40 s on 2 CPU cores (benchmarks/README.md).
    "default": {"flow_depths": (2, 4, 8, 16, 32, 64), "flow_seeds": (0, 1), "layers": 4,
                "train": replace(RECIPE, epochs=8)},
    # Closer to the papers: a 6-layer encoder as in Vaswani et al., three seeds, longer training.
    "full": {"flow_seeds": (0, 1, 2, 3, 4), "layers": 6, "seeds": (0, 1, 2), "train": replace(RECIPE, epochs=30),
             "warmup_epochs": 3.0, "shuffles": 10,
             "ensemble": EnsembleConfig.preset("default", examples=500, trials=5)},
}


def preset(size: str, *, device: str = "cpu", text: str | None = None, seq_len: int = 32,
           epochs: int | None = None) -> TransformerConfig:
    """A named size; ``text``: a local file, for the character-level language model instead of MNIST-1D."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, received {size!r}")
    kw = dict(SIZES[size])
    kw["train"] = replace(kw.get("train", RECIPE), device=device)
    kw["ensemble"] = replace(kw.get("ensemble", TransformerConfig().ensemble), device=device)
    if epochs is not None:
        kw["train"] = replace(kw["train"], epochs=int(epochs))
        kw["warmup_epochs"] = min(float(kw.get("warmup_epochs", 1.0)), float(epochs))
    if text is not None:
        kw.update(data="text", data_kwargs={"path": str(Path(text).expanduser().resolve()), "seq_len": int(seq_len)})
        kw.pop("n_train", None)
        kw.pop("n_test", None)
    return TransformerConfig(size=size, device=device, **kw)


# ---- models ---------------------------------------------------------------------------


def _model_kwargs(config: TransformerConfig, data: DataBundle) -> dict[str, Any]:
    kw: dict[str, Any] = {"d_model": config.d_model, "n_heads": config.n_heads}
    if config.task == "lm":
        kw.update(task="lm", vocab=data.num_classes, context=data.input_shape[0])
    return kw


def _build(kind: str, depth: int, config: TransformerConfig, data: DataBundle, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_for(f"{kind}-{depth}", data.input_shape, data.num_classes, **_model_kwargs(config, data))


# ---- gradient flow at initialisation ----------------------------------------------------


def flow_at_init(model: nn.Module, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
    """(per-unit weight-gradient norms, residual-stream gradient norms) for one step.

    The loss is the mean cross-entropy of ``model(x)`` against ``y``; the stream norm ``i``
    is ``‖∂L/∂h_i‖`` at unit ``i``'s input, the last one after the last unit. Dropout-free
    nets measure the same in train and eval mode; the model is put in train mode.
    """
    units = blocks(model)
    inputs: list[Tensor] = []

    def keep(_m: nn.Module, args: tuple) -> None:
        inputs.append(args[0])

    def keep_out(_m: nn.Module, _args: tuple, out: Tensor) -> None:
        inputs.append(out)

    handles = [u.register_forward_pre_hook(keep) for u in units] + [units[-1].register_forward_hook(keep_out)]
    try:
        model.train()
        loss = F.cross_entropy(model(x), y)
    finally:
        for h in handles:
            h.remove()
    # The sublayer's weights, not its LayerNorm's gain and bias (Xiong et al. Fig. 3 plots the
    # weight matrices; post-LN's norm sits on the skip path and would mix the two).
    params = [[p for m in u.modules() if not isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)
               if p.requires_grad] for u in units]
    flat = [p for ps in params for p in ps]
    grads = torch.autograd.grad(loss, inputs + flat, allow_unused=True)
    streams = [float(g.norm()) if g is not None else 0.0 for g in grads[: len(inputs)]]
    rest = list(grads[len(inputs):])
    norms = []
    for ps in params:
        gs, rest = rest[: len(ps)], rest[len(ps):]
        norms.append(math.sqrt(sum(float(g.double().square().sum()) for g in gs if g is not None)))
    return norms, streams


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _flow(config: TransformerConfig, data: DataBundle, log: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    x, y = data.x_train[: config.flow_batch].to(config.device), data.y_train[: config.flow_batch].to(config.device)
    rows = []
    log(f"gradient flow at initialisation: depths {', '.join(map(str, config.flow_depths))}, "
        f"{len(config.flow_seeds)} seed(s)")
    for depth in config.flow_depths:
        for kind in KINDS:
            per_seed = []
            for seed in config.flow_seeds:
                model = _build(kind, depth, config, data, seed).to(config.device)
                per_seed.append(flow_at_init(model, x, y))
            p = [sum(s[0][i] for s in per_seed) / len(per_seed) for i in range(2 * depth)]
            st = [sum(s[1][i] for s in per_seed) / len(per_seed) for i in range(2 * depth + 1)]
            lay = [math.hypot(p[2 * i], p[2 * i + 1]) for i in range(depth)]
            growths = []
            for pn, _ in per_seed:
                lz = [math.hypot(pn[2 * i], pn[2 * i + 1]) for i in range(depth)]
                growths.append(_ratio(lz[-1], lz[0]))
            rows.append({"kind": kind, "depth": depth, "param_norms": p, "layer_norms": lay, "stream_norms": st,
                         "growth": _ratio(lay[-1], lay[0]), "stream_ratio": _ratio(st[0], st[-1]),
                         "per_seed_growth": growths})
    return {"depths": list(config.flow_depths), "seeds": list(config.flow_seeds), "batch": len(x), "rows": rows,
            "seconds": time.perf_counter() - t0}


# ---- training ---------------------------------------------------------------------------


def _label(kind: str, layers: int, warm: bool, seed: int) -> str:
    return f"{kind}-{layers}-{'warmup' if warm else 'nowarmup'}-s{seed}"


def _train(config: TransformerConfig, data: DataBundle, root: Path, executor: Executor,
           log: Callable[[str], None], progress: bool | None) -> list[dict[str, Any]]:
    spec = {**_degradation._data_spec(config), "fingerprint": _degradation.fingerprint(data)}
    warm_steps = max(1, round(config.warmup_epochs * data.num_batches(config.train.batch_size)))
    kwargs = _model_kwargs(config, data)
    jobs, meta = [], []
    for kind in KINDS:
        for warm in (False, True):
            for seed in config.seeds:
                train = replace(config.train, seed=seed, warmup_iters=warm_steps if warm else 0)
                label = _label(kind, config.layers, warm, seed)
                jobs.append({"model": f"{kind}-{config.layers}", "model_kwargs": kwargs, "seed": seed,
                             "train": asdict(train), "monitor": True, "data": spec,
                             "run_dir": str(root / "runs" / label), "label": label})
                meta.append({"kind": kind, "warmup": warm, "seed": seed})
    log(f"training {len(jobs)} runs: {', '.join(KINDS)} x warm-up ({warm_steps} steps) or none x "
        f"{len(config.seeds)} seed(s), {config.layers} layers, {config.train.epochs} epochs")
    got = _degradation.train_runs(jobs, data, executor, log=log, progress=progress)
    runs = []
    for j, m, g in zip(jobs, meta, got, strict=True):
        loss = g["final"].get("train_loss")
        runs.append({**m, "model": j["model"], "params": g["params"], "run_dir": j["run_dir"],
                     "history": g["history"], "final": g["final"], "grad": g["grad"],
                     "diverged": not (isinstance(loss, float) and math.isfinite(loss))})
    return runs


def _cells(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells = []
    for kind in KINDS:
        for warm in (False, True):
            rs = [r for r in runs if r["kind"] == kind and r["warmup"] == warm]
            tr = stats.summary([r["final"]["train_error"] for r in rs])
            te = stats.summary([r["final"]["test_error"] for r in rs])
            cells.append({"kind": kind, "warmup": warm, "train_error": tr.mean, "test_error": te.mean,
                          "train_error_std": tr.std, "test_error_std": te.std, "n_seeds": len(rs),
                          "diverged": sum(r["diverged"] for r in rs)})
    return cells


# ---- layer lesions ------------------------------------------------------------------------


def _layer_units(layers: list[int]) -> list[int]:
    return [u for layer in layers for u in (2 * layer, 2 * layer + 1)]


def _angular(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The residual stream at every layer's input and after the last layer (``(N, T, d)`` each)."""
    units = blocks(model)
    seen: list[Tensor] = []
    hs = [u.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach())) for u in units[::2]]
    hs.append(units[-1].register_forward_hook(lambda _m, _a, o: seen.append(o.detach())))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hs:
            h.remove()
    return seen


def _angular_distance(a: Tensor, b: Tensor) -> float:
    """Gromov et al. 2024 eq. (7): arccos of the cosine similarity / pi, averaged over tokens."""
    cos = F.cosine_similarity(a.flatten(0, -2).double(), b.flatten(0, -2).double(), dim=-1).clamp(-1, 1)
    return float(torch.arccos(cos).mean() / math.pi)


def _layer_lesion(model: nn.Module, kind: str, name: str, data: DataBundle, config: TransformerConfig,
                  seed: int) -> dict[str, Any]:
    n = len(blocks(model)) // 2
    x, y = data.x_test[: config.eval_examples], data.y_test[: config.eval_examples]
    x, y = x.to(config.device), y.to(config.device)

    def err(drop: list[int] = (), order: list[int] | None = None) -> float:
        with paths.deleted(model, _layer_units(list(drop))):
            if order is None:
                return paths.error_rate(model, x, y)
            with paths.reordered(model, _layer_units(order)):
                return paths.error_rate(model, x, y)

    base = err()
    single = [err([layer]) for layer in range(n)]
    streams = _angular(model, x)
    consecutive = []
    for k in range(1, n):
        errors = [err(list(range(s, s + k))) for s in range(n - k + 1)]
        dist = [_angular_distance(streams[s], streams[s + k]) for s in range(n - k + 1)]
        pick = min(range(len(dist)), key=dist.__getitem__)
        consecutive.append({"k": k, "errors": errors, "best": min(errors), "mean": sum(errors) / len(errors),
                            "angular_start": pick, "angular_error": errors[pick]})
    reorder = None
    if n >= 4:
        middle = list(range(1, n - 1))
        g = torch.Generator().manual_seed(seed)
        shuffled = []
        for _ in range(config.shuffles):
            perm = [middle[i] for i in torch.randperm(len(middle), generator=g).tolist()]
            shuffled.append(err(order=[0, *perm, n - 1]))
        reorder = {"layers": middle, "reversed": err(order=[0, *middle[::-1], n - 1]), "shuffled": shuffled,
                   "shuffled_mean": sum(shuffled) / len(shuffled)}
    counts = torch.bincount(y.flatten(), minlength=data.num_classes)
    chance = 1.0 - float(counts.max()) / y.numel()
    return {"kind": kind, "model": name, "layers": n, "base": base, "single": single, "consecutive": consecutive,
            "reorder": reorder, "chance": chance}


# ---- the experiment -------------------------------------------------------------------------


def load_data_for(config: TransformerConfig) -> DataBundle:
    """The dataset of ``config``, cut to ``n_train``/``n_test`` when set (as the degradation
    stage loads it: the same four fields, so training workers load the same examples)."""
    return _degradation.load_for(config)  # type: ignore[arg-type]  # reads data, data_kwargs, n_train, n_test


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What a used folder must match: the config on any device."""
    return {k: v for k, v in config.items() if k != "device"}


def run(
    config: TransformerConfig,
    out: str | Path | RunDir,
    *,
    log: Callable[[str], None] | None = print,
    progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
    executor: Executor | str | None = None,
) -> TransformerResult:
    """Run (or resume) the Transformer study in ``out``; write and return its TransformerResult.

    ``executor``: where the training runs go (an Executor, left open, or its name, closed here;
    None: one after another in this process). A finished folder with the same config returns its result.
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config must be a TransformerConfig, received {type(config).__name__}")
    return driver.run(config, out, executor=executor, log=log, progress=progress)


def compute(config: TransformerConfig, ctx: driver.Context) -> TransformerResult:
    """Flow at initialisation, the trained twins, their ensemble view (a sub-experiment) and lesions."""
    assert ctx.run_dir is not None  # NEEDS_OUT
    run_dir, log, progress, executor = ctx.run_dir, ctx.log, ctx.progress, ctx.pool()
    cfg = config.to_dict()
    t0 = ctx.started
    timing: dict[str, float] = {}
    data = load_data_for(config)
    flow = _flow(config, data, log)
    timing["flow"] = flow["seconds"]

    t = time.perf_counter()
    runs = _train(config, data, run_dir.path, executor, log, progress)
    timing["train"] = time.perf_counter() - t

    seed = config.seeds[0]
    trained = {}
    for kind in KINDS:
        r = next(r for r in runs if r["kind"] == kind and not r["warmup"] and r["seed"] == seed)
        trained[kind] = (load_run(r["run_dir"], device=config.device)[0], _label(kind, config.layers, False, seed))

    t = time.perf_counter()
    log(f"ensemble view of the trained pre-LN net ({2 * config.layers} units) beside its no-skip twin")
    # A sub-experiment through the same driver; reused when a killed run finished it for this config.
    ensemble = driver.run(config.ensemble, run_dir.sub("ensemble"), log=log, reuse=True,
                          residual=trained["preln"][0], plain=trained["noskip"][0], data=data,
                          names=(trained["preln"][1], trained["noskip"][1]), parts=("paths", "lesion"))
    timing["ensemble"] = time.perf_counter() - t

    t = time.perf_counter()
    log("layer lesions: one layer, k consecutive layers, the middle layers reordered")
    lesions = {kind: _layer_lesion(m, kind, name, data, config, seed) for kind, (m, name) in trained.items()}
    timing["lesions"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0

    notes = []
    if config.task == "classify":
        notes.append(f"MNIST-1D as {data.input_shape[-1] // 4} patches of 4 values, mean-pooled: a small "
                     "classification Transformer, not the papers' translation or language models")
    result = TransformerResult.of(jsonable({
        "config": cfg, "environment": environment(config.device), "data": data.name, "task": config.task,
        "layers": config.layers, "params": runs[0]["params"], "flow": flow, "runs": runs, "cells": _cells(runs),
        "ensemble": ensemble.to_json(), "lesions": lesions, "reference": REFERENCE, "notes": notes, "timing": timing,
    }))
    return result
