"""diagnose: the thresholds of its named causes. Used by experiments/diagnose.py.
"""

from __future__ import annotations

__all__ = ['DEAD_RELU_FRACTION']

# A ReLU layer is "dead" when more than this share of its units never fire over the batch
# (a unit: one output element, all but the batch dim). At a random init about half the
# pre-activations are positive per example, so over a batch of B the share never active is
# ~2^-B: above one half only when something (a large negative bias, a collapsed input) is wrong.
DEAD_RELU_FRACTION = 0.5
