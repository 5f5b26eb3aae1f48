"""Which parameters, units and modules a :class:`resgrad.GradientMonitor` watches (``select=``).

A selector is one of:

- a glob over dotted names (``"layer1.*"``, ``"*.attn.*"``; :func:`fnmatch.fnmatchcase`),
- ``"re:<regex>"`` or a compiled ``re.Pattern`` (:func:`re.search` over the names),
- an ``nn.Module`` subclass: parameters owned by a module of that type, units containing one,
  leaf modules of that type,
- a depth position over the model's residual units: ``"first"``, ``"last"``, ``"middle"``
  (unit ``n // 2``), ``"every:k"`` (units 0, k, 2k, ...), or an ``int`` index (negative
  from the end) (the layers people ask for: first, second, middle, last; Megatron-DeepSpeed
  issue 149).

A list of selectors keeps what any of them selects. A parameter is kept when its name or
its owning module matches, or when its unit is selected by depth; a unit when its name,
a module inside it, or its depth matches. Every selector must match something, checked at
construction, so a typo fails before step 0 rather than logging nothing for 10,000 steps.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .._checks import is_int

__all__ = ["Selection", "resolve", "check_select"]

_DEPTH = ("first", "last", "middle")


@dataclass
class Selection:
    params: list[bool]  # per monitored parameter, in order
    units: set[int]  # unit indices kept
    leaves: set[int]  # id() of leaf modules kept (activation rows)


def _items(select: Any) -> list[Any]:
    if isinstance(select, (str, int, type, re.Pattern)):
        return [select]
    return list(select)


def _parse(item: Any) -> tuple[str, Any]:
    """(form, value) of one selector, or a one-line error naming it."""
    if isinstance(item, bool):
        raise TypeError(f"select: {item!r} is not a selector (a glob, 're:<regex>', a module type, "
                        "'first'/'last'/'middle'/'every:k' or a unit index)")
    if is_int(item):
        return "index", int(item)
    if isinstance(item, re.Pattern):
        return "regex", item
    if isinstance(item, type):
        if not issubclass(item, nn.Module):
            raise TypeError(f"select: the type {item.__name__} is not an nn.Module subclass")
        return "type", item
    if isinstance(item, str):
        if item in _DEPTH:
            return "depth", item
        if item.startswith("every:"):
            k = item[len("every:"):]
            if not k.isdigit() or int(k) < 1:
                raise ValueError(f"select: {item!r} needs a whole number of units >= 1 after 'every:', "
                                 "e.g. 'every:4'")
            return "every", int(k)
        if item.startswith("re:"):
            try:
                return "regex", re.compile(item[3:])
            except re.error as e:
                raise ValueError(f"select: {item!r} is not a valid regular expression ({e})") from None
        if not item:
            raise ValueError("select: an empty string selects nothing; give a glob such as 'layer1.*'")
        return "glob", item
    raise TypeError(f"select: {item!r} ({type(item).__name__}) is not a selector (a glob, 're:<regex>', "
                    "a module type, 'first'/'last'/'middle'/'every:k' or a unit index)")


def check_select(select: Any) -> None:
    """Model-free checks (the callbacks call this at construction)."""
    if select is None:
        return
    if not isinstance(select, (str, int, type, re.Pattern, Sequence)) or isinstance(select, bytes):
        _parse(select)  # raises: names what was received and what a selector is
    items = _items(select)
    if not items:
        raise ValueError("select: an empty list selects nothing; leave select=None to watch everything")
    for it in items:
        _parse(it)


def _name_match(form: str, value: Any, name: str) -> bool:
    return fnmatch.fnmatchcase(name, value) if form == "glob" else value.search(name) is not None


def resolve(select: Any, model: nn.Module, params: Sequence[tuple[str, nn.Parameter]],
            unit_names: Sequence[str], unit_mods: Sequence[set[int]], param_block: Sequence[int | None]) -> Selection:
    """The parameters, units and leaf modules ``select`` keeps (every selector must match)."""
    n_units = len(unit_names)
    owner = {}
    for mname, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            owner.setdefault(id(p), (m, f"{mname}.{pname}" if mname else pname))
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    keep_p = [False] * len(params)
    keep_u: set[int] = set()
    keep_l: set[int] = set()
    for item in _items(select):
        form, value = _parse(item)
        got_p, got_u, got_l = set(), set(), set()
        if form in ("depth", "every", "index"):
            if not n_units:
                raise ValueError(f"select: {item!r} picks residual units by depth, but {type(model).__name__} has "
                                 "no resgrad block and no residual unit that resgrad.adapt knows; select by name "
                                 "or type, or register an adapter with resgrad.register_adapter(BlockClass, fn)")
            if form == "every":
                got_u = set(range(0, n_units, value))
            elif form == "index":
                if not -n_units <= value < n_units:
                    raise ValueError(f"select: unit index {value} is out of range for {n_units} units "
                                     f"(0..{n_units - 1}, or negative from the end)")
                got_u = {value % n_units}
            else:
                got_u = {{"first": 0, "last": n_units - 1, "middle": n_units // 2}[value]}
            got_p = {i for i, b in enumerate(param_block) if b in got_u}
        elif form == "type":
            got_p = {i for i, (_, p) in enumerate(params) if id(p) in owner and isinstance(owner[id(p)][0], value)}
            typed = {id(m) for m in model.modules() if isinstance(m, value)}
            got_u = {i for i, mods in enumerate(unit_mods) if mods & typed}
            got_l = {id(m) for _, m in leaves if isinstance(m, value)}
        else:
            got_p = {i for i, (n, _) in enumerate(params) if _name_match(form, value, n)}
            got_u = {i for i, n in enumerate(unit_names) if _name_match(form, value, n)}
            got_l = {id(m) for n, m in leaves if _name_match(form, value, n)}
        if not (got_p or got_u or got_l):
            what = {"glob": "glob", "regex": "regex", "type": "module type"}[form]
            example = params[0][0] if params else "<none>"
            raise ValueError(f"select: the {what} {item!r} matches no parameter, unit or module of "
                             f"{type(model).__name__} (parameter names look like {example!r}"
                             + (f", unit names like {unit_names[0]!r}" if unit_names else "") + ")")
        for i in got_p:
            keep_p[i] = True
        keep_u |= got_u
        keep_l |= got_l
    # A leaf inside a selected unit is selected with it.
    for i in keep_u:
        keep_l |= unit_mods[i]
    return Selection(keep_p, keep_u, keep_l)
