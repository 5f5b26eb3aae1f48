"""Measures of a training history, torch-free: gradient spikes, steps to a target loss, a t-interval.

- :func:`grad_spikes`: steps whose total gradient norm exceeds ``k`` times the running median of
  the ``window`` steps before it (Kim et al. 2025, arXiv 2502.02732, count spikes of the gradient
  norm against its recent level; the median, not the mean, so one spike does not raise the bar
  for the next).
- :func:`steps_to_target`: the first step at which the trailing mean of the per-step training
  loss over ``smooth`` steps is at or below ``target`` (He and Hofmann 2023, arXiv 2302.10322,
  compare the iterations two designs need to reach one loss).
- :func:`mean_ci`: mean and Student-t interval over seeds (``resgrad.stats.t_interval``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import stats

__all__ = ["SPIKE_K", "SPIKE_WINDOW", "SPIKE_MIN_HISTORY", "SMOOTH_STEPS", "grad_spikes", "smoothed",
           "steps_to_target", "mean_ci"]

# A spike is a step whose gradient norm is more than 10x the median of the steps before it: an
# order of magnitude, far beyond the step-to-step wobble of a stable run (measured here: a pre-LN
# LM's per-step norm stays within about 2x of its running median after the first tens of steps).
SPIKE_K = 10.0
SPIKE_WINDOW = 50  # steps in the running median (about half an epoch of the default LM)
SPIKE_MIN_HISTORY = 10  # no step is judged before this many steps give a median to judge it by
SMOOTH_STEPS = 20  # steps in the trailing mean of the training loss before it is compared with a target


def grad_spikes(norms: Sequence[float | None], *, k: float = SPIKE_K, window: int = SPIKE_WINDOW,
                min_history: int = SPIKE_MIN_HISTORY) -> list[int]:
    """Indices of the steps whose norm is > ``k`` x the median of the (finite) ``window`` norms before it.

    A non-finite norm is a spike (it is what a divergence starts with) once there is a median.
    """
    if k <= 0 or window < 1 or min_history < 1:
        raise ValueError(f"k must be > 0 and window, min_history >= 1, received {k}, {window}, {min_history}")
    out = []
    for i, g in enumerate(norms):
        prev = [v for v in norms[max(0, i - window):i] if v is not None and math.isfinite(v)]
        if len(prev) < min_history:
            continue
        med = stats.median(prev)
        if g is None or not math.isfinite(g) or g > k * med:
            out.append(i)
    return out


def smoothed(losses: Sequence[float | None], smooth: int = SMOOTH_STEPS) -> list[float | None]:
    """Trailing mean over ``smooth`` steps (fewer at the start); None from the first non-finite loss on."""
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, received {smooth}")
    out: list[float | None] = []
    bad = False
    for i in range(len(losses)):
        v = losses[i]
        bad = bad or v is None or not math.isfinite(v)
        if bad:
            out.append(None)
            continue
        w = losses[max(0, i - smooth + 1): i + 1]
        out.append(math.fsum(w) / len(w))  # type: ignore[arg-type]
    return out


def steps_to_target(losses: Sequence[float | None], target: float | None, smooth: int = SMOOTH_STEPS) -> int | None:
    """Steps taken (1-based: the step count) when the smoothed loss first reaches ``target``; None if never."""
    if target is None or not math.isfinite(target):
        return None
    for i, v in enumerate(smoothed(losses, smooth)):
        if v is not None and v <= target:
            return i + 1
    return None


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> dict[str, Any]:
    """Mean, standard deviation and the t-interval over the finite ``values`` (seeds); n counts all."""
    fin = [float(v) for v in values if v is not None and math.isfinite(v)]
    ci = stats.t_interval(fin, level) if len(fin) >= 2 else None
    return {"mean": stats.mean(fin) if fin else None, "std": stats.std(fin) if fin else None,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None, "level": level,
            "n": len(values), "n_finite": len(fin)}
