"""The one run skeleton of every experiment: lock, claim, reuse, compute, time, write.

An experiment is a module that declares::

    KIND = "resgrad.flow"          # config.json's kind for its run folders
    Config                         # its config class (a resgrad.experiments.config.Config)
    Result                         # its Result class (a resgrad.schema.Result)
    def compute(config, ctx) -> Result   # the measurement itself: no folder bookkeeping

and may set the policy attributes of :class:`Policy` (``LABEL``, ``NEEDS_OUT``, ``CLAIM``,
``REUSE``, ``REUSE_EXACT``, ``comparable``, ``device_of``, ``check_folder``, ``check_inputs``). It is registered
with one line (``register(KIND, "resgrad.experiments.flow")`` in ``experiments/__init__.py``) and
found from its config's type. :func:`run` does the rest, the same way for every experiment:

0. check every input the run will need, before anything starts (:func:`check_inputs`: the
   data folder and its files of every dataset named anywhere in the config, a text file; and
   the experiment's own ``check_inputs``), so a study with a wrong ``--data-dir`` fails in
   seconds, not after its first stage;
1. with an ``out`` folder: take its writer lock (:meth:`RunDir.locked`; a finished folder on
   read-only storage is still read), run ``check_folder``, and claim it
   (:meth:`RunDir.claim`: a folder holding another config is refused, naming the differing
   fields; ``CLAIM = "fresh"`` overwrites the record, ``"additions"`` accepts fields a newer
   resgrad added);
2. reuse a finished ``results.json`` of the same config (``reuse``), logging
   ``"<LABEL> already finished in <folder>"``;
3. otherwise call ``compute(config, ctx)`` with an executor it owns when it was given by name
   (closed afterwards; one passed in is left open) and write the result atomically.

``ctx`` (:class:`Context`) carries one meaning for each of its parts, in every experiment:

- ``ctx.run_dir``: the run folder (a RunDir), or None when the caller gave no ``out``;
- ``ctx.executor``: the Executor given (None: compute in this process); ``ctx.pool()``
  gives it, or an in-process ``LocalExecutor(1)`` the driver closes;
- ``ctx.log(line)``: a callable taking one line of progress text (``log=None``: silent);
- ``ctx.progress``: a :class:`Progress`; ``progress=None`` shows training bars where a
  terminal is, ``False`` shows none, ``True`` always shows them, and a callable
  ``progress(done, total, item)`` is called after each unit of work (a grid point, a run)
  instead of bars;
- ``ctx.inputs``: what the caller passed besides the config (model objects, a DataBundle),
  by name; a :class:`Lazy` input is resolved on first use, so a reused result never builds it;
- ``ctx.elapsed()``: seconds since the driver started this run (the result's timings).
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..executors import Executor, LocalExecutor, make_executor
from ..io import environment, jsonable
from ..rundir import RunDir
from ..schema import Result, ResultError

__all__ = ["run", "register", "experiment", "registered", "Context", "Progress", "Lazy", "Policy", "open_run_dir",
           "check_inputs"]

Log = Callable[[str], None]

_KINDS: dict[str, str] = {}  # KIND -> module path
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("resgrad_run_depth", default=0)  # runs inside runs


def register(kind: str, module: str) -> None:
    """Make ``module`` (an import path) the experiment of ``kind``; imported on first use."""
    _KINDS[kind] = module


def registered() -> dict[str, str]:
    """Every registered experiment: KIND -> module path."""
    return dict(_KINDS)


def experiment(what: Any) -> ModuleType:
    """The experiment module of a KIND, or of a config object (found from its type)."""
    if isinstance(what, str):
        if what not in _KINDS:
            raise ValueError(f"no experiment of kind {what!r}; known: {', '.join(sorted(_KINDS))}")
        return importlib.import_module(_KINDS[what])
    cls = type(what)
    for kind, path in _KINDS.items():
        if path == cls.__module__:
            mod = importlib.import_module(path)
            if getattr(mod, "Config", None) is cls and getattr(mod, "KIND", None) == kind:
                return mod
    names = ", ".join(sorted(p.rsplit(".", 1)[-1].capitalize() + "Config" for p in _KINDS.values()))
    raise TypeError(f"no experiment takes a {cls.__name__}; pass one of the experiment configs ({names})")


class Lazy:
    """An input made only when the computation asks for it (``Lazy(lambda: load_run(...)[0])``)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    def __call__(self) -> Any:
        return self._make()


class Progress:
    """One meaning of ``progress`` everywhere (see the module docstring)."""

    def __init__(self, value: Progress | bool | Callable[[int, int, Any], None] | None = None) -> None:
        if isinstance(value, Progress):
            self.bars: bool | None = value.bars
            self.callback: Callable[[int, int, Any], None] | None = value.callback
        elif value is None or isinstance(value, bool):
            self.bars, self.callback = value, None
        elif callable(value):
            self.bars, self.callback = False, value
        else:
            raise TypeError(f"progress must be None, True, False or a callable (done, total, item), received "
                            f"{type(value).__name__}")

    def __call__(self, done: int, total: int, item: Any = None) -> None:
        """After a unit of work: ``done`` of ``total`` (``item``: what finished)."""
        if self.callback is not None:
            self.callback(done, total, item)


@dataclass
class Context:
    """What ``compute(config, ctx)`` gets besides its config (module docstring)."""

    run_dir: RunDir | None
    executor: Executor | None = None
    log: Log = field(default=lambda _line: None)
    progress: Progress = field(default_factory=Progress)
    inputs: dict[str, Any] = field(default_factory=dict)
    reuse: bool = True
    started: float = field(default_factory=time.perf_counter)
    _owned: list[Executor] = field(default_factory=list, repr=False)

    def input(self, name: str, default: Any = None) -> Any:
        """The caller's input ``name`` (a Lazy one is made now, once)."""
        v = self.inputs.get(name, default)
        if isinstance(v, Lazy):
            v = self.inputs[name] = v()
        return v

    def pool(self) -> Executor:
        """The executor given, or one in this process (closed by the driver)."""
        if self.executor is not None:
            return self.executor
        if not self._owned:
            self._owned.append(LocalExecutor(1))
        return self._owned[0]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def sub(self, name: str) -> RunDir:
        """A sub-folder of the run folder (a study's stage); the experiment needs ``out``."""
        if self.run_dir is None:
            raise ValueError("this experiment needs a run folder; pass out=")
        return self.run_dir.sub(name)


class Policy:
    """The defaults an experiment module may override by declaring the same names."""

    LABEL = "experiment"  # "<LABEL> already finished in <folder>"
    NEEDS_OUT = True  # False: runs without a folder too (nothing written)
    CLAIM = "same"  # "same": refuse another config; "fresh": overwrite the record; "additions": accept new fields
    REUSE = True  # default of run(reuse=...): return a finished result of the same config
    REUSE_EXACT = False  # True: reuse only when the whole config is equal, not just comparable(...)

    @staticmethod
    def comparable(config: dict[str, Any]) -> dict[str, Any]:
        """The part of a config (as a dict) that must match in a used folder (default: all of it)."""
        return config

    @staticmethod
    def device_of(config: Any) -> str | None:
        """The device recorded in config.json's environment."""
        return getattr(config, "device", None)

    @staticmethod
    def check_folder(run_dir: RunDir) -> None:
        """Refuse a folder this experiment cannot use, before claiming it (default: any)."""

    @staticmethod
    def check_inputs(config: Any) -> None:
        """Refuse inputs the run will need and cannot have, beyond :func:`check_inputs` (default: none)."""


def _nodes(obj: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every dataclass inside a config (itself first), with its dotted place."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        yield where, obj
        for f in dataclasses.fields(obj):
            yield from _nodes(getattr(obj, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _nodes(v, f"{where}[{i}]")


def check_inputs(config: Any) -> None:
    """Every input a run of ``config`` will need, checked now (one line naming the field).

    A part naming a dataset (``data`` with ``data_kwargs``): CIFAR-10's folder must exist and
    hold every file of its layout (the same finder the loader uses, listing files without
    decoding them); ``data_kwargs["text"]`` or a ``text`` field: the UTF-8 text file.
    """
    from ..data.cifar10 import _find_source, _source_files
    from ..data.corpus import corpus

    for where, node in _nodes(config):
        at = f"{where}: " if where else ""
        name, kwargs = getattr(node, "data", None), getattr(node, "data_kwargs", None)
        if isinstance(name, str) and isinstance(kwargs, dict):
            key = name.strip().lower().replace("-", "").replace("_", "")
            try:
                if key == "cifar10":
                    _source_files(*_find_source(kwargs.get("data_dir")))  # lists, never decodes
                if isinstance(kwargs.get("text"), str):
                    corpus(kwargs["text"])
            except (FileNotFoundError, ValueError) as e:
                raise type(e)(f"{at}{e}") from None
        text = getattr(node, "text", None)
        if isinstance(text, str) and text:
            try:
                corpus(text)
            except (FileNotFoundError, ValueError) as e:
                raise type(e)(f"{at}{e}") from None


def _policy(mod: ModuleType, name: str) -> Any:
    return getattr(mod, name, getattr(Policy, name))


def open_run_dir(out: str | Path | RunDir | None) -> RunDir | None:
    return None if out is None else out if isinstance(out, RunDir) else RunDir(out)


def run(config: Any, out: str | Path | RunDir | None = None, *, executor: Executor | str | None = None,
        log: Log | None = print, progress: Progress | bool | Callable[[int, int, Any], None] | None = None,
        reuse: bool | None = None, **inputs: Any) -> Result:
    """Run (or reuse) the experiment of ``config`` in ``out``; return its Result.

    ``executor``: an :class:`~resgrad.executors.Executor` (left open) or its name (made here and
    closed here); None computes in this process. ``log``: a callable taking one line (None:
    silent). ``progress``: see :class:`Progress`. ``reuse``: return a finished result of the same
    config (default: the experiment's ``REUSE``). ``inputs``: the experiment's extra inputs.
    """
    mod = experiment(config)
    if _DEPTH.get() == 0:  # the outermost run checks for all its stages, once
        check_inputs(config)
        _policy(mod, "check_inputs")(config)
    run_dir = open_run_dir(out)
    if run_dir is None and _policy(mod, "NEEDS_OUT"):
        raise ValueError(f"the {_policy(mod, 'LABEL')} experiment writes a run folder; pass out=")
    owned = executor is not None and not isinstance(executor, Executor)
    ex = make_executor(executor) if owned else executor
    ctx = Context(run_dir=run_dir, executor=ex, log=log or (lambda _line: None), progress=Progress(progress),
                  inputs=dict(inputs), reuse=_policy(mod, "REUSE") if reuse is None else bool(reuse))
    token = _DEPTH.set(_DEPTH.get() + 1)
    try:
        if run_dir is None:
            return mod.compute(config, ctx)
        with run_dir.locked(read_only_ok=True):  # one writer; a finished folder can be read on read-only storage
            return _in_folder(mod, config, run_dir, ctx)
    finally:
        _DEPTH.reset(token)
        for e in ctx._owned:
            e.close()
        if owned:
            ex.close()


def _in_folder(mod: ModuleType, config: Any, run_dir: RunDir, ctx: Context) -> Result:
    cfg = jsonable(config.to_dict())
    comparable = _policy(mod, "comparable")
    claim = _policy(mod, "CLAIM")
    _policy(mod, "check_folder")(run_dir)
    record = {"kind": mod.KIND, "config": cfg, "config_version": type(config).VERSION,
              "environment": environment(_policy(mod, "device_of")(config))}
    run_dir.claim(record, compare=lambda r: comparable(dict(r.get("config") or {})), fresh=claim == "fresh",
                  additions_ok=claim == "additions")
    if ctx.reuse:
        done = None
        try:
            done = run_dir.read_results(mod.Result) if run_dir.has_results() else None
        except ResultError as e:  # damaged or changed since it was written: never reused, said so
            ctx.log(f"{str(e).split('; ')[0]}; recomputing it")
        if done is not None:
            had = jsonable(getattr(done, "config", None))
            same = had == cfg if _policy(mod, "REUSE_EXACT") else (
                isinstance(had, dict) and comparable(dict(had)) == comparable(dict(cfg)))
            if same:
                ctx.log(f"{_policy(mod, 'LABEL')} already finished in {run_dir.path}")
                return done
    run_dir.need_write()
    result = mod.compute(config, ctx)
    run_dir.write_results(result)
    return result
