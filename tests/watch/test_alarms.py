"""Alarms on hand-made row streams: each fires once, at the step a brute-force scan of the
stream predicts, in words; none on a healthy stream; thresholds overridable; a resumed watch
goes on where it stopped; JSONLLogger's metric lines give the same alarms as tidy rows."""

from __future__ import annotations

import math

import pytest

from resgrad.verdicts import FLOW_THRESHOLD_DECADES
from resgrad.verdicts.alarms import ALARM_WINDOW_STEPS, AlarmThresholds, AlarmWatch
from resgrad.watch.follow import rows_of

EVERY = 10  # a measured step every 10 steps
UNITS = 4


def _step(s, units=None, params=None, origin=None):
    """Rows of step s: block-input gradients per unit, parameter gradients per layer."""
    units = units if units is not None else [1.0] * UNITS
    params = params if params is not None else {"stem": 1.0, "fc": 1.0}
    rows = [{"step": s, "name": f"layer{i}", "kind": "input", "block": i, "norm": v, "nonfinite": 0,
             "numel": 8} for i, v in enumerate(units)]
    for name, v in params.items():
        bad = 0 if v is None or math.isfinite(v) else 4
        rows += [{"step": s, "name": f"{name}.weight", "kind": "param", "block": None, "norm": v,
                  "nonfinite": bad, "numel": 16},
                 {"step": s, "name": f"{name}.bias", "kind": "param", "block": None,
                  "norm": None if v is None else (v if v == 0 or not math.isfinite(v) else v / 2),
                  "nonfinite": 0, "numel": 4}]
    if origin is not None:
        rows.append({"step": s, "name": origin, "kind": "nonfinite_origin", "block": None, "norm": None,
                     "nonfinite": 3, "numel": 8})
    return rows


def _run(stream, **th):
    """Feed the stream one step per call (as the training callback does); all alarms."""
    w = AlarmWatch(**th)
    out = []
    for rows in stream:
        out += w.feed(rows) + w.flush()
    return w, out


def _first_held(steps, holds, window):
    """Brute force: the first measured step t at which holds(s) for every measured s in [s0, t]
    with t - s0 >= window."""
    since = None
    for t in steps:
        if holds(t):
            since = t if since is None else since
            if t - since >= window:
                return t, since
        else:
            since = None
    return None, None


STEPS = list(range(0, 1000, EVERY))


def test_a_healthy_stream_raises_nothing():
    # A gradient that shrinks toward the input by 0.7x per unit (1.5 decades over 4 units: under 2),
    # noisy parameter norms, nothing zero, nothing non-finite.
    stream = [_step(s, units=[0.7 ** (UNITS - 1 - i) * (1 + 0.1 * ((s // 10) % 3)) for i in range(UNITS)],
                    params={"stem": 0.5 + 0.01 * (s % 7), "fc": 2.0}) for s in STEPS]
    _, out = _run(stream)
    assert out == []


def test_vanishing_fires_once_at_the_right_step_with_its_words():
    def units(s):
        # unit 0's gradient 1e-6 of the last unit's from step 100, except one healthy step at 250
        if s >= 100 and s != 250:
            return [1e-6, 1e-3, 0.5, 1.0]
        return [0.5, 0.6, 0.8, 1.0]
    stream = [_step(s, units=units(s)) for s in STEPS]
    _, out = _run(stream)
    van = [a for a in out if a.kind == "vanishing"]
    lo = 10 ** -FLOW_THRESHOLD_DECADES
    t, since = _first_held(STEPS, lambda s: units(s)[0] / units(s)[-1] <= lo, ALARM_WINDOW_STEPS)
    assert (t, since) == (460, 260)  # the brute-force scan: the run broken at 250 restarts at 260
    assert len(van) == 1 and van[0].step == t and van[0].since == since
    a = van[0]
    assert a.message == (
        "step 460: unit 0 (layer0)'s gradient has been at most 1e-6 of the last unit's, unit 3 (layer3), "
        "for 200 steps (vanishing: 2 decades below it); 1 more unit too")
    assert a.value == pytest.approx(1e-6)
    assert [x.kind for x in out] == ["vanishing"]  # nothing else fired


def test_exploding_and_growing_and_dead_and_nonfinite_each_fire_once():
    def units(s):
        return [3e3, 10.0, 2.0, 1.0] if s >= 300 else [1.0] * UNITS

    def total(s):  # the parameter gradient grows 10^(s/97) from step 500
        return 1.0 if s < 500 else 10 ** ((s - 500) / 97)

    def params(s):
        return {"stem": total(s), "fc": 0.0 if s >= 50 else 1.0}  # fc dead from step 50

    def origin(s):
        return "layer2" if s in (700, 710) else None

    stream = [_step(s, units=units(s), params=params(s), origin=origin(s)) for s in STEPS]
    _, out = _run(stream)
    kinds = [a.kind for a in out]
    assert sorted(kinds) == ["dead", "exploding", "growing", "non-finite"], kinds
    by = {a.kind: a for a in out}

    t, _ = _first_held(STEPS, lambda s: units(s)[0] / units(s)[-1] >= 100, ALARM_WINDOW_STEPS)
    assert by["exploding"].step == t == 500
    assert by["exploding"].message.startswith("step 500: unit 0 (layer0)'s gradient has been at least 3e3 times "
                                              "the last unit's, unit 3 (layer3), for 200 steps (exploding")

    t, since = _first_held(STEPS, lambda s: params(s)["fc"] == 0, ALARM_WINDOW_STEPS)
    assert (by["dead"].step, by["dead"].since) == (t, since) == (250, 50)
    assert by["dead"].message == "step 250: layer 'fc' has had a zero gradient for 200 steps (dead)"

    # growing: the total norm against the smallest total within the window before it (brute force)
    def norm_total(s):
        p = params(s)
        return math.sqrt(p["stem"] ** 2 + (p["stem"] / 2) ** 2 + 2 * p["fc"] ** 2)

    grow = next(s for s in STEPS if any(norm_total(s) >= 100 * norm_total(e) for e in STEPS
                                        if s - ALARM_WINDOW_STEPS <= e < s))
    assert by["growing"].step == grow
    assert "the gradient norm has grown" in by["growing"].message
    assert by["growing"].value >= 100

    assert by["non-finite"].step == 700  # once, although step 710 is non-finite too
    assert by["non-finite"].message == ("step 700: the first non-finite gradient appeared at 'layer2' (3 NaN/Inf of "
                                        "8); everything before it in the backward only inherits it")


def test_a_zero_initialised_branch_that_moves_after_one_step_is_not_dead():
    stream = [_step(s, params={"stem": 1.0, "fc": 0.0 if s == 0 else 0.3}) for s in STEPS]
    assert _run(stream)[1] == []


def test_non_finite_without_an_origin_row_names_the_parameter_nearest_the_loss():
    stream = [_step(s, params={"stem": 1.0, "fc": math.inf if s >= 120 else 1.0}) for s in STEPS[:20]]
    _, out = _run(stream)
    assert [(a.kind, a.step, a.name) for a in out] == [("non-finite", 120, "fc.weight")]


def test_thresholds_are_named_and_overridable():
    stream = [_step(s, units=[1e-6, 1e-3, 0.5, 1.0]) for s in STEPS]
    assert [a.step for a in _run(stream)[1]] == [200]
    assert [a.step for a in _run(stream, window=0)[1]] == [0]  # at once
    assert [a.step for a in _run(stream, window=50)[1]] == [50]
    assert _run(stream, vanishing_decades=7)[1] == []  # 6 decades are not 7
    th = AlarmThresholds(window=30, vanishing_decades=5)
    assert AlarmWatch(th).thresholds.window == 30
    assert AlarmWatch(th, window=0).thresholds == AlarmThresholds(window=0, vanishing_decades=5)
    assert AlarmThresholds().vanishing_decades == FLOW_THRESHOLD_DECADES == 2.0


@pytest.mark.parametrize("kw, words", [
    ({"window": -1}, "alarm window must be an integer >= 0 (steps), received -1"),
    ({"window": 2.5}, "alarm window must be an integer >= 0 (steps), received 2.5"),
    ({"vanishing_decades": 0}, "alarm threshold vanishing_decades must be a number > 0 (decades), received 0"),
    ({"dead_norm": -1.0}, "alarm threshold dead_norm must be a number >= 0, received -1.0"),
])
def test_bad_thresholds_are_one_line(kw, words):
    with pytest.raises(ValueError) as e:
        AlarmWatch(**kw)
    assert str(e.value) == words


def test_an_unknown_threshold_names_the_known_ones():
    with pytest.raises(TypeError, match="unknown alarm threshold 'windw'; choose from window, vanishing_decades"):
        AlarmWatch(windw=3)


def test_a_resumed_watch_goes_on_where_it_stopped():
    stream = [_step(s, units=[1e-6, 1e-3, 0.5, 1.0] if s >= 100 else [1.0] * UNITS,
                    params={"stem": 1.0, "fc": 0.0 if s >= 350 else 1.0}) for s in STEPS]
    _, whole = _run(stream)
    w = AlarmWatch()
    part = []
    for rows in stream[:20]:  # to step 190: the vanishing run is under way, nothing fired
        part += w.feed(rows) + w.flush()
    saved = w.state_dict()
    w2 = AlarmWatch()
    w2.load_state_dict(saved)
    for rows in stream[20:]:
        part += w2.feed(rows) + w2.flush()
    assert part == whole and [a.step for a in whole] == [300, 550]


def test_rows_of_one_step_split_over_two_feeds_are_judged_together():
    w = AlarmWatch(window=0)
    rows = _step(0, units=[1e-6, 1e-3, 0.5, 1.0])
    assert w.feed(rows[:2]) == []
    assert w.feed(rows[2:]) == []  # the step may still grow
    out = w.feed(_step(10))  # a later step closes it
    assert [(a.kind, a.step) for a in out] == [("vanishing", 0)]


def test_metric_lines_give_the_same_alarms_as_tidy_rows():
    from resgrad.probes.names import metric_dict

    stream = [_step(s, units=[1e-6, 1e-3, 0.5, 1.0], params={"stem": 1.0, "fc": 0.0 if s >= 20 else 1.0})
              for s in STEPS[:40]]
    lines = [{"step": rows[0]["step"], **metric_dict(rows)} for rows in stream]
    back = [rows_of(line) for line in lines]
    _, tidy = _run(stream)
    _, metric = _run(back)
    assert [(a.kind, a.step, a.since) for a in metric] == [(a.kind, a.step, a.since) for a in tidy]
    assert [a.kind for a in tidy] == ["vanishing", "dead"]
