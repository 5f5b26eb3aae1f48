"""Typed results -> the few views the report draws from.

The report reads ``resgrad.results`` types only (their fields are defined once, in
``results/flow.py`` ... ``results/study.py``). A parsed dict is first validated into its
type by the envelope it carries (``schema`` / ``experiment``): a bad file is one
:class:`~resgrad.results.ResultError` line, never a guess. What remains here maps typed
records to the rows the figures use.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from resgrad.results import Result, ResultError, result_types
from resgrad.results.ensemble import Deletion, EnsembleResult, Lesion, Reorder, Window
from resgrad.results.flow import FlowGroup, FlowResult
from resgrad.schema import envelope

from .registry import Part, parts

__all__ = [
    "Sections", "as_result", "sections", "stages", "part_of", "part_of_type", "flow_rows", "headline_groups", "label",
    "pretty_model", "data_name", "ensemble_view", "FlowRow", "Reportable",
]

FlowRow = dict[str, Any]
# What the report reads: a registered part's Result type (report/sections/<name>.py registers it), or a
# study-like Result whose fields hold such parts (:func:`stages`). Which types those are is found from
# the registered parts when a result is read, so a new experiment adds no name here.
Reportable = Result


def part_of_type(cls: type) -> Part | None:
    """The registered part whose Result type ``cls`` is (or derives from); None: not one."""
    return next((p for p in parts() if issubclass(cls, p.type)), None)


def part_of(r: Any) -> Part | None:
    """The registered part whose Result type ``r`` is an instance of (None: not one)."""
    return part_of_type(type(r))


def _part_types(t: Any) -> list[type]:
    """The classes a field's type hint names: ``X`` itself, or each member of ``X | None``."""
    args = typing.get_args(t) if typing.get_origin(t) in (typing.Union, types.UnionType) else (t,)
    return [a for a in args if isinstance(a, type)]


def stages(cls: type) -> dict[str, Part]:
    """The fields of a study-like Result type that hold a registered part: field name -> part.

    Found from the fields' type hints (``flow: FlowResult``, ``transformer: TransformerResult | None``),
    in field order; empty for a type that holds none (or is itself a part's type). Where two fields
    hold the same part, the first is it."""
    if not (isinstance(cls, type) and issubclass(cls, Result)) or part_of_type(cls) is not None:
        return {}
    registered = parts()
    out: dict[str, Part] = {}
    for name, hint in cls._fields().items():
        p = next((p for t in _part_types(hint) for p in registered if issubclass(t, p.type)), None)
        if p is not None and p.key not in {q.key for q in out.values()}:
            out[name] = p
    return out


def _reportable_types() -> list[type[Result]]:
    """The study-like types (every known Result type holding parts), then the parts' own, by page order."""
    studies = [t for t in result_types().values() if stages(t)]
    return studies + [p.type for p in parts()]


def _names(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def as_result(results: Any, source: str = "results") -> Reportable:
    """``results`` as a typed Result: returned as is, or a parsed dict validated by its envelope."""
    if isinstance(results, Result):
        r = results
    elif isinstance(results, dict):
        schema, _ = envelope(results)
        types_ = result_types()
        if schema not in types_:
            raise ResultError(f"{source}: not a resgrad results object (schema {schema!r}; known: "
                              f"{', '.join(sorted(types_))}); pass what an experiment wrote")
        r = types_[schema].from_json(results, source=source)
    else:
        raise TypeError(f"the report needs a resgrad result ({', '.join(t.__name__ for t in _reportable_types())}) "
                        f"or its parsed JSON, received {type(results).__name__}")
    if part_of(r) is None and not stages(type(r)):
        raise ResultError(f"{source}: a {r.SCHEMA} result has no report; pass a "
                          f"{_names([t.EXPERIMENT for t in _reportable_types()])} result")
    return r


class Sections:
    """The registered parts a result holds, by part key: ``s.flow``, ``s.ensemble``, ... (None where
    it did not measure that part; an unregistered key is an AttributeError).

    A part's Result alone holds just itself; a study-like result holds what its fields hold
    (:func:`stages`). A study without a later stage (an older file without ``transformer``) has None
    there and renders exactly as before. (``get`` and ``held`` are methods: no part may take those keys.)
    """

    __slots__ = ("_held",)

    def __init__(self, held: Mapping[str, Result | None] | None = None) -> None:
        object.__setattr__(self, "_held", dict(held or {}))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # dunders and the slot itself (while unpickling): no part lookup
            raise AttributeError(key)
        return self.get(key)

    def get(self, key: str) -> Any:
        """The ``key`` part's result, or None where it is registered and not held."""
        if key in self._held:
            return self._held[key]
        known = [p.key for p in parts()]
        if key not in known:
            raise AttributeError(f"no report part {key!r}; registered: {', '.join(known)}")
        return None

    def held(self) -> dict[str, Result]:
        """The parts held (not None), by key."""
        return {k: v for k, v in self._held.items() if v is not None}

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Sections is read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sections) and self.held() == other.held()

    def __repr__(self) -> str:
        return f"Sections({', '.join(f'{k}={type(v).__name__}' for k, v in self.held().items())})"


def sections(r: Reportable) -> Sections:
    """The parts ``r`` holds: itself, where it is a part's Result; else its fields that hold parts."""
    own = part_of(r)
    if own is not None:
        return Sections({own.key: r})
    st = stages(type(r))
    if not st:
        raise TypeError(f"a {type(r).__name__} holds no report part; pass a "
                        f"{_names([t.EXPERIMENT for t in _reportable_types()])} result")
    return Sections({p.key: getattr(r, f) for f, p in st.items()})


def pretty_model(name: Any) -> str:
    """``resnet110`` -> ``ResNet-110``, ``plain56`` -> ``plain-56``; other names unchanged."""
    if not name:
        return "?"
    m = re.fullmatch(r"(resnet|plain|preresnet)(\d+)", str(name).strip().lower())
    if not m:
        return str(name)
    return {"resnet": "ResNet", "plain": "plain", "preresnet": "pre-act ResNet"}[m.group(1)] + "-" + m.group(2)


def data_name(s: Sections) -> str | None:
    """The dataset the result measured on (the degradation's, else the ensemble's, else the flow's)."""
    if s.degradation is not None:
        return s.degradation.data.name
    if s.ensemble is not None:
        return s.ensemble.data
    if s.flow is not None:
        return s.flow.data.name
    return s.transformer.data if s.transformer is not None else None


# -- flow ---------------------------------------------------------------------------------


def _pow10(v: float | None) -> float | None:
    return 10.0**v if v is not None and math.isfinite(v) and -300 < v < 300 else None


def flow_rows(flow: FlowResult, groups: list[FlowGroup] | None = None) -> list[FlowRow]:
    """One row per group (a config over its seeds) for the figures: profile, ratio, seeds' ratios."""
    index = {id(g): i for i, g in enumerate(flow.groups)}
    seeds_of: dict[int, list[Any]] = {}
    for c in flow.configs:
        seeds_of.setdefault(c.group, []).append(c)
    rows = []
    for g in flow.groups if groups is None else groups:
        ci = g.slope_ci or (None, None)
        rows.append({
            "family": g.family, "arch": g.arch, "norm": g.norm, "activation": g.act, "init": g.init,
            "depth": g.depth, "layers": g.layers,
            "profile": [_pow10(v) for v in g.profile_log10_rms],  # geometric mean over seeds, block 0 first
            "ratio": g.ratio_first_last if g.ratio_first_last is not None else _pow10(g.log10_ratio),
            "log10_ratio": g.log10_ratio,
            "ratio_seeds": [c.ratio_first_last for c in seeds_of.get(index.get(id(g), -1), [])],
            "slope": g.slope, "slope_ci": (ci[0], ci[1]), "decades": g.decades, "verdict": g.verdict,
        })
    return rows


def headline_groups(groups: list[FlowGroup]) -> list[FlowGroup]:
    """The He et al. setting: the He-2015 family (else the first), ReLU and He init where measured.

    The full grid goes into the verdict table; figures and findings lead with this slice.
    """
    if not groups:
        return []
    fam = "he2015" if any(g.family == "he2015" for g in groups) else groups[0].family
    sel = [g for g in groups if g.family == fam]
    for key, pref in (("act", "relu"), ("init", "he")):
        vals = {getattr(g, key) for g in sel}
        if pref in vals:
            sel = [g for g in sel if getattr(g, key) == pref]
        elif len(vals) > 1:
            first = getattr(sel[0], key)
            sel = [g for g in sel if getattr(g, key) == first]
    return sorted(sel, key=lambda g: (g.arch, g.norm, g.depth))


def label(g: FlowGroup, with_norm: bool = True) -> str:
    """``plain-110 with BN``: He et al. nets by layer count, MLPs by blocks."""
    if g.family == "mlp":
        base = f"{g.arch} MLP of {g.depth} blocks"
    else:
        base = f"{'plain' if g.arch == 'plain' else 'ResNet'}-{g.layers}"
    if with_norm:
        base += " with BN" if g.norm == "batch" else " without normalisation" if g.norm == "none" else f" ({g.norm})"
    return base


# -- ensemble -----------------------------------------------------------------------------


def _window(w: Window | None) -> dict[str, Any] | None:
    if w is None:
        return None
    return {"lo": w.lo, "hi": w.hi, "mass": w.mass, "held": w.held, "share": w.share_of_paths}


def _curve(c: Deletion | Reorder | None) -> dict[str, list] | None:
    if c is None:
        return None
    x = c.k if isinstance(c, Deletion) else c.kendall_tau
    return {"x": list(x), "mean": list(c.mean), "std": list(c.std)}


def _lesion(les: Lesion | None) -> dict[str, Any] | None:
    if les is None:
        return None
    return {"model": les.model, "baseline": les.baseline,
            "blocks": [{"block": b.block, "error": b.error, "downsample": b.downsample} for b in les.blocks]}


def ensemble_view(e: EnsembleResult) -> dict[str, Any]:
    """The path view, lesions and reordering of one trained residual net and its plain twin."""
    n = e.n if e.n is not None else e.exact.n if e.exact is not None else e.sampled.n if e.sampled else None
    counts = e.counts if e.counts is not None else ([math.comb(n, k) for k in range(n + 1)] if n is not None else [])
    ex, sa, eff = e.exact, e.sampled, e.effective
    lesion, deletion = e.lesion or {}, e.deletion or {}
    ro = e.reorder
    return {
        "model": e.model, "plain_model": e.plain_model, "n": n, "data": e.data, "counts": list(counts),
        "exact_norms": list(ex.norms) if ex else [],
        "sampled_lengths": list(sa.lengths) if sa else [],
        "sampled_mean": list(sa.mean) if sa else [],
        "sampled_std": list(sa.std) if sa else [],
        "sampled_q10": list(sa.q10) if sa else [],
        "sampled_q90": list(sa.q90) if sa else [],
        "sampled_total": list(sa.total) if sa else [],
        "samples": sa.samples if sa else None,
        "plain_norm": e.exact_plain.norm if e.exact_plain else None,
        "explanation": eff.explanation if eff else None,
        "models": e.models, "notes": [x for x in e.notes if x],
        "eff_exact": _window(ex.effective if ex else eff.exact if eff else None),
        "eff_sampled": _window(sa.effective if sa and sa.effective else eff.sampled if eff else None),
        "lesion_res": _lesion(lesion.get("residual")), "lesion_plain": _lesion(lesion.get("plain")),
        "del_res": _curve(deletion.get("residual")), "del_plain": _curve(deletion.get("plain")),
        "reorder": _curve(ro), "reorder_plain": _curve(ro.plain if ro else None),
        "reorder_trials": [(t.tau, t.error) for per_k in (ro.trials if ro else []) for t in per_k],
    }
