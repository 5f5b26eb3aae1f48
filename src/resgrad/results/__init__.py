"""Typed results, one file per experiment; torch-free, so the report reads them too.

| schema | type | file |
| --- | --- | --- |
| resgrad.flow | FlowResult | results/flow.py |
| resgrad.degradation | DegradationResult | results/degradation.py |
| resgrad.ensemble | EnsembleResult | results/ensemble.py |
| resgrad.diagnose | DiagnoseResult | results/diagnose.py |
| resgrad.study | StudyResult | results/study.py |
| resgrad.sweep | SweepResult | results/sweep.py |
| resgrad.transformer | TransformerResult | results/transformer.py |
| resgrad.designs | DesignsResult | results/designs.py |
| resgrad.pretrained | PretrainedResult | results/pretrained.py |

``load(path)`` reads and validates any of them (the envelope names the type).
"""

from __future__ import annotations

import os
from typing import TypeVar

from ..schema import Num, Record, Result, ResultError, envelope, read_file, registered
from .degradation import DegradationResult
from .designs import DesignsResult
from .diagnose import DiagnoseResult
from .ensemble import EnsembleResult
from .flow import FlowResult
from .pretrained import PretrainedResult
from .study import StudyResult
from .sweep import SweepResult
from .transformer import TransformerResult

__all__ = ["Record", "Result", "ResultError", "Num", "load", "read_file", "result_types",
           "FlowResult", "DegradationResult", "EnsembleResult", "DiagnoseResult", "StudyResult",
           "SweepResult", "TransformerResult", "DesignsResult", "PretrainedResult"]

R = TypeVar("R", bound=Result)


def result_types() -> dict[str, type[Result]]:
    """Every result type by schema name (each registers itself when its module is imported, above)."""
    return registered()


def load(path: str | os.PathLike, cls: type[R] | None = None) -> R:
    """Read and validate a results file: as ``cls``, or as the type its envelope names."""
    d = read_file(path)
    if not isinstance(d, dict):
        raise ResultError(f"{path} holds a {type(d).__name__}, expected a results object; re-run the experiment "
                          "to rewrite it, or restore the file as it was written")
    if cls is None:
        schema, _ = envelope(d)
        types_ = result_types()
        if schema not in types_:
            raise ResultError(f"{path} is not a resgrad results file (schema {schema!r}; known: "
                              f"{', '.join(sorted(types_))})")
        cls = types_[schema]  # type: ignore[assignment]
    assert cls is not None
    return cls.from_json(d, source=str(path))
