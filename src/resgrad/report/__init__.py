"""The report: results JSON -> figures + one self-contained HTML file.

Reads results only; never trains or measures (DESIGN.md). No torch here.
"""

from __future__ import annotations

from .findings import findings
from .html import render, render_run, to_html

__all__ = ["render", "render_run", "to_html", "findings"]
