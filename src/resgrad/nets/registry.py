"""Named builders: ``build("resnet56")``, ``build("resnet", depth=74)``, ``list_models("plain*")``.

Modelled on torchvision's ``@register_model`` and timm's ``create_model``: each public
name is a two-line function over one private builder; a duplicate name is an error; an
unknown name lists the close matches (STYLE.md 3).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable

from torch import nn

from .he2015 import he_net
from .mlp import MLP

__all__ = ["register_model", "build", "build_for", "list_models", "family_of", "describe", "twin_names",
           "plain_twin", "TWIN_UNITS"]

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

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# Families take an explicit depth: build("resnet", depth=74).
_FAMILIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None, *, family: bool = False):
    """Decorator: register a builder under ``name`` (default: the function's name)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        table = _FAMILIES if family else _MODELS
        if key in _MODELS or key in _FAMILIES:
            raise ValueError(f"a model named {key!r} is already registered; choose another name")
        table[key] = fn
        return fn

    return deco


_MLP_RE = re.compile(r"^(resmlp|plainmlp)-(\d+)x(\d+)$")


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; keyword arguments go to its builder."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, received {type(name).__name__}")
    key = name.strip().lower()
    if key in _MODELS:
        return _MODELS[key](**kwargs)
    if key in _FAMILIES:
        return _FAMILIES[key](**kwargs)
    m = _MLP_RE.match(key)
    if m:
        return _FAMILIES[m.group(1)](depth=int(m.group(2)), width=int(m.group(3)), **kwargs)
    # A family name with a depth that is not registered by name: "resnet74".
    fam = re.match(r"^([a-z]+?)-?(\d+)$", key)  # "resnet74", "preln-8"
    if fam and fam.group(1) in _FAMILIES:
        return _FAMILIES[fam.group(1)](depth=int(fam.group(2)), **kwargs)
    names = list_models() + list(_FAMILIES)
    close = difflib.get_close_matches(key, names, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `resgrad models` for the list"
    raise ValueError(f"unknown model {name!r}; {hint}")


def build_for(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Build ``name`` for examples of ``input_shape`` (no batch dim) and ``num_classes``.

    ``(C, L)`` gives a 1-D conv net, ``(C, H, W)`` a 2-D one; MLPs take the flattened size.
    """
    shape = tuple(int(s) for s in input_shape)
    key = name.strip().lower()
    if "mlp" in key:
        n = 1
        for s in shape:
            n *= s
        return build(name, in_features=n, num_classes=num_classes, **kwargs)
    if family_of(key) in ("preln", "postln", "noskip"):
        # A Transformer reads the flattened example as a sequence of patches (4 values when they divide).
        n = 1
        for s in shape:
            n *= s
        kwargs.setdefault("patch", 4 if n % 4 == 0 else 1)
        return build(name, length=n, num_classes=num_classes, **kwargs)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{name} is a convolutional net: it needs inputs (C, L) or (C, H, W), received {shape}; "
            "use an MLP (e.g. resmlp-16x64) for flat features"
        )
    return build(name, dims=len(shape) - 1, in_channels=shape[0], num_classes=num_classes, **kwargs)


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
    """The family a registered name belongs to ('resnet', 'plain', 'preresnet', ...)."""
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


@register_model(family=True)
def resmlp(depth: int = 16, width: int = 64, **kw) -> nn.Module:
    """Residual pre-activation MLP (``resmlp-DEPTHxWIDTH`` by name)."""
    return MLP(depth, width, residual=True, **kw)


@register_model(family=True)
def plainmlp(depth: int = 16, width: int = 64, **kw) -> nn.Module:
    """The plain twin of :func:`resmlp`."""
    return MLP(depth, width, residual=False, **kw)


# ---- named models (He et al. 2015 Table 6; He et al. 2016 Table 2) ----------------


def _named(name: str, fam: Callable[..., nn.Module], depth: int, **fixed) -> None:
    def builder(**kw) -> nn.Module:
        return fam(depth=depth, **fixed, **kw)

    builder.__name__ = name
    builder.__doc__ = f"{fam.__doc__.splitlines()[0].rstrip('.')}, depth {depth}."
    register_model(name)(builder)


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
    register_model(family=True)(fam)
    for d in (2, 4, 8):
        _named(f"{kind}-{d}", fam, d)


_transformer_family("preln", "Pre-LN Transformer (Xiong et al. 2020): x + F(LN(x)), final LN.")
_transformer_family("postln", "Post-LN Transformer (Vaswani et al. 2017): LN(x + F(x)).")
_transformer_family("noskip", "The no-skip twin of the pre-LN Transformer: F(LN(x)).")
