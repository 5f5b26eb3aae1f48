"""Judgements on measured numbers: plain functions with named thresholds -> small verdict records.

Judgements (vanishing / healthy / exploding, degraded, agrees / contradicts a paper) are
functions with named thresholds returning verdict records; the report only words them. Every
threshold is a module constant with the reason for its value. Torch-free: the experiments, the
CLI and the report all import it. One module per experiment, mirroring ``resgrad.results``:

| module | judges |
| --- | --- |
| verdicts/flow.py | gradient flow at initialisation, shattering, the Jacobian spectrum |
| verdicts/degradation.py | degradation with depth, He et al. 2015 Table 6 |
| verdicts/ensemble.py | effective paths, path decay, lesions, deletion, reordering |
| verdicts/transformer.py | pre-LN vs post-LN vs no skip |
| verdicts/designs.py | the residual designs of today against their papers |
| verdicts/pretrained.py | pretrained models on real text |
| verdicts/diagnose.py | diagnose's thresholds |
| verdicts/study.py | the study's measured answer, over the others' records |
| verdicts/alarms.py | alarms on GradientMonitor rows while a model trains |

A record's ``relation`` is "agrees", "partly", "contradicts" (with the paper named in its
docstring) or None where no comparison can be made (non-finite numbers, too few points).
Records hold the numbers they were judged on, so a sentence needs nothing else.
``from resgrad.verdicts import X`` works for every name of every module.
"""

from __future__ import annotations

from . import alarms, degradation, designs, diagnose, ensemble, flow, pretrained, study, transformer
from ._base import MIN_FIT_POINTS, FlowLabel, Relation, finite
from .alarms import *  # noqa: F403
from .degradation import *  # noqa: F403
from .designs import *  # noqa: F403
from .diagnose import *  # noqa: F403
from .ensemble import *  # noqa: F403
from .flow import *  # noqa: F403
from .pretrained import *  # noqa: F403
from .study import *  # noqa: F403
from .transformer import *  # noqa: F403

__all__ = ["Relation", "FlowLabel", "MIN_FIT_POINTS", "finite",
           *flow.__all__, *degradation.__all__, *ensemble.__all__, *diagnose.__all__, *transformer.__all__,
           *study.__all__, *alarms.__all__, *designs.__all__, *pretrained.__all__]
