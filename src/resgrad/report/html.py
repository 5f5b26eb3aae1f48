"""One self-contained HTML report from a typed result: figures inline, no network.

``render(result, out_path)`` writes it atomically; ``render_run(run_dir)`` re-renders
``run_dir/report.html`` from ``run_dir/results.json`` (read with ``resgrad.results.load``).
``result`` is a StudyResult or any registered experiment's result (report/sections/), or its
parsed JSON (validated first); a SweepResult gets its own page. ``to_html`` loops over the
registered parts the result holds: a core part it lacks is said to be missing, another part
appears only where there is one; a non-core part alone gets its own section, findings, setup
and references. The report reads results only: it never trains or measures.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Any

from resgrad.io import atomic_write
from resgrad.results import StudyResult, load
from resgrad.results.sweep import SweepResult

from . import page as P
from ._read import Reportable, as_result, sections
from .findings import Answer, findings
from .registry import parts
from .sections import study as S
from .sections import sweep as _sweep

__all__ = ["render", "render_run", "to_html"]

TITLE = "resgrad report — do residual connections solve the vanishing-gradient problem?"
HEADING = "Do residual connections solve the vanishing-gradient problem?"


def render(result: Reportable | SweepResult | dict[str, Any], out_path: str | os.PathLike) -> Path:
    """Write the report for ``result`` to ``out_path`` atomically; return the path."""
    text = to_html(result)
    return atomic_write(out_path, lambda f: f.write(text.encode("utf-8")), mode="wb")


def render_run(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Re-render ``run_dir/report.html`` (or ``out_path``) from ``run_dir/results.json``.

    A missing folder or file is a FileNotFoundError, a bad file a one-line ResultError naming it.
    """
    run_dir = Path(run_dir)
    src = run_dir / "results.json"
    if not src.is_file():
        what = "does not exist" if not run_dir.exists() else "has no results.json"
        raise FileNotFoundError(
            f"{run_dir} {what}; pass the folder a run wrote (e.g. runs/study), or run `resgrad study --out {run_dir}`")
    loaded = load(src)
    result = loaded if isinstance(loaded, SweepResult) else as_result(loaded, source=str(src))
    return render(result, out_path if out_path is not None else run_dir / "report.html")


def _answer_box(a: Answer) -> str:
    return (f'<div class="answer"><p><span class="label">{escape(a.lead)}:</span> '
            f'{escape(a.verdict_text)}.</p><ul>'
            + "".join(f"<li>{P.linkify(escape(c))}</li>" for c in a.evidence)
            + f'</ul><p class="muted">{escape(a.hedge)} See <a href="#findings">Findings</a>.</p></div>')


def to_html(result: Reportable | SweepResult | dict[str, Any]) -> str:
    """The whole report as one HTML string (pure: reads ``result`` only; a dict is validated first)."""
    if isinstance(result, dict) and result.get("schema") == SweepResult.SCHEMA:
        result = SweepResult.from_json(result)
    if isinstance(result, SweepResult):  # a sweep folder: its own page (report/sections/sweep.py)
        return _sweep.page(result)
    r = as_result(result)
    s = sections(r)
    found = findings(r)
    registered = parts()
    alone = next((p for p in registered if not p.core and isinstance(r, p.type)), None)  # e.g. a transformer run
    layout: list[tuple[str, str]] = [] if alone else [("question", S.TITLES["question"])]
    for p in registered:
        held = getattr(s, p.key) is not None
        if (p is alone) if alone else (p.core or held):
            layout.append((p.key, p.title))
    layout += [(k, S.TITLES[k]) for k in ("findings", "setup", "references")]
    by_key = {p.key: p for p in registered}
    shown = {k for k, _ in layout}
    toc, secs = [], []
    for i, (sid, title) in enumerate(layout, 1):
        p = by_key.get(sid)
        miss = p is not None and p.core and getattr(s, sid) is None
        if sid == "question":
            body = S.question()
        elif sid == "findings":
            body = S.findings_list(found)
        elif sid == "setup":
            body = S.setup(r, s)
        elif sid == "references":
            body = S.references(shown)
        else:
            assert p is not None
            body = p.section(getattr(s, sid), found)
        toc.append(f'<li><a href="#{sid}">{escape(title)}</a>{" <span class=miss>(missing)</span>" if miss else ""}</li>')
        secs.append(f'<section id="{sid}"><h2>{i}. {escape(title)}</h2>\n{body}\n</section>')
    answer = next((f for f in found if isinstance(f, Answer)), None)
    if answer is not None:
        answer_html = _answer_box(answer)
    elif alone is not None and alone.headline is not None:
        answer_html = alone.headline(found)
    else:
        answer_html = ('<div class="answer"><p>No measured answer: the results hold no gradient-flow, degradation or '
                       'ensemble measurements.</p></div>')
    missing = [] if alone else [p.key for p in registered if p.core and getattr(s, p.key) is None]
    sub = []
    if isinstance(r, StudyResult):
        sub.append(f"preset {escape(r.preset)}")
    sub.append(f"experiment {escape(r.EXPERIMENT)}")
    if isinstance(r, StudyResult) and r.timing.finished:
        sub.append(f"finished {escape(r.timing.finished)}")
    if missing:
        sub.append("not measured: " + ", ".join(missing))
    return P.shell(TITLE, HEADING, " · ".join(sub) if sub else "measured results",
                   f"{answer_html}\n{''.join(secs)}", toc="".join(toc))
