"""`resgrad study --preset quick`: killed mid-way, resumed without redoing finished work,
rerun as a no-op that re-renders the report."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resgrad.experiments.study import PRESETS, preset
from resgrad.io import write_json
from resgrad.rundir import RunDir


def _study(out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "resgrad", "study", "--preset", "quick", "--out", str(out), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def test_quick_study_survives_kill_and_reruns_as_a_no_op(tmp_path, resgrad_cli, monkeypatch):
    out = tmp_path / "study"
    env = {**os.environ, "RESGRAD_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    runs = out / "degradation" / "runs"

    proc = _study(out, env)
    deadline = time.time() + 300
    # Kill -9 once one training run has finished (its 3 epochs written; with the default pool
    # of one worker per core, longest first, the others may be half-way) and before the study
    # has. Which run finishes first depends on the schedule, so watch them all.
    def finished_run() -> Path | None:
        import torch

        for ckpt in sorted(runs.glob("*/checkpoints/last.pt")):  # replaced atomically
            try:
                if torch.load(ckpt, map_location="cpu", weights_only=False)["finished"]:
                    return ckpt.parent.parent
            except (FileNotFoundError, EOFError, RuntimeError):
                pass
        return None

    while (first_run := finished_run()) is None:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no training run of the study finished in 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    flow_mtime = (out / "flow" / "results.json").stat().st_mtime_ns
    ckpt_mtime = (first_run / "checkpoints" / "last.pt").stat().st_mtime_ns

    done = subprocess.run(
        [sys.executable, "-m", "resgrad", "study", "--preset", "quick", "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Finished work was reused, not redone.
    assert (out / "flow" / "results.json").stat().st_mtime_ns == flow_mtime
    assert (first_run / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt_mtime
    model, seed = first_run.name.rsplit("-s", 1)
    assert f"] {model} seed {seed}:" in done.stdout  # listed, but its epochs are not retrained
    assert done.stdout.strip().splitlines()[-1].startswith("report:")

    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "study" and results["preset"] == "quick"
    for key in ("flow", "degradation", "ensemble", "transformer", "environment", "timing", "config"):
        assert key in results
    for r in results["degradation"]["runs"]:  # every epoch exactly once despite the kill
        lines = (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert results["ensemble"]["n"] == 9  # the deepest residual net: resnet20
    # One baseline per net: the lesions' intact error is the training run's final test error.
    finals = {Path(r["run_dir"]).name: r["final"]["test_error"] for r in results["degradation"]["runs"]}
    for role, name in (("residual", "resnet20-s0"), ("plain", "plain20-s0")):
        assert results["ensemble"]["lesion"][role]["baseline"] == pytest.approx(finals[name], abs=1e-12), role
    tr = {Path(r["run_dir"]).name: r["final"]["test_error"] for r in results["transformer"]["runs"]}
    for role in ("residual", "plain"):
        les = results["transformer"]["ensemble"]["lesion"][role]
        assert les["baseline"] == pytest.approx(tr[les["model"]], abs=1e-12), role
    html = (out / "report.html").read_text()
    # Figures inline (no files beside the report): flow, degradation and ensemble at least.
    assert html.count('<img src="data:image/') >= 5

    # A finished study reruns as a no-op that re-renders the report.
    (out / "report.html").unlink()
    # In-process (the command only reads and renders here): no second interpreter importing torch.
    monkeypatch.setenv("RESGRAD_CACHE", env["RESGRAD_CACHE"])
    code, again_out, again_err = resgrad_cli("study", "--preset", "quick", "--out", str(out), "--device", "cpu")
    assert code == 0, again_err
    assert "already finished" in again_out and (out / "report.html").is_file()
    assert json.loads((out / "results.json").read_text()) == results

    # A folder of an earlier version (no Transformer stage) takes the new stage, reusing the rest.
    assert results["transformer"]["layers"] == 2 and len(results["transformer"]["runs"]) == 6
    rd = RunDir(out)
    record = rd.read_config("resgrad.study")
    del record["config"]["transformer"]
    rd.write_config(record)
    older = {k: v for k, v in results.items() if k != "transformer"}
    older["config"] = {k: v for k, v in results["config"].items() if k != "transformer"}
    write_json(out / "results.json", older)
    shutil.rmtree(out / "transformer")
    newer = subprocess.run(
        [sys.executable, "-m", "resgrad", "study", "--preset", "quick", "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert newer.returncode == 0, newer.stdout + newer.stderr
    assert "4/4 Transformers" in newer.stdout
    assert (first_run / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt_mtime  # not retrained
    assert (out / "flow" / "results.json").stat().st_mtime_ns == flow_mtime
    final = json.loads((out / "results.json").read_text())
    # Retrained from scratch, the same numbers (every run seeds itself from its config).
    assert [r["final"] for r in final["transformer"]["runs"]] == [r["final"] for r in results["transformer"]["runs"]]
    assert "transformer" in rd.read_config("resgrad.study")["config"]


def test_presets_and_their_errors():
    assert PRESETS == ("quick", "default", "he2015-cifar10")
    cfg = preset("default")
    assert cfg.degradation.depths == (20, 56, 110) and cfg.degradation.data == "mnist1d"
    assert (cfg.ensemble.residual, cfg.ensemble.plain) == ("resnet110", "plain110")
    he = preset("he2015-cifar10", epochs=2, seeds=(0, 1), data_dir="/data")
    assert he.degradation.data == "cifar10" and he.degradation.train.epochs == 2
    assert he.degradation.seeds == (0, 1) and he.degradation.data_kwargs == {"data_dir": "/data"}
    assert dict(he.degradation.warmup) == {110: 400}  # He et al. 2015 §4.2
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("fast")


def test_a_different_config_in_the_same_folder_is_refused(tmp_path, monkeypatch):
    from resgrad.experiments import flow, study

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(flow, "compute", stop)  # claim the folder, then stop before any stage
    with pytest.raises(Stop):
        study.run(preset("quick"), tmp_path, log=lambda _: None)
    with pytest.raises(Stop):  # the same config again: the same study
        study.run(preset("quick"), tmp_path, log=lambda _: None)
    with pytest.raises(ValueError, match=r"different config \(degradation\.train\.epochs: 3 -> 4\)"):
        study.run(preset("quick", epochs=4), tmp_path, log=lambda _: None)


def test_cli_usage_errors_exit_2_with_one_line(tmp_path, resgrad_cli):
    # One real process (what a shell sees), the other cases in-process: the same root group and
    # error handling without a fresh interpreter importing torch for each.
    r = subprocess.run([sys.executable, "-m", "resgrad", "study", "--preset", "fast", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for args in (["--seeds", "a,b"], ["--epochs", "0"], ["--device", "tpu"]):
        code, _, err = resgrad_cli("study", *args, "--out", str(tmp_path / "x"))
        assert code == 2, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()  # refused before the folder is claimed
