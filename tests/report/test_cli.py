"""``resgrad report RUN_DIR``: re-renders report.html; a folder without results.json exits 2 in one line."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from resgrad.cli import app
from resgrad.io import write_json

runner = CliRunner()


def _resgrad(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    env.pop("RESGRAD_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "resgrad", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_folder_without_results_json_exits_2_with_one_line(tmp_path):
    # A long path: the message must stay one line even where the terminal is narrow.
    run_dir = tmp_path / ("a-run-folder-with-a-long-name-" * 3)
    run_dir.mkdir()
    done = _resgrad("report", str(run_dir))
    assert done.returncode == 2
    lines = [s for s in done.stderr.splitlines() if s.strip()]
    assert len(lines) == 1, done.stderr
    assert "has no results.json" in lines[0] and str(run_dir) in lines[0]
    assert "Traceback" not in done.stderr and not (run_dir / "report.html").exists()


def test_missing_folder_and_bad_json_exit_2(tmp_path):
    assert runner.invoke(app, ["report", str(tmp_path / "nope")]).exit_code == 2
    (tmp_path / "results.json").write_text("{truncated")
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    write_json(tmp_path / "results.json", {"flow": {}})  # no envelope: a one-line error, not a guess
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a resgrad results" in result.output


def test_rerenders_report_html(tmp_path, study):
    study.flow.save(tmp_path / "results.json")
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "report.html") in result.output.replace("\n", "")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Gradient flow at initialisation" in html and "Not measured" in html

    other = tmp_path / "elsewhere" / "r.html"
    assert runner.invoke(app, ["report", str(tmp_path), "--out", str(other)]).exit_code == 0
    assert other.is_file()
