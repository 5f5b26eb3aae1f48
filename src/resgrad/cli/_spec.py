"""What a command's SPEC argument may name, resolved to a model (shared by diagnose, paths, ...).

A SPEC is one of:

- a registry name: ``resnet56``, ``plain20``, ``resmlp-16x64`` (``resgrad models`` lists them);
- ``torchvision:NAME``: any torchvision classification model, built with ``weights=None``
  (needs torchvision; nothing is downloaded);
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

__all__ = ["ResolvedModel", "resolve_spec", "parse_shape", "SPEC_HELP"]

SPEC_HELP = ("A registry name (resnet56), torchvision:NAME, package.module:factory (imports your code), "
             "or a run folder.")


@dataclass
class ResolvedModel:
    """A model named by a SPEC, with what is known about its inputs."""

    model: nn.Module
    name: str  # the SPEC as given
    kind: str  # "registry", "torchvision", "factory" or "run"
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
) -> ResolvedModel:
    """Build (or load) the model a SPEC names; see the module docstring for the forms.

    ``input_shape``/``num_classes`` are needed to build registry models (default: MNIST-1D's
    ``(1, 40)`` and 10) and set a torchvision model's class count (default 1000).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"SPEC must be a model name, torchvision:NAME, module:factory or a run folder, received {spec!r}")
    spec = spec.strip()
    path = Path(spec).expanduser()
    if path.is_dir():
        return _run_folder(spec, path)
    if spec.lower().startswith("torchvision:"):
        return _torchvision(spec, spec.split(":", 1)[1], input_shape, num_classes)
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
