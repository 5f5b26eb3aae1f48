"""The unraveled view of residual nets (Veit, Wilber, Belongie 2016, arXiv 1605.06431).

``n`` residual blocks are ``2^n`` paths with Binomial(n, 1/2) lengths. This package
counts them (:mod:`.counting`), splits the gradient exactly by path length
(:mod:`.decompose`), samples single-path magnitudes as Veit et al. did, vectorised
(:mod:`.sampling`), and deletes or reorders blocks at test time (:mod:`.lesion`).
Every tool needs resgrad blocks: native nets, or foreign ones through ``resgrad.adapt``.
"""

from .counting import EffectiveRange, counts, fraction, path_window, window
from .decompose import Decomposition, decompose
from .lesion import (
    deleted,
    error_rate,
    k_deletions,
    kendall_tau,
    random_swaps,
    reorder_curve,
    reordered,
    single_deletions,
    stages,
    swap_groups,
)
from .sampling import NOTE, Sampled, sample, sample_loop

# Why the exact and the sampled effective ranges differ (shown beside both in results).
CANCELLATION = (
    "The exact view measures ||sum of all paths of length k||; the sampled view (Veit et al. "
    "2016, §5) adds single-path magnitudes, count_k x mean ||path||. Paths of the same length "
    "point in different directions and partly cancel, so the exact per-length gradient is "
    "smaller than the sampled total (triangle inequality), and the more so the more paths "
    "a length has: the exact window can sit elsewhere and hold a different share of paths."
)

__all__ = [
    "EffectiveRange", "counts", "fraction", "path_window", "window",
    "Decomposition", "decompose",
    "Sampled", "sample", "sample_loop", "NOTE",
    "deleted", "reordered", "error_rate", "swap_groups", "random_swaps", "kendall_tau", "stages",
    "single_deletions", "k_deletions", "reorder_curve",
    "CANCELLATION",
]
