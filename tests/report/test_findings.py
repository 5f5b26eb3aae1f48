"""Findings are computed from the numbers: recompute them independently and find them in the sentences."""

from __future__ import annotations

import math
import re

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
    # Independently, from the per-seed profiles: the deepest BN plain ReLU net's first/last ratio
    # (geometric mean over seeds of ||dL/dx_0|| / ||dL/dx_{L-1}||) and its residual twin's.
    def ratio(arch: str) -> tuple[float, dict]:
        rows = [c for c in study["flow"]["configs"]
                if c["arch"] == arch and c["norm"] == "batch" and c["act"] == "relu"]
        deepest = max(c["depth"] for c in rows)
        seeds = [c for c in rows if c["depth"] == deepest]
        logs = [c["profile"]["log10_norm"][0] - c["profile"]["log10_norm"][-1] for c in seeds]
        return 10 ** (sum(logs) / len(logs)), seeds[0]

    r_plain, plain = ratio("plain")
    r_res, _ = ratio("residual")
    f = _by_id(study)["flow.deepest.he2015.batch"]
    assert f"plain-{plain['layers']} with BN ({plain['depth']} blocks)" in f["sentence"]
    assert f"{_e(r_plain)}× the last" in f["sentence"]
    assert f"ResNet-{plain['layers']}: {_e(r_res)}×" in f["sentence"]
    assert f"verdict: {plain['verdict']}" in f["sentence"]


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
    for g in other["flow"]["groups"]:
        if g["arch"] == "plain" and g["norm"] == "batch" and g["act"] == "relu" and g["depth"] == 54:
            g["ratio_first_last"], g["log10_ratio"] = 1234.5, math.log10(1234.5)
    assert "1230×" in _by_id(other)["flow.deepest.he2015.batch"]["sentence"]
    assert "1230×" not in _by_id(study)["flow.deepest.he2015.batch"]["sentence"]


def test_he2015_section_4_1_is_contradicted_when_bn_plain_explodes(study):
    f = _by_id(study)["flow.he2015-4.1"]
    assert f["relation"] == "contradicts"
    assert "contradicts §4.1" in f["sentence"] and "Philipp" in f["sentence"]
    assert "arXiv 1512.03385" in f["paper"]


def test_he2015_section_4_1_agrees_when_bn_plain_is_healthy(study, copy_of):
    healthy = copy_of(study)
    for g in healthy["flow"]["groups"]:
        if g["arch"] == "plain" and g["norm"] == "batch":
            g["ratio_first_last"], g["log10_ratio"], g["verdict"] = 2.0, math.log10(2.0), "healthy"
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


def test_k_deletion_wobble_on_the_chance_plateau_is_not_a_dip(study, copy_of):
    plateau = copy_of(study)
    d = plateau["ensemble"]["deletion"]["residual"]
    d["k"] = [0, 2, 5, 10, 20, 30, 40]
    d["mean"] = [0.05, 0.2, 0.6, 0.89, 0.9, 0.86, 0.9]  # saturates at chance, then trial noise
    d["std"] = [0.0] * 7
    f = _by_id(plateau)["ensemble.deletion"]
    assert f["relation"] == "agrees" and f["numbers"]["plateau_k"] == 10
    assert "levels off near 90% from k=10" in f["sentence"]
    d["mean"] = [0.05, 0.4, 0.2, 0.89, 0.9, 0.86, 0.9]  # a real dip before the plateau
    f = _by_id(plateau)["ensemble.deletion"]
    assert f["relation"] == "contradicts" and "does not rise smoothly" in f["sentence"]


def test_veit_window_contradicted_when_long_paths_carry_the_gradient(study, copy_of):
    other = copy_of(study)
    ens = other["ensemble"]
    ens["exact"]["norms"] = [float(c) for c in ens["counts"]]  # every path carries the same gradient
    ens["exact"]["effective"] = {"lo": 20, "hi": 34, "mass": 0.9, "share_of_paths": 0.95}
    f = _by_id(other)["ensemble.window.exact"]
    assert f["relation"] == "contradicts" and "20–34" in f["sentence"] and "contradicts Veit" in f["sentence"]
    assert "mean path length is 27 blocks" in f["sentence"]


def test_measured_answer_combines_the_three_kinds_of_evidence(study):
    a = _by_id(study)["answer"]
    s = a["sentence"]
    assert s.startswith("Measured answer (mnist1d, 30 epochs × 2 seeds of training)")
    assert "exploded" in s and "plain-110 with BN" in s and "vanished" in s  # gradient flow
    assert "degrade with depth" in s  # optimisation
    assert "short paths" in s  # ensemble view
    assert "not in general" in s  # hedged
    assert a["evidence"] and a["verdict"] in s


def test_answer_counts_vanishing_plain_nets_and_their_twins(study, copy_of):
    groups = study["flow"]["groups"]
    vanishing = [g for g in groups if g["arch"] == "plain" and g["verdict"] == "vanishing"]
    assert vanishing  # the fixture has sigmoid plain nets without BN
    twins = [next(t for t in groups if t["arch"] == "residual" and all(t[k] == g[k] for k in
                                                                   ("family", "norm", "act", "init", "depth")))
             for g in vanishing]
    rescued = sum(t["verdict"] != "vanishing" for t in twins)
    a = _by_id(study)["answer"]
    assert f"in all {len(vanishing)} configurations where a plain net's gradient vanished" in a["sentence"]
    assert (a["numbers"]["plain_vanishing"], a["numbers"]["rescued"]) == (len(vanishing), rescued)

    # If the twins vanish too, the answer turns to "no".
    other = copy_of(study)
    for t in other["flow"]["groups"]:
        if t["arch"] == "residual" and t["act"] == "sigmoid" and t["norm"] == "none":
            t["verdict"], t["log10_ratio"], t["ratio_first_last"] = "vanishing", -20.0, 1e-20
    s = _by_id(other)["answer"]["sentence"]
    assert f"No: in all {len(vanishing)} configurations where a plain net's gradient vanished, its residual twin's vanished too" in s
    assert "1e-20×" in _by_id(other)["flow.vanishing-twins"]["sentence"]


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
    for g in bad["flow"]["groups"]:
        g["ratio_first_last"] = g["log10_ratio"] = g["slope"] = g["decades"] = None
        g["slope_ci"] = None
        g["profile_log10_rms"][0] = None
        g["verdict"] = "non-finite"
    for c in bad["flow"]["configs"]:
        c["ratio_first_last"] = c["log10_ratio"] = None
    for run in bad["degradation"]["runs"]:
        run["final"]["test_error"] = None
    for row in bad["degradation"]["table"]:
        row["plain"]["test_error"] = None
    bad["ensemble"]["sampled"]["mean"][3] = None
    bad["ensemble"]["exact"]["norms"][5] = None
    found = _by_id(bad)
    assert "not finite" in found["flow.deepest.he2015.batch"]["sentence"]
    assert "non-finite" in found["flow.verdicts"]["sentence"]
    assert "plain test error n/a" in found["degradation.gap"]["sentence"]
    assert found["ensemble.decay"]["numbers"]["factor_per_block"] > 1
    for f in found.values():
        assert not re.search(r"\b(nan|inf|None)\b", f["sentence"]), f["sentence"]  # formatted values


def test_ratios_beyond_float_range_are_written_from_their_log10(study, copy_of):
    other = copy_of(study)
    for g in other["flow"]["groups"]:
        if g["arch"] == "plain" and g["norm"] == "batch" and g["act"] == "relu" and g["depth"] == 54:
            g["ratio_first_last"], g["log10_ratio"] = None, 412.3  # JSON null: the float overflowed
    assert "2e412×" in _by_id(other)["flow.deepest.he2015.batch"]["sentence"]


def test_real_flow_finding_is_recomputed(real_flow):
    found = _by_id(real_flow)
    groups = real_flow["groups"]
    g = max((g for g in groups if (g["family"], g["arch"], g["norm"], g["act"]) == ("he2015", "plain", "batch", "relu")),
            key=lambda g: g["depth"])
    f = found["flow.deepest.he2015.batch"]
    assert f"{_e(10 ** g['log10_ratio'])}× the last" in f["sentence"] and g["verdict"] in f["sentence"]
    assert "answer" in found and "flow.verdicts" in found


def test_real_degradation_finding_is_recomputed(real_results):
    runs = real_results["degradation"]["runs"]
    f = _by_id(real_results)["degradation.plain"]
    for d in sorted({r["depth"] for r in runs}):
        finals = [r["final"]["train_error"] for r in runs if r["arch"] == "plain" and r["depth"] == d]
        assert f"{_p(sum(finals) / len(finals))} at depth {d}" in f["sentence"]


def test_real_effective_window_is_recomputed(real_results):
    ens = real_results["ensemble"]
    norms = ens["exact"]["norms"]
    wl = sum(k * v for k, v in enumerate(norms)) / sum(norms)
    w = ens["exact"]["effective"]
    f = _by_id(real_results)["ensemble.window.exact"]
    assert f"paths {w['lo']}–{w['hi']} blocks long" in f["sentence"]
    assert f"mean path length is {_e(wl)} blocks, against {ens['n'] / 2:g}" in f["sentence"]
    assert _p(w["share_of_paths"]) in f["sentence"]
