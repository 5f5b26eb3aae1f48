"""Alarms in words: the report's verdicts (vanishing, exploding, dead layers, non-finite origin)
judged on a rolling window of GradientMonitor rows while a model trains.

:class:`AlarmWatch` is fed the monitor's tidy rows (``step, name, kind, block, norm, ...``)
step by step and returns each :class:`Alarm` the first time its condition holds, once per
kind (a run that vanishes at step 300 says so once, not at every later step). Torch-free:
the training callback (``resgrad.probes.alarms``) and ``resgrad watch`` share this code, so
the page shows the same alarms the training log printed.

The kinds, with the thresholds of :class:`AlarmThresholds` (module constants below):

- ``vanishing``: a unit's gradient has been at most ``10^-vanishing_decades`` of the last
  unit's (the unit nearest the loss) at every measured step for ``window`` steps. The
  per-unit value is ‖∂L/∂x_l‖ at the unit's input (He et al. 2016, arXiv 1603.05027, Eq. 5),
  the monitor's ``input`` rows; without them the unit's parameter gradients, then each
  layer's. The flow experiment calls a net vanishing at the same 2 decades.
- ``exploding``: the same ratio at least ``10^exploding_decades``: the gradient grows toward
  the input.
- ``growing``: the total gradient norm has grown ``10^growing_decades`` times within
  ``window`` steps (exploding in time rather than in depth).
- ``dead``: every parameter of a layer has had a gradient ‖∂L/∂w‖ <= ``dead_norm`` (or none
  at all) at every measured step for ``window`` steps: nothing reaches it.
- ``non-finite``: the first step with a NaN/Inf gradient, at the module where it first
  appeared (the monitor's ``nonfinite_origin`` row); fires at once, no window.

"For ``window`` steps" means: the condition held at every measured step from some step
``s0`` to the current step ``t``, and ``t - s0 >= window`` (``window=0``: at the first such step).
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .._checks import is_int, is_number
from .flow import FLOW_THRESHOLD_DECADES

__all__ = ["ALARM_KINDS", "ALARM_WINDOW_STEPS", "VANISHING_DECADES", "EXPLODING_DECADES", "GROWING_DECADES",
           "DEAD_NORM", "AlarmThresholds", "Alarm", "AlarmWatch", "unit_values"]

ALARM_KINDS = ("vanishing", "exploding", "growing", "dead", "non-finite")

# Steps a condition must hold before it is called. Long enough that what is expected early in
# training passes without an alarm: a zero-initialised residual branch (Goyal et al. 2017,
# arXiv 1706.02677, §5.1) gives its inner layers zero gradient only until the first SGD step
# moves its last scale, and the gradient's scale settles over a warm-up of a few hundred steps
# (He et al. 2015 warm up ResNet-110 for 400 iterations, arXiv 1512.03385 §4.2).
ALARM_WINDOW_STEPS = 200
# A unit's gradient this many decades below (above) the last unit's is vanishing (exploding):
# the threshold the flow experiment and the report judge a whole net by (verdicts/flow.py).
VANISHING_DECADES = FLOW_THRESHOLD_DECADES
EXPLODING_DECADES = FLOW_THRESHOLD_DECADES
# The total gradient norm growing this many decades within the window: exploding in time.
GROWING_DECADES = FLOW_THRESHOLD_DECADES
# A layer whose every parameter gradient norm is at most this is dead (0: exactly zero, as the
# diagnose table's "zero" flag; raise it to call near-zero gradients dead too).
DEAD_NORM = 0.0


@dataclass(frozen=True)
class AlarmThresholds:
    """The alarms' thresholds, each overridable: ``AlarmThresholds(window=50)``."""

    window: int = ALARM_WINDOW_STEPS  # steps a condition must hold
    vanishing_decades: float = VANISHING_DECADES  # log10 of (last unit's gradient / this unit's)
    exploding_decades: float = EXPLODING_DECADES  # log10 of (this unit's gradient / last unit's)
    growing_decades: float = GROWING_DECADES  # log10 of the total gradient norm's growth within the window
    dead_norm: float = DEAD_NORM  # ‖∂L/∂w‖ at or below which a parameter receives nothing

    def __post_init__(self) -> None:
        if not is_int(self.window) or self.window < 0:
            raise ValueError(f"alarm window must be an integer >= 0 (steps), received {self.window!r}")
        for name in ("vanishing_decades", "exploding_decades", "growing_decades"):
            v = getattr(self, name)
            if not is_number(v) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"alarm threshold {name} must be a number > 0 (decades), received {v!r}")
        if not is_number(self.dead_norm) or not math.isfinite(self.dead_norm) or self.dead_norm < 0:
            raise ValueError(f"alarm threshold dead_norm must be a number >= 0, received {self.dead_norm!r}")

    @classmethod
    def of(cls, thresholds: AlarmThresholds | None = None, **overrides: Any) -> AlarmThresholds:
        """``thresholds`` (default: the module constants) with ``overrides`` applied; an unknown
        name is one line listing the known ones."""
        base = cls() if thresholds is None else thresholds
        if not isinstance(base, AlarmThresholds):
            raise TypeError(f"thresholds must be an AlarmThresholds, received {type(base).__name__}")
        known = [f.name for f in fields(cls)]
        bad = [k for k in overrides if k not in known]
        if bad:
            raise TypeError(f"unknown alarm threshold {bad[0]!r}; choose from {', '.join(known)}")
        return replace(base, **overrides) if overrides else base


@dataclass(frozen=True)
class Alarm:
    """One alarm: its kind, the step it fired at, what it names, since when it held, in words."""

    kind: str  # one of ALARM_KINDS
    step: int  # the measured step at which it fired
    name: str  # the unit or layer it names
    since: int  # the first step of the run of steps it held for
    value: float | None  # the ratio (vanishing/exploding), growth factor, or NaN/Inf count
    message: str  # one line, starting "step N:"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(v: float) -> str:
    """1e-06, 3e+02: a ratio to one significant figure, in the decades it is judged by."""
    if v == 0:
        return "0"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def _ok(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def _owner(param: str) -> str:
    """The module a parameter row belongs to (``fc`` for ``fc.weight``); a row already named by
    its unit (the monitor's ``per="unit"`` rows: ``blocks.3``, ending in an index) stays as it is."""
    head, _, last = param.rpartition(".")
    return head if head and not last.isdigit() else param


def unit_values(rows: Iterable[dict[str, Any]]) -> list[tuple[str, str, float | None]]:
    """One step's per-unit gradient, nearest the input first: ``(key, label, value)``.

    ``input`` rows (‖∂L/∂x_l‖ at each unit's input) when there are any; else the unit's
    parameter gradients, ``sqrt(sum ‖∂L/∂w‖²)`` per block; else per layer (a parameter's
    owner module, in the order the rows list them).
    """
    rows = list(rows)
    inputs = {r["block"]: r for r in rows if r.get("kind") == "input" and is_int(r.get("block"))
              and "#" not in str(r.get("name"))}
    if len(inputs) >= 2:
        return [(f"unit {b}", f"unit {b} ({inputs[b]['name']})", inputs[b].get("norm")) for b in sorted(inputs)]
    params = [r for r in rows if r.get("kind") == "param"]
    by_block: dict[int, list[float]] = defaultdict(list)
    for r in params:
        if is_int(r.get("block")) and _ok(r.get("norm")):
            by_block[r["block"]].append(r["norm"])
    if len(by_block) >= 2:
        return [(f"unit {b}", f"unit {b}", math.sqrt(sum(v * v for v in by_block[b]))) for b in sorted(by_block)]
    by_layer: dict[str, list[float]] = {}
    for r in params:
        if _ok(r.get("norm")):
            by_layer.setdefault(_owner(str(r["name"])), []).append(r["norm"])
    return [(f"layer {n}", f"layer {n!r}", math.sqrt(sum(v * v for v in vs))) for n, vs in by_layer.items()]


class AlarmWatch:
    """Judge monitor rows as they arrive; :meth:`feed` returns the alarms that fire.

    Rows of one step may come in several calls: a step is judged when a row of a later step
    arrives, or on :meth:`flush` (call it when you know the step is complete, as the training
    callback does after each measured step). Each kind fires once; :attr:`fired` keeps them.
    """

    def __init__(self, thresholds: AlarmThresholds | None = None, **overrides: Any) -> None:
        self.thresholds = AlarmThresholds.of(thresholds, **overrides)
        self.fired: list[Alarm] = []
        self._kinds: set[str] = set()
        self._open: list[dict[str, Any]] = []  # rows of the step not judged yet
        self._open_step: int | None = None
        self._last_step: int | None = None
        # (kind, subject) -> [first step of the run, the bound over the run, label, reference label]
        self._runs: dict[tuple[str, str], list[Any]] = {}
        self._totals: deque[tuple[int, float]] = deque()  # (step, total gradient norm) within the window

    # -- feeding ------------------------------------------------------------------------

    def feed(self, rows: Iterable[dict[str, Any]]) -> list[Alarm]:
        """Take rows in step order; judge every step that is complete; return the new alarms."""
        new: list[Alarm] = []
        for r in rows:
            step = r.get("step")
            if not is_int(step) or "kind" not in r:
                continue  # not a monitor row (a histogram line, an alarm event)
            if self._open_step is not None and step != self._open_step:
                new += self._judge()
            self._open_step = step
            self._open.append(r)
        return new

    def flush(self) -> list[Alarm]:
        """Judge the rows of the step still open."""
        return self._judge() if self._open else []

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to go on where this one stopped (JSON-able)."""
        self.flush()
        return {"fired": [a.to_dict() for a in self.fired],
                "runs": [[k, s, *v] for (k, s), v in self._runs.items()],
                "totals": [list(t) for t in self._totals], "last_step": self._last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fired = [Alarm(**a) for a in state.get("fired", [])]
        self._kinds = {a.kind for a in self.fired}
        self._runs = {(k, s): list(v) for k, s, *v in state.get("runs", [])}
        self._totals = deque((int(s), float(v)) for s, v in state.get("totals", []))
        self._last_step = state.get("last_step")
        self._open, self._open_step = [], None

    # -- judging ------------------------------------------------------------------------

    def _judge(self) -> list[Alarm]:
        rows, step = self._open, self._open_step
        self._open, self._open_step = [], None
        assert step is not None
        if self._last_step is not None and step < self._last_step:
            return []  # an older step than one judged already (a file replayed): nothing new
        self._last_step = step
        th = self.thresholds
        out: list[Alarm] = []
        out += self._nonfinite(step, rows)
        # A kind that fired is not judged again (each fires once), which keeps a long file's replay cheap.
        ratios = not {"vanishing", "exploding"} <= self._kinds
        units = unit_values(rows) if ratios else []
        if len(units) >= 2 and _ok(units[-1][2]) and units[-1][2] > 0:
            last_key, last_label, ref = units[-1]
            lo, hi = 10.0 ** -th.vanishing_decades, 10.0 ** th.exploding_decades
            for key, label, v in units[:-1]:
                if not _ok(v):
                    continue
                ratio = v / ref
                self._track("vanishing", key, ratio <= lo, step, ratio, max, label, last_label)
                self._track("exploding", key, ratio >= hi, step, ratio, min, label, last_label)
        out += self._fire_ratio("vanishing", step, "at most", "of", f"{th.vanishing_decades:g} decades below it")
        out += self._fire_ratio("exploding", step, "at least", "times", f"{th.exploding_decades:g} decades above it")
        out += self._growing(step, rows)
        out += self._dead(step, rows)
        return out

    def _track(self, kind: str, key: str, holds: bool, step: int, value: float, keep: Any, label: str,
               ref: str = "") -> None:
        run = self._runs.get((kind, key))
        if not holds:
            self._runs.pop((kind, key), None)
        elif run is None:
            self._runs[(kind, key)] = [step, value, label, ref]
        else:
            run[1] = keep(run[1], value)

    def _due(self, kind: str, step: int) -> list[tuple[str, list[Any]]]:
        if kind in self._kinds:
            return []
        return [(k, run) for (kd, k), run in self._runs.items() if kd == kind and step - run[0] >= self.thresholds.window]

    def _fire(self, kind: str, step: int, name: str, since: int, value: float | None, message: str) -> Alarm:
        a = Alarm(kind, step, name, since, value, f"step {step}: {message}")
        self._kinds.add(kind)
        self.fired.append(a)
        return a

    def _fire_ratio(self, kind: str, step: int, bound: str, rel: str, rule: str) -> list[Alarm]:
        due = self._due(kind, step)
        if not due:
            return []
        pick = min if kind == "vanishing" else max
        key, (since, value, label, ref) = pick(due, key=lambda t: t[1][1])
        rest = len(due) - 1
        more = f"; {rest} more unit{'s' * (rest != 1)} too" if rest else ""
        unit = "unit" if key.startswith("unit") else "layer"
        words = (f"{label}'s gradient has been {bound} {_fmt(value)} {rel} the last {unit}'s, {ref}, "
                 f"for {step - since} steps ({kind}: {rule}){more}")
        return [self._fire(kind, step, label, since, value, words)]

    def _growing(self, step: int, rows: list[dict[str, Any]]) -> list[Alarm]:
        if "growing" in self._kinds:
            return []
        norms = [r["norm"] for r in rows if r.get("kind") == "param" and _ok(r.get("norm"))]
        if not norms:
            norms = [v for _, _, v in unit_values(rows) if _ok(v)]
        if not norms:
            return []
        total = math.sqrt(sum(v * v for v in norms))
        th = self.thresholds
        while self._totals and step - self._totals[0][0] > th.window:
            self._totals.popleft()
        earlier = [t for t in self._totals if t[1] > 0]
        self._totals.append((step, total))
        if "growing" in self._kinds or not earlier:
            return []
        s0, g0 = min(earlier, key=lambda t: t[1])
        factor = total / g0
        if factor < 10.0 ** th.growing_decades:
            return []
        return [self._fire("growing", step, "total", s0, factor, (
            f"the gradient norm has grown {_fmt(factor)} times in {step - s0} steps (from {g0:.3g} at step {s0} "
            f"to {total:.3g}; growing: {th.growing_decades:g} decades within {th.window} steps)"))]

    def _dead(self, step: int, rows: list[dict[str, Any]]) -> list[Alarm]:
        if "dead" in self._kinds:
            return []
        layers: dict[str, list[Any]] = {}
        for r in rows:
            if r.get("kind") == "param":
                layers.setdefault(_owner(str(r["name"])), []).append(r.get("norm"))
        lim = self.thresholds.dead_norm
        for name, norms in layers.items():
            none = all(v is None for v in norms)
            holds = all(v is None or (_ok(v) and v <= lim) for v in norms)
            self._track("dead", name, holds, step, 0.0 if none else max(v for v in norms if v is not None),
                        max, name, "no gradient at all" if none else "")
        due = self._due("dead", step)
        if not due:
            return []
        order = list(layers)
        due.sort(key=lambda t: order.index(t[0]) if t[0] in order else len(order))
        key, (since, value, _, how) = due[0]
        rest = [k for k, _ in due[1:]]
        what = "no gradient at all" if how else ("a zero gradient" if lim == 0 else f"a gradient of at most {lim:g}")
        more = (f"; {len(rest)} more dead layer{'s' * (len(rest) != 1)}: {', '.join(rest[:4])}"
                f"{' ...' if len(rest) > 4 else ''}") if rest else ""
        return [self._fire("dead", step, key, since, value,
                           f"layer {key!r} has had {what} for {step - since} steps (dead){more}")]

    def _nonfinite(self, step: int, rows: list[dict[str, Any]]) -> list[Alarm]:
        if "non-finite" in self._kinds:
            return []
        origin = next((r for r in rows if r.get("kind") == "nonfinite_origin"), None)
        if origin is not None:
            count = origin.get("nonfinite") or 0
            numel = origin.get("numel")
            of = f" of {numel}" if numel else ""
            return [self._fire("non-finite", step, str(origin["name"]), step, float(count),
                               f"the first non-finite gradient appeared at {origin['name']!r} "
                               f"({count} NaN/Inf{of}); everything before it in the backward only inherits it")]
        bad = [r for r in rows if r.get("kind") in ("param", "activation", "input") and (r.get("nonfinite") or 0) > 0]
        if not bad:
            return []
        first = bad[-1]  # the last listed parameter is the first its backward reaches
        return [self._fire("non-finite", step, str(first["name"]), step, float(sum(r["nonfinite"] for r in bad)),
                           f"non-finite gradients in {len(bad)} row{'s' * (len(bad) != 1)}, nearest the loss "
                           f"{first['name']!r} ({first['nonfinite']} NaN/Inf)")]
