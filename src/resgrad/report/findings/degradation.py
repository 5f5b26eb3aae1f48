"""Findings on training plain vs residual twins over depth (a DegradationResult).
"""

from __future__ import annotations

from resgrad import verdicts as V

from .._fmt import pct, sig
from .._read import Sections, data_name
from .._refs import PUBLISHED, cite_text
from ._base import Finding, finding, points

__all__ = ["degradation_findings"]


def degradation_findings(s: Sections) -> list[Finding]:
    deg = s.degradation
    assert deg is not None
    out: list[Finding] = []
    epochs = deg.epochs
    for arch in ("plain", "residual"):
        v = V.degradation_verdict(deg.table, arch)  # type: ignore[arg-type]
        if v is None:
            continue
        name = "plain" if arch == "plain" else "ResNet"
        series = ", ".join(f"{pct(e)} at depth {d}" for d, e in zip(v.depths, v.train_errors, strict=True))
        seeds = v.seeds
        text = (f"{'Plain' if arch == 'plain' else 'Residual'} nets, final train error "
                f"{'(mean of ' + str(seeds) + ' seeds) ' if seeds and seeds != 1 else '(1 seed) ' if seeds else ''}"
                f"{'after ' + str(epochs) + ' epochs' if epochs else ''}: {series}").replace(" :", ":")
        if arch == "plain":
            if v.degraded:
                text += (f" — {name}-{v.depths[-1]} trains worse than {name}-{v.depths[0]}: the degradation problem, "
                         f"as He et al. 2015 report on CIFAR-10 (Fig. 1, Fig. 6 left)")
            else:
                text += (f" — no degradation with depth here (change {points(v.change)}, margin "
                         f"{points(v.margin)}), which does not reproduce He et al. 2015 Fig. 1/6 "
                         f"at these depths and epochs")
            claim = "\"The deep plain nets suffer from increased depth, and exhibit higher training error when going deeper\""
        else:
            if v.degraded:
                text += (f" — the residual nets also degrade with depth ({points(v.change)}), unlike He et al. "
                         f"2015 Fig. 6 (middle)")
            else:
                text += (f" — no degradation with depth (change {points(v.change)}), as He et al. 2015 "
                         f"report for ResNets (Fig. 6 middle)")
            claim = "ResNets overcome the optimisation difficulty: deeper ones do not train worse"
        out.append(finding(f"degradation.{arch}", "degradation", text + ".",
                            {"depths": list(v.depths), "train_errors": list(v.train_errors), "first": v.first,
                             "last": v.last, "std": v.std, "degraded": v.degraded}, v,
                            paper=cite_text("he2015", "Fig. 1, Fig. 6"), claim=claim, relation=v.relation))

    if deg.table:
        t = max(deg.table, key=lambda t: t.depth)
        data = data_name(s) or ""
        v6 = V.table6_verdict(t.depth, t.residual.test_error, PUBLISHED["he2015_table6"].get(t.depth),
                              "cifar" in data.lower())
        text = (f"At depth {t.depth}, same parameters and recipe: plain test error {pct(t.plain.test_error)} "
                f"(train {pct(t.plain.train_error)}) vs residual {pct(t.residual.test_error)} "
                f"(train {pct(t.residual.train_error)})")
        nums = {"depth": t.depth, "plain_test": t.plain.test_error, "residual_test": t.residual.test_error,
                "plain_train": t.plain.train_error, "residual_train": t.residual.train_error}
        paper = claim = None
        if v6.relation is not None:
            assert v6.difference is not None
            text += (f"; He et al. 2015 Table 6 report {pct(v6.published)} for ResNet-{t.depth} on CIFAR-10 "
                     f"(measured {sig(100 * v6.difference)} points {'above' if v6.difference > 0 else 'below'})")
            nums["he2015_table6"] = v6.published
            paper, claim = cite_text("he2015", "Table 6"), f"ResNet-{t.depth} CIFAR-10 test error {pct(v6.published)}"
        out.append(finding("degradation.gap", "degradation", text + ".", nums, v6,
                            paper=paper, claim=claim, relation=v6.relation))
    return out
