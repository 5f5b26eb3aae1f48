"""The residual designs of today, each a twin on the Residual/Plain contract (issue 21).

:data:`DESIGNS` is the table the designs experiment and its report read: a design's name, its
family (``"transformer"`` or ``"cnn"``), the paper, its arXiv id and the claim the paper
measures, in one sentence. Every design is also an ordinary registry name:

- Transformers (``nets/transformer.py``, kinds of :class:`~resgrad.nets.transformer.Transformer`):
  ``preln-8``, ``deepnorm-8``, ``hc-dynamic-24``, or the family with ``depth=``;
- He et al. 2015 CIFAR CNNs (both ``dims``): ``resnet20``/``plain20`` (BN, existing),
  ``fixup-resnet20``, ``skipinit-resnet20``, ``nf-resnet20`` (or ``fixup-resnet`` with ``depth=``).

:func:`model_name` and :func:`design_of` convert between a design and its registry names.
:func:`mixing_matrices` and :func:`amax` read the stream-mixing matrices of the hyper-connection
designs (the mHC paper's Amax, DeepSeek-AI 2025 Fig. 3 and 7).

Parameters beside pre-LN (same width, depth, heads; :func:`param_delta`), at the char-LM size of
``benchmarks/designs_speed.py`` (6 layers, d = 128, vocabulary 96, context 64) and at the registry
default (4 layers, d = 32, classify): postln, noskip, deepnorm, lns, mixln +0; periln +0.25% /
+0.99% (an LN per sublayer); rezero -0.27% / -1.10% (no LN); dyt +0.001% / +0.02% (one alpha per
norm); hc +0.02% / +0.37%; hc-dynamic +1.03% / +4.36% (a LayerNorm and ``d x (n + 2)`` weights per
unit); mhc +12.6% / +49.9% (``phi`` is ``n d x (n^2 + 2n)`` per unit, the paper's mapping).
CNNs beside the BN ResNet of the same depth (20 / 56 layers): 1-D fixup -1.46% / -1.37%,
skipinit -1.50% / -1.40%, nf +3.02% / +0.96%; 2-D fixup -0.49% / -0.46%, skipinit -0.51% /
-0.47%, nf +1.02% / +0.32% (BN's affine parameters go; NF's WS convs carry a gain and a bias per
filter and its two transitions a 1x1 projection). ``tests/nets/test_designs*.py`` count them by hand.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from .hyper import amax, amax_profile, mixing_matrices, sinkhorn

__all__ = ["DESIGNS", "Design", "TRANSFORMER_DESIGNS", "CNN_DESIGNS", "NEW_KINDS", "design_of", "model_name",
           "check_design", "mixing_matrices", "amax", "amax_profile", "sinkhorn", "param_delta"]


@dataclass(frozen=True)
class Design:
    """One design: where it is built and what its paper claims."""

    name: str  # the registry's spelling: a Transformer kind or a CNN prefix
    family: str  # "transformer" or "cnn"
    title: str  # for tables: "DeepNorm"
    paper: str  # "Wang et al. 2022"
    arxiv: str  # "2203.00555"
    claim: str  # the paper's measured claim, one sentence, for the report
    streams: int = 1  # residual streams (hyper-connections: 4)
    baseline: bool = False  # a design resgrad had before issue 21
    built: str = ""  # how resgrad builds it where the paper leaves a choice (the report's caveats)


_T, _C = "transformer", "cnn"
DESIGNS: dict[str, Design] = {d.name: d for d in (
    Design("preln", _T, "pre-LN", "Xiong et al. 2020", "2002.04745",
           "With the LayerNorm inside the residual branch the gradients are well-behaved at initialisation, "
           "so the Transformer trains without learning-rate warm-up.", baseline=True),
    Design("postln", _T, "post-LN", "Xiong et al. 2020", "2002.04745",
           "With the LayerNorm after the addition the expected gradients of the last layers are large at "
           "initialisation, so training needs a warm-up.", baseline=True),
    Design("noskip", _T, "no skip", "He and Hofmann 2023", "2302.10322",
           "Without skip connections the signal degrades across depth (rank collapse) and training needs "
           "many more iterations (about 5x without skips and norms).", baseline=True),
    Design("deepnorm", _T, "DeepNorm", "Wang et al. 2022", "2203.00555",
           "LN(alpha x + F(x)) with a beta-scaled initialisation bounds the model update, so post-LN "
           "Transformers train stably up to 1000 layers."),
    Design("periln", _T, "Peri-LN", "Kim et al. 2025", "2502.02732",
           "A LayerNorm on the input and on the output of every sublayer keeps hidden-state variance and "
           "gradient spikes small, training more stably than pre-LN and post-LN."),
    Design("lns", _T, "LayerNorm Scaling", "Sun et al. 2025", "2502.05795",
           "Pre-LN's output variance grows with depth and deep layers become near-identities; scaling each "
           "LayerNorm's output by 1/sqrt(layer index) curbs the growth so deep layers contribute."),
    Design("mixln", _T, "Mix-LN", "Li et al. 2024", "2412.13795",
           "Pre-LN starves the deep layers of gradient and post-LN the early ones; post-LN in the first "
           "quarter and pre-LN after gives more uniform gradient norms across layers."),
    Design("rezero", _T, "ReZero", "Bachlechner et al. 2020", "2003.04887",
           "x + a F(x) with a learned a starting at 0 makes every layer the identity at initialisation, "
           "so deep Transformers train faster without LayerNorm or warm-up."),
    Design("dyt", _T, "DyT", "Zhu et al. 2025", "2503.10622",
           "tanh(alpha x) with an affine map, alpha starting at 0.5, replaces every LayerNorm and matches "
           "the normalised Transformer's performance."),
    Design("hc", _T, "hyper-connections (static)", "Zhu et al. 2024", "2409.19606",
           "n residual streams with learnable width and depth connections avoid both gradient vanishing "
           "(pre-norm) and representation collapse (post-norm), and converge faster.", streams=4),
    Design("hc-dynamic", _T, "hyper-connections (dynamic)", "Zhu et al. 2024", "2409.19606",
           "Connections that depend on the input (dynamic hyper-connections) improve further on static "
           "ones at the same streams.", streams=4),
    Design("mhc", _T, "mHC", "DeepSeek-AI 2025", "2512.24880",
           "Unconstrained hyper-connections' composite mixing gain across depth grows to thousands; "
           "projecting each mixing matrix onto the doubly stochastic ones (Sinkhorn-Knopp) keeps it near 1 "
           "and training stable.", streams=4),
    Design("plain", _C, "plain (BN)", "He et al. 2015", "1512.03385",
           "A deeper plain net has a higher training error than a shallower one (degradation).", baseline=True),
    Design("resnet", _C, "ResNet (BN)", "He et al. 2015", "1512.03385",
           "Residual learning makes deeper nets easier to optimise: the ResNet's error falls with depth "
           "where its plain twin's rises.", baseline=True),
    Design("fixup", _C, "Fixup", "Zhang et al. 2019", "1901.09321",
           "Rescaling the initialisation (last layer of each branch zero, the others by L^(-1/(2m-2))) with "
           "scalar biases and multipliers trains a ResNet without normalisation as well as with BatchNorm."),
    Design("skipinit", _C, "SkipInit", "De and Smith 2020", "2002.10444",
           "BatchNorm helps deep ResNets by downscaling the residual branch; a learnable scalar on each branch "
           "starting at 0 trains deep unnormalised ResNets."),
    Design("nf", _C, "NF-ResNet", "Brock et al. 2021", "2101.08692",
           "With scaled weight standardisation and the analytic scales alpha and beta, unnormalised ResNets "
           "propagate signal like BN ResNets (Signal Propagation Plots) and train to similar accuracy."),
)}

# How each is built where the paper leaves a choice (or resgrad makes one), one line each.
_BUILT = {
    "deepnorm": "Encoder-/decoder-only constants alpha = (2N)^(1/4), beta = (8N)^(-1/4); biases keep the default init.",
    "periln": "An output LayerNorm on every sublayer; no extra LayerNorm on the embedding.",
    "lns": "Both sublayers of layer l (from 1) scale their LayerNorm output by 1/sqrt(l); the final LN is unscaled.",
    "mixln": "Post-LN in the first floor(layers/4) layers (alpha = 0.25): nets under 4 layers are all pre-LN.",
    "rezero": "No LayerNorm anywhere, the final one included; one gate per sublayer.",
    "dyt": "The final LayerNorm is a DyT too; one alpha per DyT, starting at 0.5.",
    "hc": "n = 4 streams on pre-LN units; A_m = e_(k mod 4), A_r = I, B = 1 at init.",
    "hc-dynamic": "As hc, with LayerNorm-ed per-token connections, W = 0 and s = 0.01 at init (+1.0% parameters at d = 128).",
    "mhc": ("Per-token mappings from the RMSNorm-ed n*d stream vector, 20 Sinkhorn rounds; at init phi = 0, alpha = 0.01, "
            "H_pre = 1/4, H_post = 1, H_res near I (resgrad's choice); +12.6% parameters at d = 128, 6 layers."),
    "fixup": "Option A shortcuts on x + bias1a (the authors' CIFAR code); the stem conv He-initialised.",
    "skipinit": "BatchNorm removed, convs without bias, a scalar after each branch starting at 0.",
    "nf": ("Pre-activation blocks, alpha = 0.2, WS 1x1 projection shortcuts at the two transitions "
           "(+1.0% parameters at 20 layers, 2-D; +3.0% 1-D)."),
}
DESIGNS = {k: replace(d, built=_BUILT.get(k, "")) for k, d in DESIGNS.items()}

TRANSFORMER_DESIGNS = tuple(n for n, d in DESIGNS.items() if d.family == _T)
CNN_DESIGNS = tuple(n for n, d in DESIGNS.items() if d.family == _C)
NEW_KINDS = tuple(n for n in TRANSFORMER_DESIGNS if not DESIGNS[n].baseline)
# The new CNN designs are residual nets only: their registry prefix is "<design>-resnet".
_CNN_NEW = tuple(n for n in CNN_DESIGNS if not DESIGNS[n].baseline)


def check_design(name: str, family: str | None = None) -> Design:
    """The :class:`Design` called ``name``; one-line ValueError for an unknown one or the wrong family."""
    if not isinstance(name, str):
        raise TypeError(f"a design name must be a string, received {type(name).__name__}")
    key = name.strip().lower()
    if key not in DESIGNS:
        close = difflib.get_close_matches(key, list(DESIGNS), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown design {name!r}{hint}; the designs are {', '.join(DESIGNS)}")
    d = DESIGNS[key]
    if family is not None and d.family != family:
        have = ", ".join(n for n, x in DESIGNS.items() if x.family == family)
        raise ValueError(f"design {key!r} exists for {d.family}s only, not for {family}s; "
                         f"the {family} designs are {have}")
    return d


def model_name(design: str, depth: int) -> str:
    """The registry name of ``design`` at ``depth``: ``("mhc", 24)`` -> ``mhc-24``, ``("nf", 56)`` -> ``nf-resnet56``.

    Transformers count layers (two units each); CNNs count the He et al. 6n+2 layers.
    """
    d = check_design(design)
    if d.family == _T:
        return f"{d.name}-{int(depth)}"
    return f"{d.name}{int(depth)}" if d.baseline else f"{d.name}-resnet{int(depth)}"


def design_of(model: str) -> str | None:
    """The design a registry name builds (``hc-dynamic-8`` -> ``hc-dynamic``, ``resnet20`` -> ``resnet``), or None."""
    import re

    key = model.strip().lower()
    m = re.match(r"^([a-z][a-z-]*?)-?(\d+)$", key)
    stem = m.group(1) if m else key
    if stem in DESIGNS:
        return stem
    if stem.endswith("-resnet") and stem[: -len("-resnet")] in _CNN_NEW:
        return stem[: -len("-resnet")]
    return None


def param_delta(model, reference) -> float:
    """``(params(model) - params(reference)) / params(reference)``: the table's parameter difference."""
    n = sum(p.numel() for p in model.parameters())
    r = sum(p.numel() for p in reference.parameters())
    return (n - r) / r
