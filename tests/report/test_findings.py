"""Findings are computed from the numbers: recompute them independently and find them in the sentences."""

from __future__ import annotations

import math

import pytest

from resgrad.report import findings


def _by_id(results):
    return {f["id"]: f for f in findings(results)}


def _e(x: float) -> str:
    """3 significant digits written independently of report._fmt: 63900000.0 -> '6.39e7'."""
    if 1e-3 <= abs(x) < 1e5:
        return f"{float(f'{x:.3g}'):g}"
    mant, exp = f"{x:.2e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def _p(frac: float) -> str:
    return f"{float(f'{100 * frac:.3g}'):g}%"


def test_every_finding_has_id_sentence_and_numbers(study):
    found = findings(study)
    assert found[0]["id"] == "answer"
    ids = [f["id"] for f in found]
    assert len(ids) == len(set(ids))
    for f in found:
        assert f["sentence"].strip() and f["sentence"].endswith(".")
        assert isinstance(f["numbers"], dict) and f["numbers"]
        assert f["relation"] in (None, "agrees", "contradicts", "partly")


def test_deepest_bn_plain_ratio_is_recomputed_from_the_profiles(study):
    # Independently: the deepest BN plain config of the flow grid, its ratio and verdict.
    rows = [r for r in study["flow"]["configs"] if r["arch"] == "plain" and r["norm"] == "batch"]
    deepest = max(rows, key=lambda r: r["depth"])
    seeds = deepest["profile_seeds"]
    ratio = math.exp(sum(math.log(s[0] / s[-1]) for s in seeds) / len(seeds))  # geometric mean over seeds
    assert ratio == pytest.approx(deepest["ratio_first_last"], rel=1e-9)
    f = _by_id(study)["flow.deepest.he2015.batch"]
    assert f"plain-{deepest['depth']} with BN" in f["sentence"]
    assert f"{_e(ratio)}×" in f["sentence"]
    assert deepest["verdict"] in f["sentence"]
    twin = next(r for r in study["flow"]["configs"] if r["arch"] == "residual" and r["norm"] == "batch"
                and r["depth"] == deepest["depth"])
    assert f"{_e(twin['ratio_first_last'])}×" in f["sentence"]


def test_plain_degradation_is_recomputed_from_the_runs(study):
    runs = study["degradation"]["runs"]
    means = {}
    for d in (20, 56, 110):
        finals = [r["final"]["train_error"] for r in runs if r["arch"] == "plain" and r["depth"] == d]
        means[d] = sum(finals) / len(finals)
    f = _by_id(study)["degradation.plain"]
    for d, m in means.items():
        assert f"{_p(m)} at depth {d}" in f["sentence"]
    assert (means[110] - means[20] > 0.01) == f["numbers"]["degraded"]
    assert f["relation"] == "agrees" and "degradation problem" in f["sentence"]


def test_effective_window_is_recomputed_from_the_exact_norms(study):
    ens = study["ensemble"]
    norms, n = ens["exact"]["norms"], ens["n_blocks"]
    total = sum(norms)
    best = None  # shortest contiguous window holding >= 90% of the gradient magnitude
    for lo in range(n + 1):
        acc = 0.0
        for hi in range(lo, n + 1):
            acc += norms[hi]
            if acc >= 0.9 * total:
                if best is None or hi - lo < best[1] - best[0]:
                    best = (lo, hi)
                break
    share = sum(math.comb(n, k) for k in range(best[0], best[1] + 1)) / 2**n
    f = _by_id(study)["ensemble.window.exact"]
    assert f"paths {best[0]}–{best[1]} blocks long" in f["sentence"]
    assert _p(share) in f["sentence"]
    assert "5–17 of 54" in f["sentence"] and "0.45%" in f["sentence"]  # Veit's, cited beside it


def test_sentences_follow_the_numbers_not_a_template(study, copy_of):
    other = copy_of(study)
    for r in other["flow"]["configs"]:
        if r["arch"] == "plain" and r["norm"] == "batch" and r["depth"] == 110:
            r["ratio_first_last"] = 1234.5
    assert "1230×" in _by_id(other)["flow.deepest.he2015.batch"]["sentence"]
    assert "1230×" not in _by_id(study)["flow.deepest.he2015.batch"]["sentence"]


def test_he2015_section_4_1_is_contradicted_when_bn_plain_explodes(study):
    f = _by_id(study)["flow.he2015-4.1"]
    assert f["relation"] == "contradicts"
    assert "contradicts §4.1" in f["sentence"] and "Philipp" in f["sentence"]
    assert "arXiv 1512.03385" in f["paper"]


def test_he2015_section_4_1_agrees_when_bn_plain_is_healthy(study, copy_of):
    healthy = copy_of(study)
    for r in healthy["flow"]["configs"]:
        if r["arch"] == "plain" and r["norm"] == "batch":
            r["ratio_first_last"], r["verdict"] = 2.0, "healthy"
    f = _by_id(healthy)["flow.he2015-4.1"]
    assert f["relation"] == "agrees" and "agrees with §4.1" in f["sentence"]
    assert "contradicts" not in f["sentence"]


def test_residual_degradation_contradicts_he2015(study, copy_of):
    bad = copy_of(study)
    for row in bad["degradation"]["table"]:
        if row["depth"] == 110:
            row["residual"]["train_error"] = 0.4
    f = _by_id(bad)["degradation.residual"]
    assert f["relation"] == "contradicts" and "also degrade" in f["sentence"]


def test_veit_window_contradicted_when_long_paths_carry_the_gradient(study, copy_of):
    other = copy_of(study)
    other["ensemble"]["exact"]["effective"] = {"lo": 20, "hi": 34, "mass": 0.9, "share_of_paths": 0.95}
    f = _by_id(other)["ensemble.window.exact"]
    assert f["relation"] == "contradicts" and "20–34" in f["sentence"] and "contradicts Veit" in f["sentence"]


def test_measured_answer_combines_the_three_kinds_of_evidence(study):
    a = _by_id(study)["answer"]
    s = a["sentence"]
    assert s.startswith("Measured answer (mnist1d, 30 epochs, 2 seeds)")
    assert "exploded" in s and "plain-110 with BN" in s  # gradient flow
    assert "degrade with depth" in s  # optimisation
    assert "short paths" in s  # ensemble view
    assert "not in general" in s  # hedged
    assert a["evidence"] and a["verdict"] in s


def test_answer_says_vanishing_when_plain_vanishes(study, copy_of):
    other = copy_of(study)
    for r in other["flow"]["configs"]:
        if r["arch"] == "plain" and r["norm"] == "batch":
            r["ratio_first_last"], r["verdict"] = 1e-6, "vanishing"
    s = _by_id(other)["answer"]["sentence"]
    assert "keep the gradient from vanishing" in s and "1e-6×" in s


def test_only_flow_gives_only_flow_findings(study):
    found = findings({"flow": study["flow"]})
    assert {f["section"] for f in found} <= {"flow", "answer"}
    assert any(f["section"] == "flow" for f in found)


def test_a_single_experiment_file_is_read_as_its_section(study):
    found = findings(study["ensemble"])  # {"experiment": "ensemble", ...} at the top level
    assert any(f["id"] == "ensemble.window.exact" for f in found)


def test_empty_results_give_no_findings():
    assert findings({}) == []
    with pytest.raises(TypeError, match="results dict"):
        findings([])  # type: ignore[arg-type]


def test_non_finite_values_are_reported_not_crashed_on(study, copy_of):
    bad = copy_of(study)
    for r in bad["flow"]["configs"]:
        r["ratio_first_last"] = None
        r["profile"][0] = None
        r["slope"] = None
    for run in bad["degradation"]["runs"]:
        run["final"]["test_error"] = None
    for row in bad["degradation"]["table"]:
        row["plain"]["test_error"] = None
    bad["ensemble"]["sampled"]["mean"][3] = None
    bad["ensemble"]["exact"]["norms"][5] = None
    found = _by_id(bad)
    assert "not finite" in found["flow.deepest.he2015.batch"]["sentence"]
    assert "plain test error n/a" in found["degradation.gap"]["sentence"]
    assert found["ensemble.decay"]["numbers"]["factor_per_block"] > 1
    for f in found.values():
        assert "nan" not in f["sentence"].lower().replace("finite", "")
