"""Real pretrained models on real text: do their residual connections do the seed's job?

For each model (default: SmolLM2-135M-Instruct, a 30-layer pre-RMSNorm Llama, and
all-MiniLM-L6-v2, a 6-layer post-LN BERT; ``resgrad.pretrained.load``), on a fixed batch of
the offline corpus (or ``text=``), with the model's own loss (next-token cross-entropy; the
encoder's in-batch contrastive loss over neighbouring sentences):

- ``flow``: per-unit weight-gradient norms and the residual-stream gradient at every unit's
  input, the branch's Jacobian gain ``||J_F^T u|| / ||u||`` at the real hidden states (how far
  ``1 + dF/dx`` is from the identity), input/output cosine, the skip/branch split of the
  gradient (``resgrad.pretrained.measure``);
- ``stream``: the hidden-state norm per layer (Sun et al. 2025, arXiv 2502.05795), angular
  distances between every pair of layers (Gromov et al. 2024), Block Influence (Men et al. 2024);
- ``paths``: the exact gradient by path length over all 2L units, its effective window, and
  Veit's sampled view (``resgrad.pretrained.ensemble``);
- ``removal``: every single layer, then k consecutive (k <= L/2) chosen by angular distance,
  Block Influence and the oracle; the middle layers skipped, reversed, shuffled
  (``resgrad.pretrained.deletion``; Sun et al. 2024).

A model whose wheel is not installed is skipped with its one line (the product works without them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import environment, jsonable
from ..results.pretrained import PretrainedResult
from ..rundir import RunDir
from . import driver
from .config import Config as BaseConfig
from .config import check_int, need

__all__ = ["PretrainedConfig", "SIZES", "SPECS", "REFERENCE", "preset", "study_stage", "run", "compute", "KIND"]

KIND = "resgrad.pretrained"
LABEL = "pretrained-model study"
CLAIM = "same"
NEEDS_OUT = False
Result = PretrainedResult

SPECS = ("pretrained:smollm2-135m", "pretrained:minilm-l6")

REFERENCE: dict[str, Any] = {
    "xiong2020": {"source": "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture, "
                            "arXiv 2002.04745",
                  "claims": ["at initialisation post-LN's weight gradients grow toward the output; pre-LN's are "
                             "about equal in every layer (Fig. 3, untrained models)"]},
    "sun2025": {"source": "Sun et al. 2025, The Curse of Depth in Large Language Models, arXiv 2502.05795",
                "claims": ["in pre-LN LLMs the hidden-state variance grows with depth and the deep layers come "
                           "close to the identity (Fig. 1: cosine of a deep layer's input and output near 1)"]},
    "gromov2024": {"source": "Gromov et al. 2024, The Unreasonable Ineffectiveness of the Deeper Layers, "
                             "arXiv 2403.17887",
                   "claims": ["the deep layers' angular distance d(x^l, x^(l+n)) is smallest; removing the block "
                              "with the smallest distance keeps most of the performance; Llama-2-70B keeps its "
                              "MMLU score to about 45-55% of layers removed after healing (Fig. 1)"]},
    "men2024": {"source": "Men et al. 2024, ShortGPT, arXiv 2403.03853",
                "claims": ["Block Influence 1 - E cos(X_i, X_(i+1)) ranks layers; removing about 25% of "
                           "Llama-2's layers with the lowest keeps about 90% of its benchmark performance"]},
    "sun2024": {"source": "Sun et al. 2024, Transformer Layers as Painters, arXiv 2407.09298",
                "claims": ["the first and last layers are special; the middle layers share a representation: "
                           "skipping, reversing or shuffling them degrades gracefully (reversing is the worst "
                           "of the reorders; skipping fewer middle layers beats skipping more)"]},
    "veit2016": {"source": "Veit, Wilber, Belongie 2016, Residual Networks Behave Like Ensembles of Relatively "
                           "Shallow Networks, arXiv 1605.06431",
                 "claims": ["in a 110-layer ResNet almost all gradient comes from paths 5 to 17 blocks long, of "
                            "54 (Fig. 6): the effective paths are short"]},
}


@dataclass
class PretrainedConfig(BaseConfig):
    """What the pretrained-model study measures (``preset(size)`` for quick/default/full)."""

    size: str = "default"  # the preset this came from (recorded only)
    specs: tuple[str, ...] = SPECS  # models: pretrained:NAME, gguf:PATH or hf:FOLDER
    text: str | None = None  # a UTF-8 text file (None: the offline corpus, pydoc_data.topics)
    seq_len: int = 64  # tokens per sequence (the encoder: per sentence, truncated)
    rows: int = 8  # sequences of a language model in the measured batch
    pairs: int = 16  # neighbouring-sentence pairs of a sentence encoder (its in-batch negatives: pairs - 1)
    probes: int = 4  # Gaussian probe vectors per unit for the branch Jacobian's gain
    paths: bool = True  # the exact path-length decomposition and the sampled view
    samples: int = 20  # sampled single paths per length (Veit et al.; 0: no sampled view)
    removal: bool = True  # layer deletion and reordering
    k_max: int | None = None  # most consecutive layers removed (None: half the depth)
    shuffles: int = 3  # random orders of the middle layers (Sun et al. 2024)
    seed: int = 0  # which windows / pairs of the text, the probes, the shuffles
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.specs = tuple(str(s) for s in self.specs)
        need(bool(self.specs), "specs", "at least one model SPEC", self.specs)
        check_int("seq_len", self.seq_len, 2)
        check_int("rows", self.rows, 1)
        check_int("pairs", self.pairs, 2)
        check_int("probes", self.probes, 1)
        check_int("samples", self.samples, 0)
        check_int("shuffles", self.shuffles, 1)
        check_int("seed", self.seed, 0)
        if self.k_max is not None:
            check_int("k_max", self.k_max, 1)


Config = PretrainedConfig

SIZES: dict[str, dict[str, Any]] = {
    # Seconds per model once loaded: the study's stage and the tests (a short batch, k <= 4, no sampled view).
    "quick": {"seq_len": 16, "rows": 2, "pairs": 4, "probes": 2, "samples": 0, "k_max": 4, "shuffles": 1},
    # The default: every measurement, k up to half the depth, at 2 x 32 tokens: both models in 100 s
    # on 2 idle cores, peak memory 2.2 GB (the bounds: 10 min, 4 GiB; benchmarks/README.md).
    "default": {"seq_len": 32, "rows": 2, "pairs": 16, "probes": 4, "samples": 4, "shuffles": 3},
    # Longer text, more probes and samples: for a machine with time.
    "full": {"seq_len": 256, "rows": 8, "pairs": 32, "probes": 8, "samples": 50, "shuffles": 10},
}


def preset(size: str, *, specs: tuple[str, ...] | None = None, text: str | None = None,
           seq_len: int | None = None, device: str = "cpu") -> PretrainedConfig:
    """A named size; ``specs``/``text``/``seq_len`` override its models, text and sequence length."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, received {size!r}")
    kw = dict(SIZES[size])
    if seq_len is not None:
        kw["seq_len"] = int(seq_len)
    if specs:
        kw["specs"] = tuple(specs)
    if text is not None:
        kw["text"] = str(Path(text).expanduser().resolve())
    return PretrainedConfig(size=size, device=device, **kw)


def study_stage(study_preset: str, *, device: str = "cpu") -> PretrainedConfig:
    """The stage of ``resgrad study``. ``default``: MiniLM alone, every measurement on 8 pairs of 16-token
    sentences (3 s on 2 idle cores). SmolLM2 is left out of it: at the default size it takes 88 s on 2 idle
    cores (its first load another 22 s to dequantise), which the study's 300 s budget cannot hold beside
    the other stages' 227 s; ``resgrad pretrained`` and the full preset measure it. ``he2015-cifar10``
    (the full study): both models at the default size."""
    if study_preset in ("default", "quick"):
        return PretrainedConfig(size="study", specs=("pretrained:minilm-l6",), seq_len=16, rows=2, pairs=8, probes=2,
                                samples=0, shuffles=1, device=device)
    return preset("default", device=device)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _measure(pre: Any, corpus: Any, config: PretrainedConfig, log: Callable[[str], None]) -> dict[str, Any]:
    from ..pretrained import batches
    from ..pretrained.deletion import deletion
    from ..pretrained.ensemble import path_view
    from ..pretrained.measure import stream, unit_flow
    from ..pretrained.scoring import Scorer

    seconds: dict[str, float] = {}
    model = pre.model.to(config.device)
    view = pre.view
    rows = config.pairs if pre.task == "sentence-encoder" else config.rows
    batch = batches(pre, corpus, seq_len=config.seq_len, n=rows, seed=config.seed).to(config.device)
    sc = Scorer.of(pre.task, batch)
    L = pre.depth
    log(f"{pre.name}: {L} layers ({2 * L} units), {len(batch)} {'pairs' if sc.task == 'embed' else 'sequences'} "
        f"of <= {config.seq_len} tokens ({sc.tokens} tokens)")
    t = time.perf_counter()
    f = unit_flow(view, sc.inputs, sc.loss, forward_kwargs=sc.kwargs, probes=config.probes, seed=config.seed)
    seconds["flow"] = time.perf_counter() - t
    layer = [math.hypot(f.param_norms[2 * i], f.param_norms[2 * i + 1]) for i in range(L)]
    flow = {"param_norms": f.param_norms, "stream_norms": f.stream_norms,
            "stream_ratio": _ratio(f.stream_norms[0], f.stream_norms[-1]), "param_growth": _ratio(layer[-1], layer[0]),
            "jacobian": f.jacobian, "jacobian_std": f.jacobian_std, "cosine": f.cosine, "skip_norms": f.skip_norms,
            "branch_norms": f.branch_norms, "branch_share": f.branch_share, "loss": f.loss, "probes": f.probes}
    t = time.perf_counter()
    st = stream(view, sc.inputs, forward_kwargs=sc.kwargs)
    seconds["stream"] = time.perf_counter() - t
    pv = None
    if config.paths:
        log(f"{pre.name}: the exact gradient by path length over {2 * L} units"
            + (f", {config.samples} sampled paths per length" if config.samples else ""))
        t = time.perf_counter()
        pv = path_view(view, sc.inputs, sc.loss, forward_kwargs=sc.kwargs, samples=config.samples, seed=config.seed)
        seconds["paths"] = time.perf_counter() - t
    removal = None
    if config.removal:
        log(f"{pre.name}: layers removed one at a time, k consecutive, the middle reordered")
        t = time.perf_counter()
        removal = deletion(model, sc.score, sc.primary, st.angular, st.block_influence, k_max=config.k_max,
                           shuffles=config.shuffles, seed=config.seed, higher_is_better=sc.task == "embed", log=log)
        seconds["removal"] = time.perf_counter() - t
    info = {k: v for k, v in pre.info.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return {"spec": pre.name, "task": pre.task, "norm": pre.info.get("norm", "pre"), "layers": L,
            "units": len(pre.units), "params": int(pre.info.get("parameters") or sum(p.numel() for p in model.parameters())),
            "info": info, "batch": {**batch.info, "rows": len(batch), "tokens": sc.tokens},
            "flow": flow, "stream": {"norms": st.norms, "rms": st.rms, "growth": _ratio(st.norms[-1], st.norms[0]),
                                     "angular": st.angular, "block_influence": st.block_influence},
            "paths": pv, "removal": removal, "seconds": seconds}


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What a used folder must match: the config on any device."""
    return {k: v for k, v in config.items() if k != "device"}


def run(config: PretrainedConfig, out: str | Path | RunDir | None, *, log: Callable[[str], None] | None = print,
        **inputs: Any) -> PretrainedResult:
    """Run (or reuse) the study in ``out`` (None: no folder); ``models={spec: Pretrained}`` skips loading."""
    if not isinstance(config, PretrainedConfig):
        raise TypeError(f"config must be a PretrainedConfig, received {type(config).__name__}")
    return driver.run(config, out, log=log, **inputs)


def compute(config: PretrainedConfig, ctx: driver.Context) -> PretrainedResult:
    """Load each model (or take it from ``ctx.inputs['models']``), measure it, let it go."""
    from ..data.corpus import corpus as _corpus
    try:
        from ..pretrained import load
    except ImportError as e:  # transformers or gguf not installed: every model is skipped, the study goes on
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        ctx.log(f"pretrained models skipped ({why})")
        load = None

    log = ctx.log
    given = ctx.inputs.get("models") or {}
    text = _corpus(config.text)
    models, skipped = [], []
    timing: dict[str, float] = {}
    for i, spec in enumerate(config.specs):
        t = time.perf_counter()
        if spec in given:
            pre = given[spec]
        else:
            try:
                if load is None:
                    raise ImportError(why)
                pre = load(spec)
            except ImportError as e:  # MissingWheel (names the pip command), or transformers/gguf missing
                line = str(e).splitlines()[0]
                log(f"{spec}: skipped ({line})")
                skipped.append({"spec": spec, "reason": line})
                continue
        loaded = time.perf_counter() - t
        rep = _measure(pre, text, config, log)
        rep["seconds"]["load"] = loaded
        rep["seconds"]["total"] = time.perf_counter() - t
        timing[spec] = rep["seconds"]["total"]
        models.append(rep)
        ctx.progress(i + 1, len(config.specs), spec)
        del pre
    timing["total"] = ctx.elapsed()
    notes = ["SmolLM2-135M's weights are 4-bit (Q4_1) dequantised to fp32: the measured model is the quantised "
             "one, not the bf16 original", "135M and 22.7M parameters: far smaller than the 7B-70B models of "
             "Gromov et al., ShortGPT and Sun et al.; no healing fine-tune after removal",
             f"text: {text.name} ({text.chars} characters): the Python language reference, not the papers' "
             "benchmarks; one fixed batch, so every number is of that batch"]
    return PretrainedResult.of(jsonable({
        "config": config.to_dict(), "environment": environment(config.device), "corpus": text.info(),
        "models": models, "skipped": skipped, "reference": REFERENCE, "notes": notes, "timing": timing}))
