"""One HTML section module per experiment, mirroring ``resgrad.results``; each registers its part.

A part's ``order`` (in its module's ``register`` line) places its section on the page. study.py
frames them (question, findings, setup, references); sweep.py is the sweep's page.
"""

from __future__ import annotations

from . import degradation, designs, ensemble, flow, pretrained, transformer  # noqa: F401  - importing registers each part
