"""``resgrad report``: re-render a run folder's report.html from its results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import console, guarded

__all__ = ["command"]


@guarded
def command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder holding results.json (e.g. runs/study).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the HTML (default: RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Render the self-contained HTML report of a run from its results.json.

    Reads results only: nothing is trained or measured again.

    Examples:
      resgrad report runs/study
      resgrad report runs/study --out /tmp/report.html
    """
    from resgrad.report import render_run

    path = render_run(run_dir, out)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)
