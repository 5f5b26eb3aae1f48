"""What a command's SPEC argument may name, resolved to a model (shared by diagnose, paths, ...).

A SPEC is one of:

- a registry name: ``resnet56``, ``plain20``, ``resmlp-16x64`` (``resgrad models`` lists them);
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
- a run folder written by ``resgrad train`` (it holds ``config.json``): the trained model.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["ResolvedModel", "resolve_spec", "parse_shape", "SPEC_HELP", "TOKEN_HELP", "wants_tokens", "token_inputs"]

SPEC_HELP = ("A registry name (resnet56), torchvision:NAME, timm:NAME, hf:ARCH or hf:path/to/folder, "
             "package.module:factory (imports your code), or a run folder.")

# hf:ARCH defaults: small enough for a CPU (2 layers, width 64, 256 tokens).
HF_LAYERS, HF_WIDTH, HF_VOCAB = 2, 64, 256


@dataclass
class ResolvedModel:
    """A model named by a SPEC, with what is known about its inputs."""

    model: nn.Module
    name: str  # the SPEC as given
    kind: str  # "registry", "torchvision", "timm", "hf", "factory" or "run"
    input_shape: tuple[int, ...] | None  # one example, no batch dim; None when unknown
    num_classes: int | None  # None when unknown (read it off the output)
    data: str | None = None  # the dataset a run was trained on
    info: dict[str, Any] = field(default_factory=dict)  # provenance (run config, factory path)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,224,224"`` -> ``(3, 224, 224)`` (one example, no batch dimension)."""
    if text is None:
        return None
    compact = text.replace(" ", "")
    shape = tuple(int(p) for p in re.split(r"[,x]", compact)) if re.fullmatch(r"\d+([,x]\d+)*", compact) else ()
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"--input-shape must be positive integers like 3,224,224 (no batch dim), received {text!r}")
    return shape


def resolve_spec(
    spec: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    layers: int | None = None,
    width: int | None = None,
    vocab: int | None = None,
) -> ResolvedModel:
    """Build (or load) the model a SPEC names; see the module docstring for the forms.

    ``input_shape``/``num_classes`` are needed to build registry models (default: MNIST-1D's
    ``(1, 40)`` and 10) and set a torchvision or timm model's class count (default 1000).
    ``layers``/``width`` (hidden size)/``vocab`` size an ``hf:ARCH`` model (default 2, 64, 256).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"SPEC must be a model name, torchvision:NAME, timm:NAME, hf:ARCH, module:factory or a run folder, "
                         f"received {spec!r}")
    spec = spec.strip()
    path = Path(spec).expanduser()
    if path.is_dir():
        return _run_folder(spec, path)
    if spec.lower().startswith("torchvision:"):
        return _torchvision(spec, spec.split(":", 1)[1], input_shape, num_classes)
    if spec.lower().startswith("timm:"):
        return _timm(spec, spec.split(":", 1)[1].strip(), input_shape, num_classes)
    if spec.lower().startswith("hf:"):
        return _hf(spec, spec.split(":", 1)[1].strip(), input_shape, num_classes, layers, width, vocab)
    if ":" in spec:
        return _factory(spec, input_shape, num_classes)
    if os.sep in spec or spec.startswith("."):
        raise FileNotFoundError(f"no run folder at {spec!r}; pass a folder written by `resgrad train`")
    return _registry(spec, input_shape, num_classes)


def _registry(spec: str, input_shape: tuple[int, ...] | None, num_classes: int | None) -> ResolvedModel:
    from resgrad.nets.registry import build_for

    shape = input_shape or (1, 40)
    classes = num_classes or 10
    model = build_for(spec, shape, classes)  # unknown names raise ValueError with close matches
    return ResolvedModel(model, spec, "registry", shape, classes)


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
    default = (3, 299, 299) if key.startswith("inception") else (3, 224, 224)
    shape = input_shape or default
    return ResolvedModel(model, spec, "torchvision", shape, num_classes or 1000, info={"torchvision": torchvision.__version__})


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
    return ResolvedModel(model, spec, "timm", shape, num_classes or getattr(model, "num_classes", None),
                         info={"timm": timm.__version__, "model": name})


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
        shape = input_shape or (16,)  # token ids: one sequence, no batch dim
        classes = vocab if head in ("AutoModelForMaskedLM", "AutoModelForCausalLM") else None
    info = {"transformers": T.__version__, "arch": arch, "head": head, "layers": layers, "width": width,
            "inputs": "pixel_values" if vision else "input_ids"}
    if not vision:
        info["vocab"] = vocab
    return ResolvedModel(model, spec, "hf", shape, classes, info=info)


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
    shape = (config.num_channels, config.image_size, config.image_size) if vision else input_shape or (16,)
    return ResolvedModel(model, spec, "hf", shape, getattr(config, "num_labels", None) if vision else
                         getattr(config, "vocab_size", None),
                         info={"transformers": T.__version__, "folder": str(folder), "head": head,
                               "inputs": "pixel_values" if vision else "input_ids"})


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


def _run_folder(spec: str, path: Path) -> ResolvedModel:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{spec} is a folder but not a resgrad run (no config.json); pass a folder written by `resgrad train`"
        )
    try:
        from resgrad.train import load_run
    except ImportError as e:  # pragma: no cover - train.py is part of the package
        raise ImportError(f"reading run folders needs resgrad.train ({e})") from e
    model, record = load_run(path)
    data = record.get("data") or {}
    spec_rec = record.get("model_spec") or {}
    shape = data.get("input_shape") or spec_rec.get("input_shape")
    classes = data.get("num_classes") or spec_rec.get("num_classes")
    return ResolvedModel(model, spec, "run", tuple(shape) if shape else None, classes, data.get("name"),
                         info={"run": str(path), "model_spec": spec_rec})


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# ---- token inputs (diagnose, paths, lesion) ---------------------------------------------

TOKEN_HELP = {
    "vocab": "Token models: random ids < N (hf:ARCH is built with this vocabulary; default 256).",
    "seq_len": "Token models: tokens per sequence (default 16; at most the model's positions).",
    "text": "Token models: cut sequences from this file, one byte = one id (needs a vocabulary >= 256).",
    "layers": "hf:ARCH: transformer layers (default 2).",
    "width": "hf:ARCH: hidden size (default 64; heads of 16).",
}
SEQ_LEN = 16  # tokens per sequence when only --vocab or --text is given


def wants_tokens(rm: ResolvedModel | None, vocab: int | None, seq_len: int | None, text: Path | None) -> bool:
    """Token inputs asked for (any token option) or implied (an hf:ARCH text model)."""
    return vocab is not None or seq_len is not None or text is not None or (
        rm is not None and rm.info.get("inputs") == "input_ids")


def token_inputs(rm: ResolvedModel, *, vocab: int | None, seq_len: int | None, text: Path | None, n: int,
                 seed: int) -> tuple[Any, bool]:
    """(ids ``(m, T)``, causal) for ``rm``'s model, checked; one-line ValueErrors for bad options."""
    from resgrad import tokens

    if vocab is not None and vocab < 1 or seq_len is not None and seq_len < 1 or n < 1:
        raise ValueError(f"--vocab, --seq-len and --batch-size must be >= 1, received {vocab}, {seq_len}, {n}")
    model = rm.model
    if not tokens.is_token_model(model):  # before reading --text: the model is the first thing wrong
        tokens.check_tokens(model, rm.name, tokens.random_ids(1, 1, 1), None, 1)
    T = seq_len or SEQ_LEN
    v = vocab or tokens.model_vocab(model) or HF_VOCAB
    ids = tokens.text_ids(text, T, n, vocab or tokens.model_vocab(model)) if text is not None else \
        tokens.random_ids(v, T, n, seed)
    tokens.check_tokens(model, rm.name, ids, vocab, T)
    return ids, tokens.is_causal(model)
