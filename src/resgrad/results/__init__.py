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

``load(path)`` reads and validates any of them (the envelope names the type).
"""

from ._schema import Num, Record, Result, ResultError, load, read_file, result_types
from .degradation import DegradationResult
from .diagnose import DiagnoseResult
from .ensemble import EnsembleResult
from .flow import FlowResult
from .study import StudyResult
from .sweep import SweepResult
from .transformer import TransformerResult

__all__ = ["Record", "Result", "ResultError", "Num", "load", "read_file", "result_types",
           "FlowResult", "DegradationResult", "EnsembleResult", "DiagnoseResult", "StudyResult",
           "SweepResult", "TransformerResult"]
