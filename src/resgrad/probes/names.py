"""Metric names for GradientMonitor rows, shared by every logger and framework callback.

``resgrad/grad_norm/<param>``, ``resgrad/act_grad_norm/<module>``, ``resgrad/block_grad/<i>``
(the gradient at block i's input), ``resgrad/nonfinite/<name>``; also
``resgrad/weight_norm/<param>``, ``resgrad/update_ratio/<param>`` and
``resgrad/nonfinite_origin/<module>`` when those rows exist; with the skip/branch split
(``split=True``), per unit: ``resgrad/skip_grad/<unit>``, ``resgrad/branch_grad/<unit>``,
``resgrad/branch_share/<unit>`` (‖branch‖/(‖skip‖+‖branch‖)), ``resgrad/forward_ratio/<unit>``
(‖F(x)‖/‖x‖) and ``resgrad/stream_norm/<unit>`` (‖x‖); with ``act_norms=True``
``resgrad/act_norm/<unit>`` (‖y‖ of the unit's output).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .quantities._base import ORIGIN_KIND

__all__ = ["metric_name", "metric_dict", "PREFIX"]

PREFIX = "resgrad"
# Row kind -> metric family (the names the issue and the docs promise).
_FAMILY = {"param": "grad_norm", "activation": "act_grad_norm", "input": "block_grad",
           "weight": "weight_norm", "update": "update_ratio", "skip": "skip_grad", "branch": "branch_grad",
           "forward": "forward_ratio", "stream": "stream_norm", "act_norm": "act_norm"}
# Kinds whose logged value is the row's ``ratio`` rather than its ``norm``.
_RATIO = ("update", "forward")


def metric_name(row: dict[str, Any], prefix: str = PREFIX) -> str | None:
    """``resgrad/grad_norm/<param>``, ``resgrad/act_grad_norm/<module>``, ``resgrad/block_grad/<i>``."""
    kind = row["kind"]
    if kind == ORIGIN_KIND:
        return f"{prefix}/nonfinite_origin/{row['name']}"
    fam = _FAMILY.get(kind)
    if fam is None:
        return None
    if kind == "input":
        if row["block"] is None or "#" in row["name"]:
            return None
        return f"{prefix}/{fam}/{row['block']}"
    return f"{prefix}/{fam}/{row['name']}"


def metric_dict(rows: Iterable[dict[str, Any]], prefix: str = PREFIX) -> dict[str, float]:
    """Flat ``{metric name: value}`` of one step's rows, for ``log_dict`` / ``Trainer.log``.

    Norms (``update`` rows: the ratio ‖Δw‖/‖w‖); ``<prefix>/nonfinite/<name>`` for every
    row with NaN/Inf entries and ``<prefix>/nonfinite/total`` always; a row without a
    value (an unused parameter) is left out rather than logged as 0.
    """
    out: dict[str, float] = {}
    total = 0
    for r in rows:
        name = metric_name(r, prefix)
        if r["kind"] == ORIGIN_KIND:
            if name is not None:
                out[name] = float(r["nonfinite"] or 0)
            continue
        value = r["ratio"] if r["kind"] in _RATIO else r["norm"]
        if name is not None and value is not None:
            out[name] = float(value)
        if r["kind"] == "branch" and r["ratio"] is not None and "#" not in r["name"]:
            out[f"{prefix}/branch_share/{r['name']}"] = float(r["ratio"])
        bad = r["nonfinite"] or 0
        if bad and r["kind"] in ("param", "activation", "input"):
            total += bad
            key = f"{prefix}/nonfinite/{r['name']}" if r["kind"] != "input" else f"{prefix}/nonfinite/input:{r['name']}"
            out[key] = float(bad)
    out[f"{prefix}/nonfinite/total"] = float(total)
    return out
