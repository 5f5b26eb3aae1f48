"""resgrad.verdicts: each named threshold at its edge, and the records' relations."""

from __future__ import annotations

import math

import pytest

from resgrad import verdicts as V
from resgrad.results.degradation import ArchCell, DepthRow
from resgrad.results.ensemble import Deletion, Lesion, LesionBlock, Reorder, Window
from resgrad.results.flow import FlowGroup, ShatteringFit, SpectrumRow


def _g(arch="plain", norm="batch", depth=10, verdict="healthy", log10_ratio=0.0, act="relu") -> FlowGroup:
    return FlowGroup(family="he2015", arch=arch, norm=norm, act=act, init="he", depth=depth, layers=2 * depth + 2,
                     seeds=[0], slope=None, slope_ci=None, decades=None, log10_ratio=log10_ratio,
                     ratio_first_last=None, verdict=verdict, profile_log10_rms=[])


def test_thresholds_are_the_documented_values():
    assert (V.FLOW_THRESHOLD_DECADES, V.DEGRADE_MARGIN, V.TABLE6_TOLERANCE, V.LESION_NOTICEABLE) == (2.0, 0.01, 0.02, 0.02)
    assert (V.DELETION_PLATEAU, V.DELETION_DIP, V.REORDER_CORRELATION) == (0.05, 0.02, -0.5)


@pytest.mark.parametrize("decades, ci, expect", [
    (-2.0, (-0.3, -0.1), "vanishing"),  # exactly at the threshold counts
    (-1.99, (-0.3, -0.1), "healthy"),
    (-5.0, (-0.3, 0.01), "healthy"),  # the CI must exclude 0
    (-5.0, None, "vanishing"),  # one seed: the point estimate decides
    (2.0, (0.1, 0.3), "exploding"),
    (1.99, None, "healthy"),
    (5.0, (-0.01, 0.3), "healthy"),
])
def test_flow_verdict_edges(decades, ci, expect):
    depth = 11
    assert V.flow_verdict(decades / (depth - 1), ci, depth) == expect


def test_flow_verdict_non_finite_and_custom_threshold():
    assert V.flow_verdict(None, None, 5) == "non-finite"
    assert V.flow_verdict(math.nan, None, 5) == "non-finite"
    assert V.flow_verdict(0.25, None, 5, threshold_decades=1.0) == "exploding"


def test_skip_effect_growth_reduced_at_half():
    assert V.skip_effect(_g(verdict="exploding", log10_ratio=4.0),
                         _g("residual", verdict="exploding", log10_ratio=2.0)).kind == "reduced"
    assert V.skip_effect(_g(verdict="exploding", log10_ratio=4.0),
                         _g("residual", verdict="exploding", log10_ratio=2.01)).kind == "not-tamed"
    assert V.skip_effect(_g(verdict="exploding"), _g("residual")).kind == "tamed"
    assert V.skip_effect(_g(), _g("residual")).kind == "neither"


def test_he2015_and_he2016_relations():
    assert V.he2015_bn_plain([_g(), _g(depth=20)]).relation == "agrees"
    v = V.he2015_bn_plain([_g(), _g(depth=20, verdict="exploding", log10_ratio=3.0)])
    assert v.relation == "contradicts" and v.philipp and v.worst.depth == 20
    assert V.he2015_bn_plain([_g(verdict="non-finite")]).relation is None
    assert V.he2015_bn_plain([_g(norm="none")]) is None
    assert V.he2016_eq5([_g("residual")]).relation == "agrees"
    assert V.he2016_eq5([_g("residual", verdict="exploding")]).relation == "partly"
    assert V.he2016_eq5([_g("residual", verdict="exploding"), _g("residual", verdict="vanishing")]).relation == "contradicts"


def test_vanishing_twins():
    plain = [_g(act="sigmoid", verdict="vanishing"), _g(act="tanh", verdict="vanishing")]
    res = [_g("residual", act="sigmoid"), _g("residual", act="tanh", verdict="vanishing")]
    v = V.vanishing_twins(plain + res)
    assert (v.with_twin, v.rescued, v.answer) == (2, 1, "some")
    assert V.vanishing_twins([_g()]).answer == "no-vanishing"


def _cell(e, sd=0.0) -> ArchCell:
    return ArchCell(model="m", train_error=e, test_error=e, train_error_std=sd, test_error_std=sd, n_seeds=2)


def _table(first, last, sd=0.0):
    return [DepthRow(20, _cell(first, sd), _cell(0.1)), DepthRow(56, _cell(last, sd), _cell(0.1))]


def test_degradation_margin_and_two_std_rule():
    assert not V.degradation_verdict(_table(0.10, 0.11), "plain").degraded  # +1 point: not more than the margin
    v = V.degradation_verdict(_table(0.10, 0.1101), "plain")
    assert v.degraded and v.relation == "agrees"
    v = V.degradation_verdict(_table(0.10, 0.15, sd=0.02), "plain")  # 2 * hypot(0.02, 0.02) = 0.0566 > 0.05
    assert not v.degraded and v.margin == pytest.approx(2 * math.hypot(0.02, 0.02))
    assert V.degradation_verdict(_table(0.10, 0.11), "residual").relation == "agrees"
    assert V.degradation_verdict(_table(0.1, None), "plain") is None  # one finite depth


def test_table6_tolerance():
    assert V.table6_verdict(56, 0.0697 + 0.0199, 0.0697, cifar10=True).relation == "agrees"
    assert V.table6_verdict(56, 0.0697 - 0.0199, 0.0697, cifar10=True).relation == "agrees"
    assert V.table6_verdict(56, 0.0697 + 0.0201, 0.0697, cifar10=True).relation == "contradicts"
    assert V.table6_verdict(56, 0.07, 0.0697, cifar10=False).relation is None
    assert V.table6_verdict(8, 0.07, None, cifar10=True).relation is None


def test_window_two_sd_rule():
    n = 16  # a random path: 8 ± 2
    w = Window(lo=0, hi=4, mass=0.9, held=0.9, share_of_paths=0.04, n=n)

    def at(length: float):  # all magnitude on two lengths whose weighted mean is ``length``
        per = [0.0] * (n + 1)
        lo = math.floor(length)
        per[lo], per[lo + 1] = 1 - (length - lo), length - lo
        return V.window_verdict(n, per, w)

    assert at(3.99).relation == "agrees" and at(4.0).relation == "partly"
    assert at(7.99).relation == "partly" and at(8.0).relation == "contradicts"
    assert V.window_verdict(n, [None] * (n + 1), w).relation is None
    assert at(3.0).weak and not V.window_verdict(20, [1.0] * 21, w).weak


def test_decay_and_reorder_need_three_points():
    assert V.decay_verdict([0, 1], [1.0, 0.1]) is None
    v = V.decay_verdict([0, 1, 2], [1.0, 0.1, 0.01])
    assert v.factor_per_block == pytest.approx(10.0) and v.relation == "agrees"
    assert V.decay_verdict([0, 1, 2], [1.0, 1.0, 1.0]).relation == "contradicts"  # factor 1: no decay
    ro = Reorder(model=None, swaps=[0, 1, 2], kendall_tau=[1.0, 0.9, 0.8], mean=[0.1, 0.2, 0.3], std=[0] * 3, trials=[])
    assert V.reorder_verdict(ro).relation == "agrees"
    flat = Reorder(model=None, swaps=[0, 1, 2], kendall_tau=[1.0, 0.9, 0.8], mean=[0.1] * 3, std=[0] * 3, trials=[])
    assert V.reorder_verdict(flat).relation == "contradicts"  # error does not track tau
    edge = Reorder(model=None, swaps=[0, 1, 2], kendall_tau=[1.0, 0.9, 0.8], mean=[0.1, 0.1, 0.1 + 1e-9], std=[0] * 3,
                   trials=[])
    assert V.reorder_verdict(edge).correlation < -0.5


def test_lesion_noticeable_edge():
    def les(worst: float) -> Lesion:
        return Lesion(model="resnet20", baseline=0.1, blocks=[
            LesionBlock(0, 0, "residual", False, 0.1, 0.0), LesionBlock(1, 1, "residual", True, 0.5, 0.4),
            LesionBlock(2, 1, "residual", False, worst, worst - 0.1)])

    assert V.lesion_verdict(les(0.12)).relation == "agrees"  # +2 points: not noticeable
    v = V.lesion_verdict(les(0.1201))
    assert v.relation == "contradicts" and v.downsample_block == 1 and v.downsample_error == 0.5


def test_deletion_plateau_and_dip_edges():
    def d(mean):
        return V.deletion_verdict(Deletion(model=None, k=list(range(len(mean))), mean=mean, std=[0.0] * len(mean),
                                           errors=[], trials=1))

    assert d([0.1, 0.3, 0.28, 0.6, 0.9]).smooth  # a 2-point dip is tolerated
    assert not d([0.1, 0.3, 0.2799, 0.6, 0.9]).smooth
    v = d([0.1, 0.5, 0.85, 0.7, 0.9])  # within 5 points of the maximum from k=2: later wobbles don't count
    assert v.smooth and v.plateau_k == 2
    assert d([0.1, 0.2]).plateau_k is None  # the maximum only at the last k


def _fit(arch, norm, log2_slope, power) -> ShatteringFit:
    return ShatteringFit(family="mlp", arch=arch, norm=norm, act="relu", init="he", depths=[2, 4, 8],
                         neighbor=[0.5, 0.25, 0.1], used=3, floor=0.02,
                         log2_slope=log2_slope, power=power)


def test_shattering_edges():
    assert V.shattering_verdict(_fit("plain", "none", -0.26, None)).relation == "agrees"
    assert V.shattering_verdict(_fit("plain", "none", -0.25, None)).relation == "contradicts"
    assert V.shattering_verdict(_fit("residual", "batch", None, -0.75)).relation == "agrees"
    assert V.shattering_verdict(_fit("residual", "batch", None, -0.76)).relation == "contradicts"
    assert V.shattering_verdict(_fit("residual", "none", -0.1, -0.2)).relation is None  # no rate given
    assert V.shattering_verdict(_fit("plain", "none", None, None)).relation is None


def _spec(q10, q90, act="relu") -> SpectrumRow:
    return SpectrumRow(family="mlp", arch="plain", norm="none", act=act, init="he", depth=8, layers=10, seeds=[0],
                       examples=4, sigma_max=q90, sigma_min=q10, condition=None, log10_mean=0.0, q10=q10, median=1.0,
                       q90=q90, hist_edges=[], hist=[])


def test_spectrum_isometry_edges():
    assert V.spectrum_verdict(_spec(0.5, 2.0)).isometric and V.spectrum_verdict(_spec(0.5, 2.0)).relation == "contradicts"
    assert V.spectrum_verdict(_spec(0.49, 2.0)).relation == "agrees"
    assert V.spectrum_verdict(_spec(0.1, 5.0, act="tanh")).relation is None  # the claim is about ReLU nets
    assert V.spectrum_verdict(_spec(None, 2.0)).isometric is None


def _decorrelating(neighbor, arch="plain", norm="batch", depths=(2, 8, 32)) -> ShatteringFit:
    return ShatteringFit(family="mlp", arch=arch, norm=norm, act="relu", init="he", depths=list(depths),
                         neighbor=list(neighbor), used=sum(1 for c in neighbor if c > 0.02), floor=0.02,
                         log2_slope=-0.04, power=-0.13)


def test_shattering_judges_a_fall_to_the_noise_floor_by_the_fall_not_the_fit():
    # Issue 23: 0.975 -> 0.812 -> -0.0345 fitted over the first two only (-0.044 per block) read "slower".
    v = V.shattering_verdict(_decorrelating([0.975, 0.812, -0.0345]))
    assert v.decorrelated_at == 32 and v.stretch == (8, 32)
    assert v.bound == pytest.approx(math.log2(0.02 / 0.812) / 24)  # the floor stands in for -0.0345
    assert v.relation == "partly"  # -0.223 per block: shattered, but not shown to be as fast as -0.25
    steep = V.shattering_verdict(_decorrelating([0.9, 0.6, 0.0255, 5e-4], depths=(4, 8, 16, 32)))
    assert steep.stretch == (8, 16) and steep.bound == pytest.approx(math.log2(0.0255 / 0.6) / 8)
    assert steep.relation == "agrees"  # -0.57 per block: exponential at least there
    assert V.shattering_verdict(_decorrelating([0.99, 0.9, 0.01], arch="residual")).relation == "contradicts"
    # Above the floor everywhere, the fitted slope decides as before.
    assert V.shattering_verdict(_decorrelating([0.975, 0.812, 0.5])).decorrelated_at is None


def test_deletion_agrees_with_veit_only_within_the_tolerance_of_his_level():
    def d(mean, n, chance=0.9):
        return V.deletion_verdict(Deletion(model=None, k=list(range(len(mean))), mean=mean, std=[0.0] * len(mean),
                                           errors=[], trials=1), n, chance)

    paper = (0.20 - 0.0643) / (0.9 - 0.0643)
    assert pytest.approx(paper) == V.VEIT_WAY
    # 54 blocks, the curve through Veit's own point (20% at k = 10): agrees.
    mean = [0.0643 + (0.20 - 0.0643) * k / 10 for k in range(21)]
    v = d(mean, 54)
    assert v.veit_k == pytest.approx(10) and v.way == pytest.approx(paper) and v.relation == "agrees"
    # 9 blocks reaching chance at k = 3 (issue 23): smooth, but far faster than Veit's level.
    v = d([0.5, 0.61, 0.71, 0.86, 0.89], 9)
    assert v.veit_k == pytest.approx(9 * 10 / 54) and v.veit_error == pytest.approx(0.61 + 0.1 * (9 * 10 / 54 - 1))
    assert v.way == pytest.approx((v.veit_error - 0.5) / 0.4) and v.relation == "partly"
    # The tolerance's edges: a way of paper +- 0.1 still agrees, beyond it does not.
    for way, rel in ((paper + 0.099, "agrees"), (paper - 0.099, "agrees"), (paper + 0.101, "partly")):
        e10 = 0.1 + way * (0.9 - 0.1)
        curve = [0.1 + (e10 - 0.1) * k / 10 for k in range(11)]
        assert d(curve, 54).relation == rel, way
    assert d([0.1, 0.5, 0.2, 0.9], 54).relation == "contradicts"  # not smooth
    near = d([0.87, 0.89, 0.9], 4)
    assert near.near_chance and near.way is None and near.relation == "partly"
    assert d(mean, 54, chance=None).way is None
