"""The sweep grid that `resgrad sweep --help` shows is examples/sweep.toml, and it runs as copied."""

from __future__ import annotations

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from resgrad.cli import app
from resgrad.experiments.sweep import load_config

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweep.toml"


def _help_grid() -> str:
    """The grid as a user copies it out of the terminal: the indented lines after "A sweep file"."""
    out = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "120"}).output
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "A sweep file" in line)
    end = next(i for i, line in enumerate(lines) if i > start and line.strip().startswith("Examples:"))
    return "\n".join(line.strip() for line in lines[start + 1:end] if line.strip()) + "\n"


def test_help_grid_is_the_example_file_and_runs(tmp_path):
    grid = _help_grid()
    assert "[train]" in grid and "epochs" in grid  # rich once ate "[train]" as markup
    copied = tmp_path / "copied.toml"
    copied.write_text(grid)
    assert load_config(copied).to_dict() == load_config(EXAMPLE).to_dict()
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(copied), "--out", str(out), "--device", "cpu", "--workers", "1",
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [c["model"] for c in cells] == ["plain8", "resnet8", "plain14", "resnet14"]
    for c in cells:
        err = c["metrics"]["test_error"]["mean"]
        assert math.isfinite(err) and 0 <= err < 0.9, c  # trained: below chance (10 classes)


def test_missing_sweep_file_names_a_file_that_exists(tmp_path):
    res = runner.invoke(app, ["sweep", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "examples/sweep.toml" in res.output
    assert EXAMPLE.is_file()
