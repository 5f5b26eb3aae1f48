"""Damage that still parses (issue 24, items 1-3): a plausible edit of metrics.jsonl, a field of
the wrong type, an edited results.json, an edited config.json. Each is refused in one line naming
the file (and the epoch, line or field); an undamaged run, and a folder written before the
digests, read as before."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import resgrad
from resgrad.experiments import flow
from resgrad.results import DegradationResult, FlowResult, ResultError, load
from resgrad.rundir import DamagedRun, RunDir, row_digest
from resgrad.schema import digest

from .conftest import SPEC, TRAIN, cfg, cli, data, net, one_line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-epoch run folder written in-process, kept pristine (tests copy it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    res = resgrad.fit(net(), data(), cfg(), out_dir=run, model_spec=SPEC, progress=False)
    return run, res.history


@pytest.fixture(scope="module")
def finished_cli(tmp_path_factory):
    """A finished run folder written by `resgrad train` itself, kept pristine (tests copy it):
    one process for the module's command tests instead of one each."""
    run = tmp_path_factory.mktemp("finished-cli") / "run"
    r = cli(*TRAIN, "--out", str(run))
    assert r.returncode == 0, r.stderr
    return run


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def _edit_line(path: Path, n: int, **fields) -> None:
    lines = path.read_text().splitlines()
    lines[n - 1] = json.dumps({**json.loads(lines[n - 1]), **fields})
    path.write_text("\n".join(lines) + "\n")


def _fit(run: Path, **kw):
    return resgrad.fit(net(), data(), cfg(**kw), out_dir=run, model_spec=SPEC, progress=False)


# ---- item 1: every metrics line checkable against what the run recorded ----------------


def test_the_checkpoint_records_the_digest_of_every_line_it_computed(finished):
    run, history = finished
    recorded = json.loads((run / "checkpoints/last.pt.sha256").read_text())["metrics"]
    # Independent of RunDir: sha256 of each in-memory row's canonical JSON, epoch 1 first.
    import hashlib
    expect = [hashlib.sha256(json.dumps(r, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
              for r in history]
    assert recorded == expect == [row_digest(r) for r in RunDir(run).read_metrics()]


@pytest.mark.parametrize("epoch,field,value", [(3, "test_error", 0.0), (1, "train_loss", 0.5), (2, "lr", 0.1)])
def test_a_plausible_edit_of_a_finished_run_is_refused_naming_the_file_and_epoch(tmp_path, finished, epoch, field,
                                                                                value):
    run = _copy(finished[0], tmp_path / "run")
    _edit_line(run / "metrics.jsonl", epoch, **{field: value})
    with pytest.raises(DamagedRun, match=rf"metrics.jsonl line {epoch} \(epoch {epoch}\) is not what the run "):
        _fit(run)
    with pytest.raises(DamagedRun, match=f"epoch {epoch}"):
        RunDir(run).read_metrics()


def test_the_cli_shows_one_line_not_the_edited_number(tmp_path, finished_cli):
    run = _copy(finished_cli, tmp_path / "run")
    _edit_line(run / "metrics.jsonl", 3, test_error=0.0)
    r = cli(*TRAIN, "--out", str(run))
    msg = one_line(r)
    assert r.returncode == 2 and f"{run}/metrics.jsonl line 3 (epoch 3)" in msg and "0.00%" not in r.stdout


def test_a_reindented_line_with_equal_values_is_not_damage(tmp_path, finished):
    run, history = finished
    run = _copy(run, tmp_path / "run")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r, indent=None, sort_keys=True) + "\n" for r in rows))
    assert _fit(run).history == history


def test_lines_after_the_last_checkpoint_are_redone_and_recorded(tmp_path):
    run = tmp_path / "run"
    _fit(run, max_steps=12)  # 2 of 3 epochs
    with open(run / "metrics.jsonl", "a") as f:  # a line the checkpoint never saw (a kill after it was written)
        f.write(json.dumps({"epoch": 3, "train_loss": 9.0}) + "\n")
    res = _fit(run, max_steps=12)
    assert [r["epoch"] for r in res.history] == [1, 2]
    assert len(json.loads((run / "checkpoints/last.pt.sha256").read_text())["metrics"]) == 2


def test_a_folder_written_before_the_digests_reads_as_before(tmp_path, finished):
    run, history = finished
    run = _copy(run, tmp_path / "run")
    side = run / "checkpoints/last.pt.sha256"
    side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "metrics"}))
    _edit_line(run / "metrics.jsonl", 3, test_error=0.25)  # nothing recorded to check it against
    assert RunDir(run).read_metrics()[2]["test_error"] == 0.25
    assert _fit(run).history[:2] == history[:2]


# ---- item 2: every field typed, files named --------------------------------------------


@pytest.mark.parametrize("field,value,expect", [("test_error", "oops", 'expected a number'),
                                                ("steps", 1.5, "expected an integer"),
                                                ("train_loss", [1], "expected a number")])
def test_a_metrics_field_of_the_wrong_type_names_the_file_line_and_field(tmp_path, finished, field, value, expect):
    run = _copy(finished[0], tmp_path / "run")
    _edit_line(run / "metrics.jsonl", 2, **{field: value})
    with pytest.raises(DamagedRun) as e:
        _fit(run)
    assert str(e.value).startswith(f"{run}/metrics.jsonl line 2: field '{field}' is ") and expect in str(e.value)


def _degradation_file(tmp_path: Path) -> Path:
    row = {"epoch": 1, "train_loss": 0.7, "train_error": 0.3, "test_loss": 0.8, "test_error": 0.35, "lr": 0.1,
           "seconds": 1.0, "steps": 10}
    errors = {"train_loss": 0.7, "train_error": 0.3, "test_loss": 0.8, "test_error": 0.35}
    cell = {"model": "resnet20", "train_error": 0.3, "test_error": 0.35, "train_error_std": 0.0,
            "test_error_std": 0.0, "n_seeds": 1}
    body = {"config": {"seeds": [0]}, "environment": {},
            "data": {"name": "synthetic", "input_shape": [16], "num_classes": 4, "n_train": 8, "n_test": 8},
            "runs": [{"model": "resnet20", "arch": "residual", "depth": 20, "seed": 0, "params": 1, "run_dir": "r",
                      "history": [row], "final": errors, "grad": []}],
            "table": [{"depth": 20, "plain": {**cell, "model": "plain20"}, "residual": cell}]}
    path = tmp_path / "results.json"
    DegradationResult.of(body).save(path)
    return path


def test_a_results_history_record_is_typed_down_to_its_leaves(tmp_path):
    path = _degradation_file(tmp_path)
    assert load(path).runs[0].history[0]["test_error"] == 0.35
    d = json.loads(path.read_text())
    d["runs"][0]["history"][0]["test_error"] = "oops"
    path.write_text(json.dumps(d))
    with pytest.raises(ResultError, match=r"field 'runs\[0\]\.history\[0\]\.test_error' is \"oops\", expected a "):
        load(path)


def test_a_plausible_edit_of_results_json_fails_its_digest(tmp_path):
    path = _degradation_file(tmp_path)
    d = json.loads(path.read_text())
    assert d["sha256"] == digest({k: v for k, v in d.items() if k != "sha256"})
    d["runs"][0]["history"][0]["test_error"] = 1.0
    path.write_text(json.dumps(d, indent=2))
    with pytest.raises(ResultError, match=rf"{path}: field 'sha256' does not match the file's contents"):
        load(path)
    del d["sha256"]  # a file written before the digest: loads as before
    path.write_text(json.dumps(d))
    assert load(path).runs[0].history[0]["test_error"] == 1.0


def test_an_edited_results_file_is_recomputed_on_reuse_not_used(tmp_path):
    cfg_ = flow.FlowConfig(families=("mlp",), activations=("relu",), inits=("he",), depths=(4,), seeds=(0,),
                           batch_size=8, data="synthetic", signal=None)
    lines: list[str] = []
    first = flow.run(cfg_, tmp_path)
    d = json.loads((tmp_path / "results.json").read_text())
    d["groups"][0]["slope"] = 1.0  # plausible, and typed right
    (tmp_path / "results.json").write_text(json.dumps(d, indent=2))
    from resgrad.experiments import run
    again = run(cfg_, tmp_path, log=lines.append)
    assert again.groups == first.groups and RunDir(tmp_path).read_results(FlowResult).groups == first.groups
    assert any("results.json: field 'sha256' does not match" in x and "recomputing" in x for x in lines), lines


# ---- item 3: config.json against the checkpoint's own record ---------------------------


@pytest.mark.parametrize("field,value", [("epochs", 4), ("lr", 0.5), ("seed", 7)])
def test_an_edited_config_json_is_damage_naming_both_files(tmp_path, finished, field, value):
    run = _copy(finished[0], tmp_path / "run")
    rec = json.loads((run / "config.json").read_text())
    old = rec["config"][field]
    rec["config"][field] = value
    (run / "config.json").write_text(json.dumps(rec, indent=2))
    with pytest.raises(DamagedRun) as e:
        _fit(run)
    msg = str(e.value)
    assert msg.startswith(f"{run}/config.json no longer matches its checkpoint {run}/checkpoints/last.pt ")
    assert f"{field}: {old!r} in the checkpoint, {value!r} in config.json" in msg and "would change" not in msg


def test_the_cli_names_config_json_not_an_option(tmp_path, finished_cli):
    run = _copy(finished_cli, tmp_path / "run")
    rec = json.loads((run / "config.json").read_text())
    rec["config"]["epochs"] = 4
    (run / "config.json").write_text(json.dumps(rec))
    r = cli(*TRAIN, "--out", str(run))
    msg = one_line(r)
    assert r.returncode == 2 and "config.json no longer matches its checkpoint" in msg and "--epochs 3 would" not in msg


def test_growing_a_run_still_works_and_its_checkpoint_follows(tmp_path):
    run = tmp_path / "run"
    from resgrad.train.resume import load_checkpoint
    _fit(run, lr=0.05, milestones=(1.0,), epochs=2)  # constant lr: more epochs may continue
    res = _fit(run, lr=0.05, milestones=(1.0,), epochs=3)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert load_checkpoint(RunDir(run))["config"]["epochs"] == 3
    assert _fit(run, lr=0.05, milestones=(1.0,), epochs=3).history == res.history


@pytest.mark.parametrize("field,value", [("accept", 3), ("metrics", ["a", 1]), ("bytes", "many")])
def test_the_checksum_file_is_typed_naming_its_field(tmp_path, finished, field, value):
    run = _copy(finished[0], tmp_path / "run")
    side = run / "checkpoints/last.pt.sha256"
    side.write_text(json.dumps({**json.loads(side.read_text()), field: value}))
    with pytest.raises(DamagedRun, match=rf"^{side}: field '{field}[^']*' is .* \(the file is damaged\); start over"):
        _fit(run)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["oops", 1.0])
def test_a_finished_study_with_an_edited_history_is_not_already_finished(tmp_path, value):
    out = tmp_path / "study"
    args = ["study", "--preset", "quick", "--device", "cpu", "--workers", "1", "--out", str(out)]
    assert cli(*args, timeout=900).returncode == 0
    d = json.loads((out / "results.json").read_text())
    before = d["degradation"]["runs"][0]["history"][0]["test_error"]
    d["degradation"]["runs"][0]["history"][0]["test_error"] = value
    (out / "results.json").write_text(json.dumps(d, indent=2))
    with pytest.raises(ResultError, match=r"degradation\.runs\[0\]\.history\[0\]\.test_error|'sha256'"):
        load(out / "results.json")
    r = cli(*args, timeout=900)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert f"{out}/results.json: field " in r.stdout and "recomputing it" in r.stdout
    assert load(out / "results.json").degradation.runs[0].history[0]["test_error"] == before
