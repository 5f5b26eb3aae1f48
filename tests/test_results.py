"""Typed results: every experiment's real Result round-trips through JSON; damaged or foreign
files are one line naming the file and the field; resgrad 0.1 files load through migrations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import resgrad
from resgrad.experiments import diagnose, ensemble, flow
from resgrad.experiments.degradation import DegradationConfig, run_degradation
from resgrad.results import (
    DegradationResult,
    DiagnoseResult,
    EnsembleResult,
    FlowResult,
    ResultError,
    StudyResult,
    load,
    result_types,
)
from resgrad.rundir import RunDir
from resgrad.train import TrainConfig

OLD_STUDY = Path(__file__).parent / "report" / "data" / "study-quick.json"  # written by resgrad 0.1


def _synthetic():
    return resgrad.load_data("synthetic", shape=(1, 12), num_classes=4, n_train=96, n_test=48)


def _round_trip(result, folder: Path) -> None:
    """Written by the experiment, read back: an equal object, from the file and from its JSON."""
    assert load(folder / "results.json") == result
    assert type(result).from_json(json.loads(json.dumps(result.to_json()))) == result


def test_every_experiment_writes_a_result_that_reads_back_equal(tmp_path, one_thread):
    cfg = flow.FlowConfig.preset("quick", data="synthetic", families=("mlp",), activations=("relu",),
                                 depths=(4,), seeds=(0,))
    res = flow.run(cfg, tmp_path / "flow")
    assert isinstance(res, FlowResult) and res.signal is not None
    _round_trip(res, tmp_path / "flow")

    deg = run_degradation(DegradationConfig(data="synthetic", data_kwargs={"shape": (1, 12), "n_train": 96,
                                                                           "n_test": 48, "num_classes": 4},
                                            depths=(8,), train=TrainConfig(epochs=1, batch_size=48)),
                          tmp_path / "deg", log=lambda _: None, progress=False)
    RunDir(tmp_path / "deg").write_results(deg)
    assert isinstance(deg, DegradationResult)
    _round_trip(deg, tmp_path / "deg")

    data = _synthetic()
    torch.manual_seed(0)
    net = resgrad.build_for("resnet14", data.input_shape, data.num_classes)
    ens = ensemble.run(ensemble.EnsembleConfig.preset("quick", plain=None), tmp_path / "ens", residual=net, data=data)
    assert isinstance(ens, EnsembleResult) and ens.exact is not None and ens.lesion is not None
    _round_trip(ens, tmp_path / "ens")

    diag = diagnose.run(diagnose.DiagnoseConfig(spec="resnet14", data="synthetic", batch_size=8), tmp_path / "diag",
                        model=net, data=data, source="registry")
    assert isinstance(diag, DiagnoseResult) and diag.layers
    _round_trip(diag, tmp_path / "diag")


def test_a_resgrad_0_1_study_loads_through_its_migrations():
    old = json.loads(OLD_STUDY.read_text())
    assert "schema" not in old and old["flow"]["schema_version"] == 1
    r = load(OLD_STUDY)
    assert isinstance(r, StudyResult) and r.flow.signal is None  # flow v1 -> v2: no signal measured then
    again = StudyResult.from_json(r.to_json())
    assert again == r and r.to_json()["flow"]["schema_version"] == FlowResult.VERSION


def _write(tmp_path: Path, d: dict) -> Path:
    p = tmp_path / "results.json"
    p.write_text(json.dumps(d))
    return p


def test_a_renamed_field_is_one_line_naming_the_file_and_the_field(tmp_path, resgrad_cli):
    d = load(OLD_STUDY).to_json()
    d["ensemble"]["lesion"]["residual"]["basline"] = d["ensemble"]["lesion"]["residual"].pop("baseline")
    p = _write(tmp_path, d)
    with pytest.raises(ResultError) as e:
        load(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    assert "ensemble.lesion.residual.basline" in msg and "not a field of Lesion" in msg
    # The report command says the same in one line and exits 2 (in-process; the real process of
    # `resgrad report` is tests/report/test_cli.py's).
    code, _, err = resgrad_cli("report", str(tmp_path))
    assert code == 2 and "basline" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["degradation"].pop("table"), "degradation.table' is missing"),
    (lambda d: d["degradation"]["runs"][0].update(seed="zero"), "degradation.runs[0].seed' is \"zero\", expected an integer"),
    (lambda d: d["flow"]["groups"][0].update(verdict="fine"), "one of 'vanishing'"),
    (lambda d: d.update(schema_version=StudyResult.VERSION + 1), "newer than this resgrad reads"),
    (lambda d: d["flow"].update(schema_version=0), "expected an integer >= 1"),
    (lambda d: d.update(schema="resgrad.nothing"), "holds a resgrad.nothing result"),
])
def test_bad_fields_and_versions_are_refused(tmp_path, edit, words):
    d = load(OLD_STUDY).to_json()
    edit(d)
    p = _write(tmp_path, d)
    with pytest.raises(ResultError, match=None) as e:
        StudyResult.from_json(json.loads(p.read_text()), source=str(p))
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"), (b'{"schema": ', "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"), (b"[]", "holds a list"),
])
def test_damaged_files_name_themselves(tmp_path, content, words):
    p = tmp_path / "results.json"
    p.write_bytes(content)
    with pytest.raises(ResultError, match=words) as e:
        load(p)
    assert str(p) in str(e.value)


def test_every_schema_is_registered_once():
    types = result_types()
    assert set(types) >= {"resgrad.flow", "resgrad.degradation", "resgrad.ensemble", "resgrad.diagnose",
                          "resgrad.study"}
    for name, cls in types.items():
        assert name == cls.SCHEMA and cls.VERSION >= 1 and cls.EXPERIMENT
        assert dataclasses.is_dataclass(cls)


def test_indexing_like_a_dict_still_works_with_a_deprecation():
    r = load(OLD_STUDY)
    with pytest.warns(DeprecationWarning, match=r"use \.preset"):
        assert r["preset"] == "quick"
    with pytest.raises(KeyError):
        r["no_such_field"]
