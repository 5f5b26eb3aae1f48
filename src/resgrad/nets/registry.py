"""Named builders: ``build("resnet56")``, ``build("resnet", depth=74)``, ``list_models("plain*")``.

Modelled on torchvision's ``@register_model`` and timm's ``create_model``: each public
name is a two-line function over one private builder; a duplicate name is an error; an
unknown name lists the close matches.

Every builder is registered with its :class:`InputContract` (what one example looks like
and which builder arguments fit the model to a dataset), as timm registers a model's
pretrained config beside its builder: ``build_for`` reads the contract, it never guesses
from the name.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .he2015 import he_net
from .mlp import MLP

__all__ = ["register_model", "build", "build_for", "list_models", "family_of", "describe", "twin_names",
           "plain_twin", "TWIN_UNITS", "InputContract", "contract_of", "CONV", "VECTOR", "SEQUENCE"]

# Residual families and their plain twins (same layers and parameters, no skip), longest prefix first.
_TWIN_PREFIXES = (("preresnet", "preplain"), ("resnet", "plain"), ("resmlp", "plainmlp"))
# He et al. unit -> (plain, residual) family: "post" is the 2015 net, "pre" the 2016 pre-activation one.
TWIN_UNITS = {"post": ("plain", "resnet"), "pre": ("preplain", "preresnet")}


def twin_names(depth: int, unit: str = "post") -> tuple[str, str]:
    """Registry names of the (plain, residual) twins of ``depth`` layers."""
    if unit not in TWIN_UNITS:
        raise ValueError(f"unit must be one of {', '.join(TWIN_UNITS)}, received {unit!r}")
    plain, res = TWIN_UNITS[unit]
    return f"{plain}{depth}", f"{res}{depth}"


def plain_twin(name: str) -> str | None:
    """``resnet110`` -> ``plain110``, ``resmlp-16x64`` -> ``plainmlp-16x64``; None for other names."""
    for res, plain in _TWIN_PREFIXES:
        if name.startswith(res):
            return plain + name[len(res):]
    return None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass(frozen=True)
class InputContract:
    """What input a model takes: one example's shape (no batch dim) and its class count.

    ``kind``: ``"conv"`` (a ``(C, L)`` signal or ``(C, H, W)`` image), ``"vector"`` (any
    shape, read flattened), ``"sequence"`` (any shape, read flattened as a sequence of
    patches), ``"image"`` (a fixed ``(C, H, W)``) or ``"tokens"`` (``(T,)`` integer ids).
    ``ranks``: the example ranks accepted (None: any). ``shape``/``num_classes``: the
    defaults when a caller names none. ``fit``: the builder keyword arguments that fit the
    model to examples of a shape and a class count (registry builders only).
    """

    kind: str
    summary: str  # one line for people: "(C, L) signal or (C, H, W) image"
    ranks: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    fit: Callable[[tuple[int, ...], int], dict[str, Any]] | None = None
    takes_dims: bool = False  # the builder takes ``dims`` (1: signals, 2: images)

    def check(self, name: str, shape: tuple[int, ...]) -> None:
        """One-line ValueError when ``shape`` is not an example this model takes."""
        if self.ranks is not None and len(shape) not in self.ranks:
            if self.kind == "conv":
                raise ValueError(f"{name} is a convolutional net: it needs inputs {self.summary}, received {shape}; "
                                 "use an MLP (e.g. resmlp-16x64) for flat features")
            raise ValueError(f"{name} takes {self.summary}, received {shape}")

    def kwargs(self, name: str, shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
        """The builder arguments for examples of ``shape`` and ``num_classes`` classes."""
        if self.fit is None:
            raise ValueError(f"{name} is built as it is ({self.summary}); it takes no input shape")
        shape = tuple(int(s) for s in shape)
        self.check(name, shape)
        return self.fit(shape, int(num_classes))


# (C, L) -> 1-D convolutions, (C, H, W) -> 2-D (He et al. 2015 nets; MNIST-1D is (1, 40)).
CONV = InputContract("conv", "(C, L) or (C, H, W)", ranks=(2, 3), shape=(1, 40), num_classes=10,
                     fit=lambda s, c: {"dims": len(s) - 1, "in_channels": s[0], "num_classes": c}, takes_dims=True)
VECTOR = InputContract("vector", "any example, read flattened as a vector", shape=(1, 40), num_classes=10,
                       fit=lambda s, c: {"in_features": _numel(s), "num_classes": c})
# A Transformer reads the flattened example as a sequence of patches (4 values when they divide).
SEQUENCE = InputContract("sequence", "any example, read flattened as a sequence of patches", shape=(1, 40),
                         num_classes=10,
                         fit=lambda s, c: {"length": _numel(s), "patch": 4 if _numel(s) % 4 == 0 else 1,
                                           "num_classes": c})

_MLP_RE = re.compile(r"^(resmlp|plainmlp)-(\d+)x(\d+)$")
_MODELS: dict[str, Callable[..., nn.Module]] = {}
# Families take an explicit depth: build("resnet", depth=74).
_FAMILIES: dict[str, Callable[..., nn.Module]] = {}
_CONTRACTS: dict[str, InputContract] = {}  # every registered name and family -> what input it takes


def register_model(name: str | None = None, *, family: bool = False, contract: InputContract | None = None):
    """Decorator: register a builder under ``name`` (default: the function's name).

    ``contract``: what input the model takes (default :data:`CONV`, the signature of the
    He et al. builders: ``dims``, ``in_channels``, ``num_classes``).
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        table = _FAMILIES if family else _MODELS
        if key in _MODELS or key in _FAMILIES:
            raise ValueError(f"a model named {key!r} is already registered; choose another name")
        if contract is not None and not isinstance(contract, InputContract):
            raise TypeError(f"contract must be an InputContract, received {type(contract).__name__}")
        table[key] = fn
        _CONTRACTS[key] = contract or CONV
        return fn

    return deco


def _lookup(name: str) -> tuple[Callable[..., nn.Module], dict[str, Any], str] | None:
    """(builder, fixed keyword arguments, registered key) for a name, or None when unknown."""
    key = name.strip().lower()
    if key in _MODELS:
        return _MODELS[key], {}, key
    if key in _FAMILIES:
        return _FAMILIES[key], {}, key
    m = _MLP_RE.match(key)
    if m:
        return _FAMILIES[m.group(1)], {"depth": int(m.group(2)), "width": int(m.group(3))}, m.group(1)
    # A family name with a depth that is not registered by name: "resnet74".
    fam = re.match(r"^([a-z][a-z-]*?)-?(\d+)$", key)  # "resnet74", "preln-8", "hc-dynamic-8", "nf-resnet74"
    if fam and fam.group(1) in _FAMILIES:
        return _FAMILIES[fam.group(1)], {"depth": int(fam.group(2))}, fam.group(1)
    return None


def _wrong_family(key: str) -> str | None:
    """A design name joined to a family it is not built for ("dyt-resnet20", "hc-plain56"): one line, or None."""
    from .designs import DESIGNS

    head, _, rest = key.partition("-")
    for name in sorted(DESIGNS, key=len, reverse=True):  # "hc-dynamic" before "hc"
        if key.startswith(name + "-"):
            head, rest = name, key[len(name) + 1:]
            break
    if head not in DESIGNS or not rest or _lookup(rest) is None:  # only "<design>-<a model that exists>"
        return None
    d = DESIGNS[head]
    if d.family == "transformer":
        return (f"design {head!r} exists for Transformers only ({head}-DEPTH, e.g. {head}-8), "
                f"not for {rest!r}; the CNN designs are fixup, skipinit, nf ({{design}}-resnetDEPTH)")
    if d.baseline:
        return None
    return (f"design {head!r} is built for the He et al. residual net only ({head}-resnetDEPTH, e.g. "
            f"{head}-resnet20, dims 1 and 2), not for {rest!r}")


def _unknown(name: str) -> ValueError:
    key = name.strip().lower()
    wrong = _wrong_family(key)
    if wrong:
        return ValueError(wrong)
    names = list_models() + list(_FAMILIES)
    close = difflib.get_close_matches(key, names, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `resgrad models` for the list"
    return ValueError(f"unknown model {name!r}; {hint}")


def contract_of(name: str) -> InputContract:
    """The input contract registered with ``name``'s builder (``resnet74``: the resnet family's)."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, received {type(name).__name__}")
    found = _lookup(name)
    if found is None:
        raise _unknown(name)
    return _CONTRACTS[found[2]]


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; keyword arguments go to its builder."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, received {type(name).__name__}")
    found = _lookup(name)
    if found is None:
        raise _unknown(name)
    fn, fixed, _ = found
    return fn(**fixed, **kwargs)


def build_for(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Build ``name`` for examples of ``input_shape`` (no batch dim) and ``num_classes``.

    The builder's registered :class:`InputContract` says how: ``(C, L)`` gives a 1-D conv
    net and ``(C, H, W)`` a 2-D one; MLPs take the flattened size, Transformers the
    flattened example as patches. ``kwargs`` win over the contract's (``patch=1``).
    """
    shape = tuple(int(s) for s in input_shape)
    fitted = contract_of(name).kwargs(name, shape, num_classes)
    return build(name, **{**fitted, **kwargs})


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob ``pattern`` (families not included)."""
    def natural(n: str) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]

    return sorted((n for n in _MODELS if fnmatch.fnmatch(n, pattern)), key=natural)


def describe(name: str) -> str:
    """The first line of a registered builder's docstring."""
    fn = _MODELS.get(name) or _FAMILIES.get(name)
    return (fn.__doc__ or "").strip().splitlines()[0] if fn else ""


def family_of(name: str) -> str:
    """The family a registered name belongs to ('resnet', 'plain', 'preresnet', 'hc-dynamic', 'nf-resnet', ...)."""
    m = re.match(r"^([a-z][a-z-]*?)-?\d", name.lower())
    if m and m.group(1) in _FAMILIES and "-" in m.group(1):  # a family whose name has a hyphen
        return m.group(1)
    return re.sub(r"[-\d].*$", "", name.lower())


# ---- families ---------------------------------------------------------------------


def _he(depth: int, *, residual: bool, unit: str, block: str = "basic", **kw) -> nn.Module:
    kw.setdefault("shortcut", "B" if block == "bottleneck" else "A")
    return he_net(depth, residual=residual, unit=unit, block=block, **kw)


@register_model(family=True)
def resnet(depth: int = 20, **kw) -> nn.Module:
    """He et al. 2015 CIFAR ResNet, post-activation, option A by default."""
    return _he(depth, residual=True, unit="post", **kw)


@register_model(family=True)
def plain(depth: int = 20, **kw) -> nn.Module:
    """The plain twin of :func:`resnet`: same layers and parameters, no skip."""
    return _he(depth, residual=False, unit="post", **kw)


@register_model(family=True)
def preresnet(depth: int = 110, **kw) -> nn.Module:
    """He et al. 2016 pre-activation ResNet (``block='bottleneck'`` for 9n+2 depths)."""
    return _he(depth, residual=True, unit="pre", **kw)


@register_model(family=True)
def preplain(depth: int = 110, **kw) -> nn.Module:
    """The plain twin of :func:`preresnet`."""
    return _he(depth, residual=False, unit="pre", **kw)


@register_model(family=True, contract=VECTOR)
def resmlp(depth: int = 16, width: int = 64, **kw) -> nn.Module:
    """Residual pre-activation MLP (``resmlp-DEPTHxWIDTH`` by name)."""
    return MLP(depth, width, residual=True, **kw)


@register_model(family=True, contract=VECTOR)
def plainmlp(depth: int = 16, width: int = 64, **kw) -> nn.Module:
    """The plain twin of :func:`resmlp`."""
    return MLP(depth, width, residual=False, **kw)


# ---- named models (He et al. 2015 Table 6; He et al. 2016 Table 2) ----------------


def _named(name: str, fam: Callable[..., nn.Module], depth: int, **fixed) -> None:
    def builder(**kw) -> nn.Module:
        return fam(depth=depth, **fixed, **kw)

    builder.__name__ = name
    builder.__doc__ = f"{fam.__doc__.splitlines()[0].rstrip('.')}, depth {depth}."
    register_model(name, contract=_CONTRACTS[fam.__name__])(builder)  # a named depth takes what its family takes


for _d in (20, 32, 44, 56, 110, 1202):
    _named(f"resnet{_d}", resnet, _d)
    _named(f"plain{_d}", plain, _d)
_named("preresnet110", preresnet, 110)
_named("preplain110", preplain, 110)
for _d in (164, 1001):
    _named(f"preresnet{_d}", preresnet, _d, block="bottleneck")
    _named(f"preplain{_d}", preplain, _d, block="bottleneck")
for _d in (4, 16, 64):
    _named(f"resmlp-{_d}x64", resmlp, _d, width=64)
    _named(f"plainmlp-{_d}x64", plainmlp, _d, width=64)


# ---- Transformers (nets/transformer.py): depth = number of layers, 2 units each ------

def _transformer_family(kind: str, doc: str) -> None:
    def fam(depth: int = 4, **kw) -> nn.Module:
        from .transformer import Transformer

        return Transformer(depth, kind=kind, **kw)

    fam.__name__, fam.__doc__ = kind, doc
    register_model(family=True, contract=SEQUENCE)(fam)
    for d in (2, 4, 8):
        _named(f"{kind}-{d}", fam, d)


_transformer_family("preln", "Pre-LN Transformer (Xiong et al. 2020): x + F(LN(x)), final LN.")
_transformer_family("postln", "Post-LN Transformer (Vaswani et al. 2017): LN(x + F(x)).")
_transformer_family("noskip", "The no-skip twin of the pre-LN Transformer: F(LN(x)).")
# The designs of issue 21 (nets/transformer.py, nets/designs/): same width, depth and heads.
_transformer_family("deepnorm", "DeepNorm Transformer (Wang et al. 2022): LN(alpha x + F(x)), beta-scaled init.")
_transformer_family("periln", "Peri-LN Transformer (Kim et al. 2025): x + LN(F(LN(x))).")
_transformer_family("lns", "LayerNorm Scaling (Sun et al. 2025): pre-LN with LN(x)/sqrt(layer).")
_transformer_family("mixln", "Mix-LN Transformer (Li et al. 2024): post-LN first quarter, pre-LN after.")
_transformer_family("rezero", "ReZero Transformer (Bachlechner et al. 2020): x + a F(x), a = 0, no LN.")
_transformer_family("dyt", "DyT Transformer (Zhu et al. 2025): pre-LN with tanh(alpha x) for every LN.")
_transformer_family("hc", "Static hyper-connections, 4 streams (Zhu et al. 2024), pre-LN units.")
_transformer_family("hc-dynamic", "Dynamic hyper-connections, 4 streams (Zhu et al. 2024), pre-LN units.")
_transformer_family("mhc", "mHC, 4 streams, doubly stochastic mixing (DeepSeek-AI 2025), pre-LN units.")


# ---- normalisation-free He et al. nets (nets/designs/cnn.py): "<design>-resnet<depth>", both dims ----

def _free_family(design: str, doc: str) -> None:
    def fam(depth: int = 20, **kw) -> nn.Module:
        from .designs.cnn import free_he_net

        return free_he_net(depth, design=design, **kw)

    fam.__name__, fam.__doc__ = f"{design}-resnet", doc
    register_model(f"{design}-resnet", family=True)(fam)
    for d in (20, 32, 44, 56, 110):
        _named(f"{design}-resnet{d}", fam, d)


_free_family("fixup", "Fixup ResNet (Zhang et al. 2019): no BN, zero last conv, scalar biases.")
_free_family("skipinit", "SkipInit ResNet (De and Smith 2020): no BN, branch times a scalar from 0.")
_free_family("nf", "NF-ResNet (Brock et al. 2021): scaled WS convs, h + alpha f(h / beta).")
