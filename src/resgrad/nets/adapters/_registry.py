"""The adapter registry and ``adapt``: which module class is viewed by which function.

An adapter is ``fn(module) -> view``: a module that computes what ``module`` computes,
built from :class:`resgrad.Residual` units over the *same* layer objects (no copies).
Built-in adapters are registered by the dotted name of their class, so looking one up
never imports transformers or timm (optional extras): a model that is not built from
their classes cannot contain them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..blocks import Block, blocks
from ._names import keep_original_names

__all__ = ["adapt", "register_adapter", "registered", "SUPPORTED", "shallow", "is_view", "mark_view"]

Adapter = Callable[[nn.Module], nn.Module]

SUPPORTED = (
    "torchvision BasicBlock and Bottleneck (ResNet, ResNeXt, Wide ResNet), "
    "nn.TransformerEncoderLayer (norm_first True or False) and nn.TransformerEncoder; "
    "Hugging Face transformers GPT2Block, BertLayer, LlamaDecoderLayer, MistralDecoderLayer, "
    "Qwen2DecoderLayer and ViTLayer; timm BasicBlock and Bottleneck (ResNet, ResNeXt), "
    "ConvNeXtBlock and vision_transformer Block"
)

# dotted class name -> adapter; user registrations and built-ins alike.
_ADAPTERS: dict[str, Adapter] = {}
_BUILTIN: set[str] = set()


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _builtin(dotted: str, fn: Adapter) -> None:
    """Register a built-in adapter by class name (the class's package need not be installed)."""
    _ADAPTERS[dotted] = fn
    _BUILTIN.add(dotted)


def register_adapter(module_class: type[nn.Module], fn: Adapter, *, replace: bool = False) -> None:
    """Let :func:`adapt` view every instance of ``module_class`` (and its subclasses) as ``fn(module)``.

    ``fn`` must return a module holding at least one :class:`resgrad.Residual` (or Plain) unit
    built from the module's own layers (share them, do not copy), computing the same output
    for the same call. A class already registered by the user is an error unless
    ``replace=True``; a built-in adapter is replaced silently (yours is more specific).
    """
    if not isinstance(module_class, type) or not issubclass(module_class, nn.Module):
        raise TypeError(
            f"register_adapter takes an nn.Module subclass (the class, not an instance), received {module_class!r}"
        )
    if not callable(fn):
        raise TypeError(f"the adapter must be a callable fn(module) -> view, received {type(fn).__name__}")
    key = _name(module_class)
    if key in _ADAPTERS and key not in _BUILTIN and not replace:
        raise ValueError(f"an adapter for {key} is already registered; pass replace=True to replace it")
    _ADAPTERS[key] = fn
    _BUILTIN.discard(key)


def registered() -> list[str]:
    """Dotted names of every class :func:`adapt` knows, sorted."""
    return sorted(_ADAPTERS)


def _lookup(m: nn.Module) -> Adapter | None:
    for cls in type(m).__mro__:  # the most specific registered class wins
        fn = _ADAPTERS.get(_name(cls))
        if fn is not None:
            return fn
    return None


def mark_view(view: nn.Module) -> nn.Module:
    """Mark a module as an adapter's view, so adapting it again leaves it as it is."""
    view._resgrad_view = True
    return view


def is_view(m: nn.Module) -> bool:
    return isinstance(m, Block) or bool(m.__dict__.get("_resgrad_view", False))


def shallow(m: nn.Module, drop: tuple[str, ...] = ()) -> nn.Module:
    """A new module object with the same attributes; its child/parameter dicts are copies,
    so replacing a child in the view leaves the original alone. ``drop``: attributes left out."""
    new = m.__class__.__new__(m.__class__)
    new.__dict__.update(
        {k: v.copy() if isinstance(v, (dict, set)) else v for k, v in m.__dict__.items() if k not in drop}
    )
    return new


# Run on the whole model before it is viewed (a family may need to settle the original's
# state first, e.g. transformers' lazily installed output-capturing hooks).
_PREPARE: list[Callable[[nn.Module], None]] = []


def _adapt(m: nn.Module, memo: dict[int, nn.Module]) -> tuple[nn.Module, int]:
    """(view of ``m``, number of units adapted inside it)."""
    if id(m) in memo:  # a module registered twice stays one module in the view
        return memo[id(m)], 0
    n = 0
    fn = None if is_view(m) else _lookup(m)
    if fn is not None:
        view = fn(m)
        n = len(blocks(view))
        if not isinstance(view, nn.Module) or n == 0:
            raise ValueError(
                f"the adapter for {type(m).__name__} returned {type(view).__name__} with no resgrad.Residual "
                "unit; an adapter must return a module built from Residual(branch, shortcut, post) units"
            )
        mark_view(view)
        keep_original_names(view, m)
    else:
        children = {}
        if not is_view(m):
            for name, child in m.named_children():
                v, k = _adapt(child, memo)
                if k:
                    children[name], n = v, n + k
        if n:
            view = shallow(m)
            for name, v in children.items():
                view._modules[name] = v
        else:
            view = m
    memo[id(m)] = view
    return view, n


def adapt(model: nn.Module) -> nn.Module:
    """A view of ``model`` whose residual units are resgrad Residual blocks (shared weights).

    A model already built from resgrad blocks (or already adapted) is returned as is; one
    with no residual unit that an adapter knows raises NotImplementedError naming what is
    supported and how to register an adapter.
    """
    if isinstance(model, type) or not isinstance(model, nn.Module):
        raise TypeError(
            f"adapt takes an nn.Module instance, received {model!r}; instantiate the model first"
        )
    for prepare in _PREPARE:
        prepare(model)
    view, n = _adapt(model, {})
    if n == 0:
        if blocks(model):
            return model
        raise NotImplementedError(
            f"resgrad.adapt found no residual unit it supports in {type(model).__name__}; it supports "
            f"{SUPPORTED}; for another block, register an adapter: resgrad.register_adapter(MyBlock, fn) "
            "with fn(block) returning resgrad.Residual(branch, shortcut, post) units over its layers"
        )
    return view
