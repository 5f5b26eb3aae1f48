"""StudyResult: the main job, its experiments in one file (``resgrad study``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..schema import Record, Result
from .degradation import DegradationResult
from .designs import DesignsResult
from .ensemble import EnsembleResult
from .flow import FlowResult
from .pretrained import PretrainedResult
from .transformer import TransformerResult

__all__ = ["StudyResult", "Timing"]


@dataclass
class Timing(Record):
    started: str  # ISO 8601, UTC
    finished: str
    seconds: dict[str, float]  # per stage and "total"


@dataclass
class StudyResult(Result):
    SCHEMA = "resgrad.study"
    VERSION = 1
    EXPERIMENT = "study"

    preset: str
    config: dict[str, Any]  # the StudyConfig as a dict
    environment: dict[str, Any]
    timing: Timing
    flow: FlowResult
    degradation: DegradationResult
    ensemble: EnsembleResult
    transformer: TransformerResult | None = None  # the Transformer stage (None: a preset without it, or 0.1)
    designs: DesignsResult | None = None  # the designs at initialisation (None: a study before issue 21)
    pretrained: PretrainedResult | None = None  # the pretrained-models stage (None: a preset or version without it)
