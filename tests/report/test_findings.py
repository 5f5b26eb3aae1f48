"""Findings word verdict records: recompute the verdicts independently from a real result's raw
fields, then check the records (values, relations) and a few sentences."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from resgrad.report import findings
from resgrad.results import ResultError


def _by_id(result):
    return {f["id"]: f for f in findings(result)}


def _lsq(x, y) -> float:
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def _p(frac: float) -> str:
    """A percentage to 3 significant digits, written independently of report._fmt."""
    return f"{float(f'{100 * frac:.3g}'):g}%"


def test_every_finding_has_its_shape(study):
    found = findings(study)
    assert found[0]["id"] == "answer"
    ids = [f["id"] for f in found]
    assert len(ids) == len(set(ids))
    for f in found:
        assert set(f) >= {"id", "section", "sentence", "numbers", "paper", "claim", "relation", "verdict"}
        assert f["sentence"].strip() and f["sentence"].endswith(".")
        assert f["relation"] in (None, "agrees", "contradicts", "partly")
        if f["id"] != "answer":
            assert dataclasses.is_dataclass(f["verdict"])
        if f["verdict"] is not None and hasattr(f["verdict"], "relation"):
            assert f["relation"] == f["verdict"].relation  # the badge is the record's


# -- recomputed from the raw numbers of the real quick study -------------------------------


def test_flow_verdicts_recomputed_from_the_per_seed_profiles(study):
    flow = study.flow
    thr, level = flow.thresholds.decades, flow.thresholds.ci_level
    checked = 0
    for i, g in enumerate(flow.groups):
        seeds = [c for c in flow.configs if c.group == i]
        profiles = [c.profile.log10_rms for c in seeds]
        if any(v is None for p in profiles for v in p):
            continue
        # decades per block crossed backward: fit log10 rms against k = L-1-l
        slopes = [_lsq(range(len(p)), p[::-1]) for p in profiles]
        slope = sum(slopes) / len(slopes)
        if len(slopes) > 1:
            h = sps.t.ppf(0.5 + level / 2, len(slopes) - 1) * np.std(slopes, ddof=1) / math.sqrt(len(slopes))
            ci = (slope - h, slope + h)
        else:
            ci = None
        decades = slope * (g.depth - 1)
        expect = ("vanishing" if decades <= -thr and (ci is None or ci[1] < 0) else
                  "exploding" if decades >= thr and (ci is None or ci[0] > 0) else "healthy")
        assert g.slope == pytest.approx(slope, rel=1e-6, abs=1e-9)
        assert g.verdict == expect, (g, expect)
        checked += 1
    assert checked == len(flow.groups)

    from resgrad.verdicts import flow_verdict  # the rule the experiment will import

    for g in flow.groups:
        assert flow_verdict(g.slope, g.slope_ci, g.depth, thr) == g.verdict


def test_he2015_bn_plain_relation_recomputed(study):
    bn = [g for g in study.flow.groups
          if (g.family, g.arch, g.norm, g.act, g.init) == ("he2015", "plain", "batch", "relu", "he")]
    off = [g for g in bn if g.verdict in ("vanishing", "exploding")]
    f = _by_id(study)["flow.he2015-4.1"]
    v = f["verdict"]
    assert f["relation"] == ("contradicts" if off else "agrees")
    assert [g.depth for g in v.off] == [g.depth for g in off] and v.philipp == any(g.verdict == "exploding" for g in off)
    assert "arXiv 1512.03385" in f["paper"]


def test_degradation_recomputed_from_the_runs(study):
    runs = study.degradation.runs
    found = _by_id(study)
    for arch in ("plain", "residual"):
        by: dict[int, list[float]] = {}
        for r in runs:
            if r.arch == arch:
                by.setdefault(r.depth, []).append(r.final.train_error)
        d0, d1 = min(by), max(by)
        m0, m1 = np.mean(by[d0]), np.mean(by[d1])
        sd = math.hypot(*(np.std(by[d], ddof=1) if len(by[d]) > 1 else 0.0 for d in (d0, d1)))
        degraded = m1 - m0 > max(0.01, 2 * sd)  # 1 point, and 2 sd of the difference
        f = found[f"degradation.{arch}"]
        v = f["verdict"]
        assert (v.first, v.last) == (pytest.approx(m0), pytest.approx(m1)) and v.degraded == degraded
        assert f["relation"] == (("agrees" if degraded else "contradicts") if arch == "plain" else
                                 ("contradicts" if degraded else "agrees"))
        for d in sorted(by):
            assert f"{_p(np.mean(by[d]))} at depth {d}" in f["sentence"]


def test_ensemble_verdicts_recomputed(study):
    ens = study.ensemble
    found = _by_id(study)
    # The effective window: magnitude-weighted mean length against Binomial(n, 1/2).
    norms, n = ens.exact.norms, ens.n
    wl = sum(k * v for k, v in enumerate(norms)) / sum(norms)
    mid, sd = n / 2, math.sqrt(n) / 2
    w = found["ensemble.window.exact"]
    assert w["verdict"].weighted_length == pytest.approx(wl)
    assert w["relation"] == ("contradicts" if wl >= mid else "agrees" if wl < mid - 2 * sd else "partly")
    eff = ens.exact.effective
    assert f"paths {eff.lo}–{eff.hi} blocks long" in w["sentence"] and _p(eff.share_of_paths) in w["sentence"]

    # Single-block lesions: the worst non-downsampling deletion against +2 points.
    les = ens.lesion["residual"]
    worst = max(b.error for b in les.blocks if not b.downsample)
    f = found["ensemble.lesion"]
    assert f["verdict"].rise == pytest.approx(worst - les.baseline)
    assert f["relation"] == ("agrees" if worst - les.baseline <= 0.02 else "contradicts")

    # Per-path decay: log-linear fit of the sampled mean magnitudes.
    sa = ens.sampled
    pts = [(k, m) for k, m in zip(sa.lengths, sa.mean, strict=True) if m and m > 0]
    factor = 10 ** -_lsq([k for k, _ in pts], [math.log10(m) for _, m in pts])
    assert found["ensemble.decay"]["verdict"].factor_per_block == pytest.approx(factor)

    # Reordering: Pearson of error with Kendall tau below -0.5.
    ro = ens.reorder
    corr = float(np.corrcoef(ro.kendall_tau, ro.mean)[0, 1])
    f = found["ensemble.reorder"]
    assert f["verdict"].correlation == pytest.approx(corr) and f["relation"] == ("agrees" if corr < -0.5 else "contradicts")

    # k deletions: rises (no drop over 2 points) until within 5 points of its maximum.
    d = ens.deletion["residual"]
    top = max(d.mean)
    cut = next(i for i, m in enumerate(d.mean) if m >= top - 0.05)
    smooth = all(b >= a - 0.02 for a, b in zip(d.mean[:cut + 1], d.mean[1:cut + 1], strict=False))
    assert found["ensemble.deletion"]["verdict"].smooth == smooth


# -- situations made by editing typed records ----------------------------------------------


def _with_table(study, depth, arch, **cell):
    table = [dataclasses.replace(t, **{arch: dataclasses.replace(getattr(t, arch), **cell)}) if t.depth == depth else t
             for t in study.degradation.table]
    return dataclasses.replace(study, degradation=dataclasses.replace(study.degradation, table=table))


def test_a_plain_net_that_does_not_degrade(study):
    first = min(study.degradation.table, key=lambda t: t.depth).plain.train_error
    deepest = max(t.depth for t in study.degradation.table)
    flat = _with_table(study, deepest, "plain", train_error=first + 0.005)  # +0.5 points: under the margin
    found = _by_id(flat)
    v = found["degradation.plain"]["verdict"]
    assert not v.degraded and v.change == pytest.approx(0.005) and v.margin == 0.01
    assert found["degradation.plain"]["relation"] == "contradicts"
    assert "change +0.5 points, margin +1 points" in found["degradation.plain"]["sentence"]
    assert "the deep plain nets trained as well as the shallow ones here" in found["answer"]["sentence"]


def test_residual_degradation_contradicts_he2015(study):
    deepest = max(t.depth for t in study.degradation.table)
    f = _by_id(_with_table(study, deepest, "residual", train_error=0.9))["degradation.residual"]
    assert f["relation"] == "contradicts" and f["verdict"].degraded and "also degrade" in f["sentence"]


def test_the_headline_says_the_windows_mass(study):
    ens = study.ensemble
    exact = dataclasses.replace(ens.exact, effective=dataclasses.replace(ens.exact.effective, mass=0.5))
    a = _by_id(dataclasses.replace(study, ensemble=dataclasses.replace(ens, exact=exact)))["answer"]
    assert "50% of the trained residual net's gradient magnitude" in a["sentence"]
    assert "90% of the trained" in _by_id(study)["answer"]["sentence"]


def test_k_deletion_wobble_on_the_plateau_is_not_a_dip(study):
    ens = study.ensemble
    d = ens.deletion["residual"]

    def with_curve(mean):
        curve = dataclasses.replace(d, k=[0, 2, 5, 10, 20, 30, 40], mean=mean, std=[0.0] * 7)
        e = dataclasses.replace(ens, deletion={**ens.deletion, "residual": curve})
        return _by_id(dataclasses.replace(study, ensemble=e))["ensemble.deletion"]

    f = with_curve([0.05, 0.2, 0.6, 0.89, 0.9, 0.86, 0.9])  # saturates at chance, then trial noise
    assert f["relation"] == "agrees" and f["verdict"].plateau_k == 10
    assert "levels off near 90% from k=10" in f["sentence"]
    f = with_curve([0.05, 0.4, 0.2, 0.89, 0.9, 0.86, 0.9])  # a real dip before the plateau
    assert f["relation"] == "contradicts" and "does not rise smoothly" in f["sentence"]


def test_sentences_follow_the_numbers(study, copy_groups):
    def bn_plain_deep(g):
        return (g.family, g.arch, g.norm, g.act) == ("he2015", "plain", "batch", "relu") and g.depth == 15

    other = copy_groups(study, bn_plain_deep, ratio_first_last=1234.5, log10_ratio=math.log10(1234.5))
    assert "1230× the last" in _by_id(other)["flow.deepest.he2015.batch"]["sentence"]
    huge = copy_groups(study, bn_plain_deep, ratio_first_last=None, log10_ratio=412.3)  # the float overflowed
    assert "2e412× the last" in _by_id(huge)["flow.deepest.he2015.batch"]["sentence"]


def test_bn_plain_nets_healthy_agree_with_section_4_1(study, copy_groups):
    healthy = copy_groups(study, lambda g: g.arch == "plain" and g.norm == "batch", verdict="healthy")
    f = _by_id(healthy)["flow.he2015-4.1"]
    assert f["relation"] == "agrees" and not f["verdict"].off and "agrees with §4.1" in f["sentence"]


def test_answer_turns_to_no_when_the_twins_vanish_too(study, copy_groups):
    found = _by_id(study)
    tw = found["flow.vanishing-twins"]["verdict"]
    assert (tw.with_twin, tw.rescued, tw.answer) == (3, 2, "some")
    other = copy_groups(study, lambda g: g.arch == "residual" and g.act == "sigmoid" and g.norm == "none",
                        verdict="vanishing")
    a = _by_id(other)["answer"]
    assert a["sentence"].startswith("Measured answer (mnist1d, 3 epochs × 1 seed of training): No: in all 3 "
                                    "configurations where a plain net's gradient vanished, its residual twin's "
                                    "vanished too")


def test_non_finite_values_are_reported_not_crashed_on(study, copy_groups):
    bad = copy_groups(study, lambda g: True, ratio_first_last=None, log10_ratio=None, slope=None, decades=None,
                      slope_ci=None, verdict="non-finite")
    found = _by_id(bad)
    assert "not finite" in found["flow.deepest.he2015.batch"]["sentence"]
    assert found["flow.verdicts"]["verdict"].counts["plain"]["non-finite"] == 16
    assert found["flow.he2015-4.1"]["relation"] is None
    for f in found.values():
        assert not re.search(r"\b(nan|inf|None)\b", f["sentence"]), f["sentence"]


def test_only_one_experiment_gives_only_its_findings(study):
    assert {f["section"] for f in findings(study.flow)} == {"flow", "answer"}
    assert {f["section"] for f in findings(study.ensemble)} == {"ensemble", "answer"}


def test_a_dict_is_validated_not_guessed(study):
    d = study.ensemble.to_json()
    assert [f["sentence"] for f in findings(d)] == [f["sentence"] for f in findings(study.ensemble)]
    d["n_blocks"] = d.pop("n")
    with pytest.raises(ResultError, match="n_blocks"):
        findings(d)


def test_signal_findings_word_their_records(study, signal):
    found = _by_id(dataclasses.replace(study.flow, signal=signal))
    plain = found["flow.shattering.mlp.plain.none"]
    assert plain["relation"] == "agrees" and plain["verdict"].log2_slope == -1.0
    assert "log2 slope -1 per block" in plain["sentence"] and "Balduzzi" in plain["sentence"]
    res = found["flow.shattering.mlp.residual.batch"]
    assert res["relation"] == "agrees" and res["verdict"].power == -0.5
    assert "flow.shattering.mlp.residual.none" not in found  # Balduzzi et al. give no rate to judge it by
    spec = found["flow.spectrum.mlp.plain.batch.relu"]
    assert spec["relation"] == "agrees" and spec["verdict"].isometric is False
    assert "median 0.6, 10–90% 0.05 to 3" in spec["sentence"]
