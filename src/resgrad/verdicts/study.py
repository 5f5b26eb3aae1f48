"""The study's measured answer: one judgement over the other experiments' verdict records.

Do residual connections solve the vanishing-gradient problem here? The answer combines the
twins' flow verdicts (where a plain net's gradient vanished, did its residual twin's?), the
deepest plain net of the He et al. setting beside its twin, degradation with depth and the
effective-path window. Each input is a record of verdicts/flow.py, degradation.py or
ensemble.py; this module decides only which of the answer's clauses hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .degradation import DegradationVerdict
from .ensemble import WindowVerdict
from .flow import DeepestFlow, TwinsVerdict
from .transformer import StreamVerdict

__all__ = ["StudyVerdict", "study_verdict"]

Training = Literal["residual-trains", "plain-trains", "both-degrade", "unclear"]


@dataclass(frozen=True)
class StudyVerdict:
    """The records the answer rests on and what they say together (None: not measured)."""

    twins: TwinsVerdict | None  # every vanishing plain net and its twin, over the whole grid
    deepest: DeepestFlow | None  # the headline setting's deepest plain net and its twin
    plain: DegradationVerdict | None
    residual: DegradationVerdict | None
    training: Training | None  # residual-trains: plain degrades, residual does not; plain-trains: no degradation
    window: WindowVerdict | None
    short_paths: bool | None  # the window agrees with Veit et al. 2016: the gradient travels along short paths
    stream: StreamVerdict | None  # the Transformer stage's residual stream, where there is one


def study_verdict(twins: TwinsVerdict | None, deepest: DeepestFlow | None, plain: DegradationVerdict | None,
                  residual: DegradationVerdict | None, window: WindowVerdict | None,
                  stream: StreamVerdict | None = None) -> StudyVerdict:
    """Combine the records; the training clause needs the plain verdict, the path clause the window."""
    training: Training | None = None
    if plain is not None:
        if plain.degraded and residual is not None and not residual.degraded:
            training = "residual-trains"
        elif not plain.degraded:
            training = "plain-trains"
        elif residual is not None and residual.degraded:
            training = "both-degrade"
        else:
            training = "unclear"
    short = None if window is None or window.relation is None else window.relation == "agrees"
    return StudyVerdict(twins, deepest, plain, residual, training, window, short, stream)
