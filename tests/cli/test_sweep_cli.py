"""`resgrad sweep`: a grid from TOML through the executor, a table of cells; bad input exits 2 in one line."""

import json
import sys

import pytest
from typer.testing import CliRunner

from resgrad.cli import app

runner = CliRunner()

GRID = """
depths = [8]
seeds = [0, 1]
datasets = ["synthetic"]
[data_kwargs.synthetic]
shape = [1, 16]
n_train = 128
n_test = 64
seed = 3
[train]
epochs = 1
batch_size = 64
lr = 0.05
"""


@pytest.fixture
def grid(tmp_path):
    p = tmp_path / "grid.toml"
    p.write_text(GRID)
    return p


def test_sweep_runs_the_grid_and_prints_the_cells(tmp_path, grid):
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(grid), "--out", str(out), "--device", "cpu", "--workers", "1",
                              "--threads", "1"])
    assert res.exit_code == 0, res.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "resgrad.sweep" and len(results["runs"]) == 4
    assert [c["model"] for c in results["cells"]] == ["plain8", "resnet8"]
    for c in results["cells"]:  # the table shows each cell's test error mean as a percentage
        assert f"{100 * c['metrics']['test_error']['mean']:.1f} ±" in res.stdout
    assert "gradient" in res.stdout and "CI" in res.stdout  # the title (columns wrap in a narrow terminal)
    again = runner.invoke(app, ["sweep", str(grid), "--out", str(out), "--device", "cpu", "--workers", "1"])
    assert again.exit_code == 0 and "already finished" in again.stdout


@pytest.mark.parametrize("extra, toml, says", [
    (["--executor", "dask"], None, "--executor must be one of local, ray, slurm, received 'dask'"),
    (["--workers", "0"], None, "--workers must be >= 1"),
    (["--address", "auto"], None, "--address is an option of --executor ray, not local"),
    (["--gpus", "0,x"], None, "--gpus must be GPU indices or UUIDs separated by commas"),
    (["--executor", "ray", "--gpus", "0"], None, "--gpus is an option of --executor local, not ray"),
    (["--workers", "1", "--gpus", "1"], None, "workers=1 runs in this process: give the run its GPU as its "
                                              "device (cuda:1) instead"),
    (["--executor", "ray", "--address", "127.0.0.1:9"], None, "cannot reach a Ray cluster at '127.0.0.1:9'"),
    ([], "depth = [8]\n", "unknown key 'depth'; did you mean 'depths'?"),
    ([], "depths = [9]\n", "depths [9]: He et al. 2015 nets have 6n+2 layers"),
    ([], "seeds = [0, 1\n", "is not valid TOML"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, grid, extra, toml, says):
    if toml is not None:
        grid.write_text(toml)
    res = runner.invoke(app, ["sweep", str(grid), "--out", str(tmp_path / "o"), "--device", "cpu", *extra])
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert says in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "o" / "runs").exists()  # failed before any run started


@pytest.mark.parametrize("module, executor, extra", [("ray", "ray", "resgrad[ray]"),
                                                     ("submitit", "slurm", "resgrad[slurm]")])
def test_a_missing_extra_names_it(tmp_path, grid, monkeypatch, module, executor, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import ray` now fails as if it were not installed
    for cmd in (["sweep", str(grid)], ["study", "--preset", "quick"]):
        res = runner.invoke(app, [*cmd, "--out", str(tmp_path / "o"), "--device", "cpu", "--executor", executor])
        assert res.exit_code == 2, res.stderr
        assert f"--executor {executor} needs" in res.stderr and f"pip install '{extra}'" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_study_takes_the_executor_options(tmp_path):
    res = runner.invoke(app, ["study", "--preset", "quick", "--out", str(tmp_path / "s"), "--workers", "0"])
    assert res.exit_code == 2 and "--workers must be >= 1" in res.stderr
    res = runner.invoke(app, ["study", "--preset", "quick", "--out", str(tmp_path / "s"), "--partition", "gpu"])
    assert res.exit_code == 2 and "--partition is an option of --executor slurm" in res.stderr


def _numbers(out):
    """Every number a sweep measured: its results without the host, and each run's metrics rows."""
    results = json.loads((out / "results.json").read_text())
    results.pop("environment")
    results.pop("sha256")  # the digest of the whole body: it covers the host and the timings too
    for r in results["runs"]:
        r.pop("run_dir")
        r["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]
    metrics = {}
    for p in sorted((out / "runs").rglob("metrics.jsonl")):
        rows = [json.loads(line) for line in p.read_text().splitlines()]
        metrics[str(p.relative_to(out))] = [{k: v for k, v in r.items() if k != "seconds"}
                                            for r in rows]
    threads = {json.loads(p.read_text())["environment"]["torch_threads"]
               for p in (out / "runs").rglob("config.json")}
    return results, metrics, threads


def test_the_default_pool_gives_the_numbers_of_one_worker_bitwise(tmp_path, grid):
    from resgrad.cli._executor import ExecutorOptions
    from resgrad.executors import cores

    ex = ExecutorOptions().build(tmp_path)  # the defaults: a pool of one worker per core, 1 thread per run
    assert (ex.workers, ex.threads) == (cores(), 1)
    one = runner.invoke(app, ["sweep", str(grid), "--out", str(tmp_path / "one"), "--device", "cpu",
                              "--workers", "1"])
    two = runner.invoke(app, ["sweep", str(grid), "--out", str(tmp_path / "two"), "--device", "cpu",
                              "--workers", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, one.stderr + two.stderr
    assert "in this process, 1 thread" in one.stdout and "2 worker processes x 1 thread" in two.stdout
    r1, m1, t1 = _numbers(tmp_path / "one")
    r2, m2, t2 = _numbers(tmp_path / "two")
    assert len(m1) == 4 and m1 == m2  # every epoch's losses, errors and gradient norms, float for float
    assert r1 == r2 and t1 == t2 == {1}  # and the cells' statistics; each run recorded its 1 thread


def test_flow_takes_the_executor_options_and_writes_its_chunks(tmp_path):
    out = tmp_path / "flow"
    args = ["flow", "--size", "quick", "--families", "mlp", "--depths", "4", "--activations", "relu",
            "--data", "synthetic", "--out", str(out)]
    bad = runner.invoke(app, [*args, "--workers", "0"])
    assert bad.exit_code == 2 and "--workers must be >= 1" in bad.stderr
    res = runner.invoke(app, [*args, "--workers", "1", "--threads", "1"])
    assert res.exit_code == 0, res.stderr
    parts = sorted(p.name for p in (out / "chunks").iterdir())
    # 4 groups (archs x norms), one chunk each, and the shattering/spectrum measurement as its own part
    assert parts == [f"grid-{k:03d}-of-004" for k in range(4)] + ["signal-000-of-001"]
    assert len(json.loads((out / "results.json").read_text())["configs"]) == 4 * 2  # x 2 seeds
