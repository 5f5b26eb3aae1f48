"""The report: typed results -> figures + one self-contained HTML file.

Reads results only; never trains or measures. No torch here (tests/test_leaves.py checks it in a
fresh interpreter). It also draws the figures the CLI writes beside a run (``cli_figures``).

Layout: ``html`` (render, to_html) loops over the parts ``registry`` holds; each experiment's
``sections/<name>.py`` registers its part (its verdicts module, its ``findings/<name>.py`` and its
HTML section); ``page`` holds the pieces every page is built of and the one page shell.
"""

from __future__ import annotations

from .cli_figures import diagnose_figure, flow_figures, lesion_figure, paths_figure, save_figure
from .findings import findings
from .html import render, render_run, to_html

__all__ = ["render", "render_run", "to_html", "findings", "paths_figure", "lesion_figure", "diagnose_figure",
           "flow_figures", "save_figure"]
