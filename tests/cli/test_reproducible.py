"""The same command with the same seed gives the same numbers: paths, lesion, diagnose and flow,
each run twice through the CLI (small sizes) and every number of results.json compared."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from resgrad.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

# Wall-clock and machine fields: they differ between any two runs.
SKIP = {"timing", "timings", "environment", "seconds", "wall_time_s", "created", "started", "finished"}


def numbers(tree, path: str = "") -> dict[str, float]:
    """Every number of a results.json tree by its dotted path (timings and environment left out)."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k not in SKIP:
                out.update(numbers(v, f"{path}.{k}"))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.update(numbers(v, f"{path}[{i}]"))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[path] = float(tree)
    return out


def run_twice(tmp_path, args: list[str], min_numbers: int) -> dict[str, float]:
    got = []
    for which in ("a", "b"):
        r = runner.invoke(app, [*args, "--out", str(tmp_path / which)])
        assert r.exit_code == 0, r.output
        got.append(numbers(json.loads((tmp_path / which / "results.json").read_text())))
    a, b = got
    assert len(a) >= min_numbers  # the comparison covers the measurement, not a handful of fields
    assert a.keys() == b.keys()
    differ = [k for k in a if not (a[k] == b[k] or math.isnan(a[k]) and math.isnan(b[k]))]
    assert not differ, f"{len(differ)} of {len(a)} numbers differ, first {differ[:5]}"
    return a


def test_paths_on_a_name_at_init_reproduces(tmp_path):
    # The net is built from --seed; before, its weights came from the unseeded global generator.
    a = run_twice(tmp_path, ["paths", "resnet8", "--data", "synthetic", "--samples", "4", "--examples", "16",
                             "--device", "cpu", "--seed", "0"], min_numbers=40)
    assert any(k.startswith(".exact.norms") for k in a) and any(k.startswith(".sampled") for k in a)


def test_paths_seed_changes_the_net(tmp_path):
    args = ["paths", "resnet8", "--data", "synthetic", "--samples", "2", "--examples", "8", "--device", "cpu"]
    norms = []
    for seed in ("0", "1"):
        r = runner.invoke(app, [*args, "--seed", seed, "--out", str(tmp_path / seed)])
        assert r.exit_code == 0, r.output
        norms.append(json.loads((tmp_path / seed / "results.json").read_text())["exact"]["norms"])
    assert norms[0] != norms[1]


def test_lesion_on_a_name_at_init_reproduces(tmp_path):
    a = run_twice(tmp_path, ["lesion", "resnet8", "plain8", "--data", "synthetic", "--examples", "64", "--trials",
                             "2", "--device", "cpu", "--seed", "0"], min_numbers=30)
    assert ".lesion.residual.baseline" in a and ".lesion.plain.baseline" in a


def test_lesion_with_random_inputs_reproduces(tmp_path):
    run_twice(tmp_path, ["lesion", "resnet8", "--input-shape", "1,16", "--examples", "32", "--trials", "1",
                         "--device", "cpu", "--seed", "2"], min_numbers=10)


def test_diagnose_reproduces(tmp_path):
    run_twice(tmp_path, ["diagnose", "resmlp-4x64", "--data", "synthetic", "--steps", "2", "--batch-size", "8",
                         "--device", "cpu", "--seed", "0"], min_numbers=20)


def test_flow_reproduces(tmp_path):
    run_twice(tmp_path, ["flow", "--size", "quick", "--families", "mlp", "--depths", "4", "--activations", "tanh",
                         "--norms", "none", "--seeds", "1", "--data", "synthetic"], min_numbers=10)
