"""The report: typed results -> figures + one self-contained HTML file.

Reads results only; never trains or measures (DESIGN.md). No torch here. It also draws the
figures the CLI writes beside a run (``cli_figures``).
"""

from __future__ import annotations

from .cli_figures import diagnose_figure, flow_figures, lesion_figure, paths_figure, save_figure
from .findings import findings
from .html import render, render_run, to_html

__all__ = ["render", "render_run", "to_html", "findings", "paths_figure", "lesion_figure", "diagnose_figure",
           "flow_figures", "save_figure"]
