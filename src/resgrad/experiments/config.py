"""The base of every experiment config: a typed record (``resgrad.schema``) with one validation style.

A config is a dataclass of :class:`Config`: each field declares its type, its default (once,
here, never again in the CLI: :func:`default` reads it) and, in its comment, its unit.
Loading is strict: :meth:`Config.from_json` refuses a missing, unknown or mistyped field, or a
config written by a newer resgrad, in one line naming the file and the dotted field
(``flow config.json: field 'signal.depths[1]' is "x", expected an integer; ...``).

Validation lives in ``__post_init__`` and uses the helpers below, so every config words its
errors alike: ``<field> must be <rule>, received <value>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .._checks import is_int
from ..io import jsonable
from ..schema import Record, ResultError, read_file

__all__ = ["Config", "ConfigError", "default", "need", "is_int", "check_int", "check_subset", "check_one_of"]

C = TypeVar("C", bound="Config")

_RESULT_FIX = "re-run the experiment to rewrite it, or restore the file as it was written"
_CONFIG_FIX = "fix that field (or remove it to take its default)"


class ConfigError(ValueError):
    """A config that does not load: one line naming the file, the dotted field and the fix."""


@dataclasses.dataclass
class Config(Record):
    """An experiment's config: a Record whose JSON form is ``to_dict()`` (what results record).

    ``VERSION`` is the config format's version; the driver records it in ``config.json``
    (``config_version``), and :meth:`from_json` refuses a newer one.
    """

    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON of every field, nested configs included (tuples as lists)."""
        return jsonable(dataclasses.asdict(self))

    def to_json(self) -> dict[str, Any]:
        """The same as :meth:`to_dict` (a nested TrainConfig is a plain dataclass, which asdict reaches)."""
        return self.to_dict()

    @classmethod
    def from_json(cls: type[C], d: Any, *, source: str = "config", version: int | None = None) -> C:
        """Strictly load ``d`` (parsed JSON); ``version``: the format version it was written in."""
        if version is not None and (not is_int(version) or version > cls.VERSION):
            raise ConfigError(f"{source}: config version {version!r} of {cls.__name__} is newer than this resgrad "
                              f"reads (version {cls.VERSION}); upgrade resgrad (pip install -U resgrad)")
        try:
            return super().from_json(d, source=source)
        except ResultError as e:
            msg = str(e)
            if msg.endswith(_RESULT_FIX):
                msg = msg[: -len(_RESULT_FIX)] + _CONFIG_FIX
            raise ConfigError(msg) from None
        except (ValueError, TypeError) as e:  # a rule of __post_init__: the file, then the rule
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """A config from a JSON file: a bare config, or a run folder's ``config.json`` record."""
        d = read_file(path)
        version = None
        if isinstance(d, dict) and "kind" in d and isinstance(d.get("config"), dict):
            version = d.get("config_version", 1)
            d = d["config"]
        return cls.from_json(d, source=str(path), version=version)


def default(cls: type, name: str) -> Any:
    """The declared default of field ``name`` of dataclass ``cls`` (the CLI's one source of defaults)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ValueError(f"{cls.__name__}.{name} has no default")
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


# ---- the one validation style ------------------------------------------------------------------


def need(ok: bool, name: str, rule: str, value: Any) -> None:
    """``ValueError("<name> must be <rule>, received <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, received {value!r}")


def check_int(name: str, v: Any, lo: int = 1) -> None:
    need(is_int(v) and v >= lo, name, f"an integer >= {lo}", v)


def check_number(name: str, v: Any, *, lo: float | None = None, hi: float | None = None, open_lo: bool = False,
                 open_hi: bool = False, rule: str | None = None) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if open_lo else v >= lo
    if ok and hi is not None:
        ok = v < hi if open_hi else v <= hi
    need(ok, name, rule or "a finite number", v)


def check_subset(name: str, got: Iterable[Any], allowed: Iterable[Any]) -> None:
    got, allowed = tuple(got), tuple(allowed)
    if not got or any(v not in allowed for v in got):
        raise ValueError(f"{name} must be a non-empty subset of {', '.join(map(str, allowed))}; "
                         f"received {list(got)}")


def check_one_of(name: str, v: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    need(v in allowed, name, f"one of {', '.join(map(repr, allowed))}", v)
