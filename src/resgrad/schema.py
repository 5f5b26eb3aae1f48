"""The typed record engine: dataclasses that validate themselves when read back from JSON.

Results and experiment configs are built on it (``resgrad.results``, ``resgrad.experiments``).

Every experiment returns a :class:`Result` (a dataclass with a schema name and version);
its parts are :class:`Record` dataclasses. ``to_json()`` gives plain JSON (non-finite
floats as null, tuples as lists) inside an envelope ``{"schema", "schema_version",
"experiment", ...}``; ``from_json()`` checks every field against the type hints: a
missing or unknown field, a wrong type or a newer schema version is one
:class:`ResultError` line naming the file, the field and what to do. An older version
loads through the class's explicit ``MIGRATIONS`` or is refused with that line — never
guessed at.

Field types understood: ``int``, ``float``, ``str``, ``bool``, ``None``, ``Any``,
``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Literal[...]`` and
nested ``Record``/``Result`` classes. ``Num`` (``float | None``) is a measured number,
None where it was not finite (JSON has no NaN). A :class:`Row` is a typed JSON object kept
as a plain dict (a metrics.jsonl line: its declared fields typed, callbacks' columns kept).

Provenance: :meth:`Result.save` records ``sha256`` (:func:`digest` of the rest of the file)
in the envelope and ``from_json`` checks it, so a results file changed after it was written
(a plausible edit, a bad sector that still parses) is refused naming the file; a file
without it (written before the digest) loads as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

from ._checks import is_int, is_number
from .io import jsonable, write_json

__all__ = ["Record", "Result", "ResultError", "Num", "Row", "envelope", "read_file", "registered", "digest"]

Num = Union[float, None]  # a measured number; None where it was NaN/Inf (JSON has no NaN)  # noqa: UP007

R = TypeVar("R", bound="Record")

_REGISTRY: dict[str, type[Result]] = {}


class ResultError(ValueError):
    """A results file that does not match its schema (one line: file, field, what to do)."""


def _fail(source: str, where: str, problem: str, fix: str) -> ResultError:
    field = f" field {where!r}" if where else ""
    return ResultError(f"{source}:{field} {problem}; {fix}")


_FIX = "re-run the experiment to rewrite it, or restore the file as it was written"

DIGEST = "sha256"  # the envelope field holding digest() of the rest of a results file


def digest(obj: Any) -> str:
    """sha256 of ``obj``'s canonical JSON (sorted keys, no spaces): equal for equal parsed values,
    so re-indenting a file keeps it, and any changed value (even a plausible 0.0) changes it."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Row:
    """A typed JSON object kept as a plain ``dict`` (a metrics.jsonl line).

    Subclasses annotate their fields (``epoch: int``); those in ``REQUIRED`` must be present,
    the others are checked when present, and fields not declared (the columns a callback adds)
    are kept as they are. ``check`` returns the dict with the declared fields converted.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check(cls, v: Any, where: str = "", source: str = "row") -> dict[str, Any]:
        if not isinstance(v, dict):
            raise _fail(source, where, f"is {_show(v)}, expected an object ({cls.__name__})", _FIX)
        key = f"{cls.__module__}.{cls.__qualname__}"
        if key not in Record._hints:
            Record._hints[key] = {k: t for k, t in typing.get_type_hints(cls).items()
                                  if typing.get_origin(t) is not ClassVar}
        hints = Record._hints[key]
        for name in cls.REQUIRED:
            if name not in v:
                raise _fail(source, f"{where}.{name}" if where else name, f"is missing ({cls.__name__} needs it)", _FIX)
        out = dict(v)
        for name, t in hints.items():
            if name in v:
                out[name] = _convert(v[name], t, f"{where}.{name}" if where else name, source)
        return out


def _tname(t: Any) -> str:
    if t is type(None):
        return "null"
    if isinstance(t, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
                "dict": "an object", "list": "a list"}.get(t.__name__, t.__name__)
    return str(t).replace("typing.", "")


def _convert(v: Any, t: Any, where: str, source: str) -> Any:
    """``v`` (parsed JSON) as type ``t``, or a ResultError naming ``where``."""
    if t is Any:
        return v
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(v, a, where, source)
            except ResultError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise _fail(source, where, f"is {_show(v)}, expected {_tname(t)}", _FIX)
    if origin is Literal:
        if v in args:
            return v
        raise _fail(source, where, f"is {_show(v)}, expected one of {', '.join(map(repr, args))}", _FIX)
    if origin is list or origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise _fail(source, where, f"is {_show(v)}, expected a list", _FIX)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(v) != len(args):
                raise _fail(source, where, f"has {len(v)} items, expected {len(args)}", _FIX)
            return tuple(_convert(x, a, f"{where}[{i}]", source) for i, (x, a) in enumerate(zip(v, args, strict=True)))
        item = args[0] if args else Any
        out = [_convert(x, item, f"{where}[{i}]", source) for i, x in enumerate(v)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(v, dict):
            raise _fail(source, where, f"is {_show(v)}, expected an object", _FIX)
        item = args[1] if len(args) == 2 else Any
        return {str(k): _convert(x, item, f"{where}.{k}", source) for k, x in v.items()}
    if isinstance(t, type) and issubclass(t, Row):
        return t.check(v, where, source)
    if isinstance(t, type) and issubclass(t, Record):
        if isinstance(v, t):
            return v
        if not isinstance(v, dict):
            raise _fail(source, where, f"is {_show(v)}, expected an object ({t.__name__})", _FIX)
        return t._from_dict(v, where, source)
    if t is float:
        if is_number(v):
            return float(v)
    elif t is int:
        if is_int(v):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
    elif t is bool or t is str:
        if isinstance(v, t):
            return v
    elif t is type(None):
        if v is None:
            return None
    elif t is dict or t is list:
        if isinstance(v, t):
            return v
    else:  # pragma: no cover - a field type this module does not know is a programming error
        raise TypeError(f"results field {where!r} has an unsupported type {t!r}")
    raise _fail(source, where, f"is {_show(v)}, expected {_tname(t)}", _FIX)


def _show(v: Any) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


@dataclasses.dataclass
class Record:
    """A typed part of a result; validates itself in ``from_json``."""

    _hints: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def _fields(cls) -> dict[str, Any]:
        return _hints_of(cls)

    @classmethod
    def _from_dict(cls: type[R], d: dict[str, Any], where: str, source: str) -> R:
        return _fields_from_dict(cls, d, where, source)

    @classmethod
    def from_json(cls: type[R], d: Any, *, source: str = "results") -> R:
        """Validate parsed JSON ``d`` into this type (``source`` names the file in errors)."""
        if not isinstance(d, dict):
            raise _fail(source, "", f"holds {_show(d)}, expected an object ({cls.__name__})", _FIX)
        return cls._from_dict(d, "", source)

    def __getitem__(self, key: str) -> Any:
        # resgrad 0.1 returned dicts; keep ``result["field"]`` working for a while, loudly.
        if key not in self._fields():
            raise KeyError(key)
        warnings.warn(f"indexing a {type(self).__name__} like a dict is deprecated; use .{key}",
                      DeprecationWarning, stacklevel=2)
        return getattr(self, key)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: nested records as objects, tuples as lists, non-finite floats as null."""
        return jsonable({f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)})


def _hints_of(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint of a dataclass (cached per class)."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in Record._hints:
        hints = typing.get_type_hints(cls)
        Record._hints[key] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return Record._hints[key]


def _fields_from_dict(cls: type[R], d: dict[str, Any], where: str, source: str) -> R:
    """``cls(**d)`` for a dataclass, every field checked: unknown, missing and mistyped ones are one line."""
    fields = _hints_of(cls)
    unknown = sorted(set(d) - set(fields))
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise _fail(source, name, f"is not a field of {cls.__name__} (known: {', '.join(fields)})",
                    "rename or remove it, or re-run the experiment to rewrite the file")
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = f"{where}.{f.name}" if where else f.name
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _fail(source, name, f"is missing ({cls.__name__} needs it)", _FIX)
            continue
        kwargs[f.name] = _convert(d[f.name], fields[f.name], name, source)
    return cls(**kwargs)


def _plain(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


Migration = Callable[[dict[str, Any]], dict[str, Any]]


@dataclasses.dataclass
class Result(Record):
    """An experiment's result: a Record with a schema name and version (an envelope in JSON).

    Subclasses set ``SCHEMA`` (``"resgrad.flow"``), ``VERSION`` and ``EXPERIMENT``, and
    ``MIGRATIONS = {v: fn}`` turning a version-``v`` dict into version ``v + 1``.
    """

    SCHEMA: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    EXPERIMENT: ClassVar[str] = ""
    MIGRATIONS: ClassVar[dict[int, Migration]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.SCHEMA:
            _REGISTRY[cls.SCHEMA] = cls

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "schema_version": self.VERSION, "experiment": self.EXPERIMENT,
                **super().to_json()}

    @classmethod
    def _from_dict(cls: type[R], d: dict[str, Any], where: str, source: str) -> R:
        assert issubclass(cls, Result)
        schema, version = envelope(d)
        at = f" at {where!r}" if where else ""
        if schema != cls.SCHEMA:
            raise ResultError(f"{source}: holds a {schema or 'unknown'} result{at}, expected {cls.SCHEMA}; "
                              "pass the file that experiment wrote")
        if not is_int(version) or version < 1:
            raise _fail(source, f"{where}.schema_version" if where else "schema_version",
                        f"is {_show(version)}, expected an integer >= 1", _FIX)
        if version > cls.VERSION:
            raise ResultError(f"{source}: schema {cls.SCHEMA} version {version}{at} is newer than this resgrad "
                              f"reads (version {cls.VERSION}); upgrade resgrad (pip install -U resgrad)")
        body = {k: v for k, v in d.items() if k not in ("schema", "schema_version", "experiment", DIGEST)}
        while version < cls.VERSION:
            step = cls.MIGRATIONS.get(version)
            if step is None:
                raise ResultError(f"{source}: schema {cls.SCHEMA} version {version}{at} can no longer be read "
                                  f"(this resgrad reads version {cls.VERSION}); re-run the experiment to rewrite it")
            body = step(body)
            version += 1
        result = super()._from_dict(body, where, source)  # types first: a mistyped field is named
        if DIGEST in d:
            recorded = d[DIGEST]
            if recorded != digest({k: v for k, v in d.items() if k != DIGEST}):
                raise _fail(source, f"{where}.{DIGEST}" if where else DIGEST,
                            "does not match the file's contents: a value was changed after the experiment wrote it",
                            _FIX)
        return result

    @classmethod
    def of(cls: type[R], body: dict[str, Any], *, source: str | None = None) -> R:
        """Validate an experiment's freshly computed fields (no envelope) into this type."""
        assert issubclass(cls, Result)
        return cls.from_json({"schema": cls.SCHEMA, "schema_version": cls.VERSION, **body},
                             source=source or f"{cls.EXPERIMENT} experiment")

    def save(self, path: str | os.PathLike) -> Path:
        """Write this result atomically as indented JSON, with the digest of its contents."""
        body = jsonable(self.to_json())
        return write_json(path, {**body, DIGEST: digest(body)})


def envelope(d: dict[str, Any]) -> tuple[str | None, Any]:
    """(schema name, version) of a results dict; files of resgrad 0.1 named only ``experiment``
    (flow and ensemble with ``schema_version: 1``, degradation and study with none: version 1)."""
    if "schema" in d:
        return d.get("schema"), d.get("schema_version")
    exp = d.get("experiment")
    return (f"resgrad.{exp}" if isinstance(exp, str) else None), d.get("schema_version", 1)


def read_file(path: str | os.PathLike) -> Any:
    """Parsed JSON of ``path``; an unreadable, non-UTF-8, empty or cut file is one line naming it."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} does not exist") from None
    except IsADirectoryError:
        raise ResultError(f"{p} is a folder, not a results file") from None
    except UnicodeDecodeError as e:
        raise ResultError(f"{p} is not UTF-8 text (byte {e.start}): it is damaged; {_FIX}") from None
    if not text.strip():
        raise ResultError(f"{p} is empty (a write was cut short?); {_FIX}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultError(f"{p} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); {_FIX}") from None


def registered() -> dict[str, type[Result]]:
    """Every Result type defined so far, by schema name (``resgrad.results.result_types`` imports them all)."""
    return dict(_REGISTRY)
