"""Findings: the verdict records of :mod:`resgrad.verdicts`, put into words.

``findings(result)`` judges nothing itself: each finding words one verdict record, and
every number in its sentence comes from that record (or the typed record it holds). A
:class:`Finding` has ``id, section, sentence, numbers, paper, claim, relation, verdict``;
``verdict`` is the record, ``relation`` its relation to the cited paper. One module per
experiment, mirroring ``resgrad.results``; the study's answer (an :class:`Answer`) in study.py.
"""

from __future__ import annotations

from ._base import Answer, Finding
from .degradation import degradation_findings
from .designs import designs_findings
from .ensemble import ensemble_findings
from .flow import flow_findings
from .study import answer, findings
from .transformer import transformer_findings

__all__ = ["findings", "Finding", "Answer", "answer", "flow_findings", "degradation_findings",
           "ensemble_findings", "transformer_findings", "designs_findings"]
