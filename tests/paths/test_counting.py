"""Path counts are exact binomials; windows; Veit et al.'s figures for 54 blocks."""

import math

import pytest

from resgrad.paths import EffectiveRange, counts, fraction, path_window, window


@pytest.mark.parametrize("n", [0, 1, 2, 9, 54, 110])
def test_counts_match_math_comb(n):
    c = counts(n)
    assert c == [math.comb(n, k) for k in range(n + 1)]
    assert sum(c) == 2**n and all(isinstance(v, int) for v in c)


def test_a_plain_net_has_one_path():
    assert counts(0) == [1] and fraction(0, 0, 0) == 1.0


def test_fraction_is_exact_and_clips():
    assert fraction(4, 0, 4) == 1.0
    assert fraction(4, 2, 2) == 6 / 16
    assert fraction(4, -3, 1) == 5 / 16 and fraction(4, 3, 9) == 5 / 16
    assert fraction(4, 3, 2) == 0.0


def test_veit_figures_for_54_blocks():
    # Veit et al. 2016 §3: "more than 95% of paths go through 19 to 35 modules".
    assert fraction(54, 19, 35) > 0.95
    lo, hi = path_window(54, 0.95)
    assert (lo, hi) == (20, 34) and fraction(54, lo, hi) >= 0.95 > fraction(54, lo + 1, hi)
    # §5: the effective paths, 5 to 17 modules long, are 0.45% of all paths.
    assert round(100 * fraction(54, 5, 17), 2) == 0.45


def test_window_is_the_shortest_holding_the_share():
    assert window([0, 1, 8, 1, 0], 0.8) == (2, 2, 0.8)
    lo, hi, held = window([1, 1, 1, 1], 0.6)
    assert hi - lo + 1 == 3 and held == 0.75
    assert window([0.0, 0.0], 0.9) == (0, 1, 0.0)
    assert window([float("nan"), 2.0, 1.0], 0.6)[:2] == (1, 1)


def test_effective_range_reports_the_path_share():
    eff = EffectiveRange.from_mass([0.0, 5.0, 4.0, 1.0, 0.0], 4, 0.9)
    assert (eff.lo, eff.hi) == (1, 2) and eff.share_of_paths == fraction(4, 1, 2)
    assert eff.to_dict()["held"] == pytest.approx(0.9)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_bad_n_is_refused(bad):
    with pytest.raises(ValueError, match="received"):
        counts(bad)


def test_bad_share_is_refused():
    with pytest.raises(ValueError, match="share"):
        window([1.0], 0.0)
    with pytest.raises(ValueError, match="one magnitude per length"):
        EffectiveRange.from_mass([1.0, 2.0], 3)
