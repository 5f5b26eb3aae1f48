"""``nonfinite_origin`` row: where the first step with a NaN/Inf gradient went bad.

The first module in backward order whose output gradient is non-finite is the one whose
output the bad gradient first reached; everything after it only inherits it. The row is
added once (the first such step) and a one-line RuntimeWarning names it.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._base import ORIGIN_KIND, Quantity, StepData, make_row

__all__ = ["NonfiniteOrigin"]


class NonfiniteOrigin(Quantity):
    kind = ORIGIN_KIND

    def rows(self, mon: Any, d: StepData, found: dict[str, Any]) -> list[dict[str, Any]]:
        if mon.nonfinite_origin is not None:
            return []
        where = self.locate(d.step, found.get("activation", []), found.get("param", []))
        if where is None:
            return []
        mon.nonfinite_origin = where
        self.warn(where)
        return [make_row(d.step, where["name"], ORIGIN_KIND, where["block"], None, where["numel"],
                         where["nonfinite"])]

    @staticmethod
    def locate(step: int, acts: list[tuple[dict[str, Any], int | None]],
               params: list[dict[str, Any]]) -> dict[str, Any] | None:
        """This step's first non-finite gradient, if any. ``produced_by`` names the module
        whose gradient arrived just before it, still finite: in a chain, the module whose
        backward turned a finite gradient into NaN/Inf."""
        ranked = sorted(((o, r) for r, o in acts if o is not None), key=lambda t: t[0])
        for k, (_, r) in enumerate(ranked):
            if r["nonfinite"]:
                prev = ranked[k - 1][1]["name"] if k else None
                return {"step": step, "name": r["name"], "kind": r["kind"], "block": r["block"],
                        "numel": r["numel"], "nonfinite": r["nonfinite"], "produced_by": prev}
        # No activation monitored (or all finite): the parameter nearest the output,
        # i.e. the last registered, is the first its backward reaches (an approximation).
        bad = [r for r in params if r["nonfinite"]]
        if not bad:
            return None
        r = bad[-1]
        return {"step": step, "name": r["name"], "kind": "param", "block": r["block"],
                "numel": r["numel"], "nonfinite": r["nonfinite"], "produced_by": None}

    @staticmethod
    def warn(where: dict[str, Any]) -> None:
        if where["kind"] == "param":
            came = ""
        elif where["produced_by"]:
            came = f", produced by the backward of {where['produced_by']!r}"
        else:
            came = ", already in the gradient arriving from the loss"
        what = "parameter" if where["kind"] == "param" else (
            "input of block" if where["kind"] == "input" else "output of")
        warnings.warn(
            f"resgrad: step {where['step']}: first non-finite gradient at the {what} {where['name']!r} "
            f"({where['nonfinite']} NaN/Inf of {where['numel']}){came}",
            RuntimeWarning, stacklevel=5,
        )
