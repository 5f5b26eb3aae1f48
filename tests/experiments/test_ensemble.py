"""The ensemble experiment at its quick size: schema, JSON, training through fit, run folders."""

from __future__ import annotations

import json

import pytest
import torch

import resgrad
from resgrad.experiments.ensemble import EnsembleConfig, run_ensemble
from resgrad.io import read_json
from resgrad.results import load

pytestmark = pytest.mark.usefixtures("one_thread")  # small nets: see tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return resgrad.load_data("synthetic", shape=(1, 12), num_classes=4, n_train=128, n_test=64)


def nets(data):
    torch.manual_seed(0)
    return (resgrad.build_for("resnet14", data.input_shape, data.num_classes),
            resgrad.build_for("plain14", data.input_shape, data.num_classes))


WINDOW = {"lo", "hi", "mass", "held", "share_of_paths", "n"}


def test_quick_run_on_model_objects_has_every_number_the_report_needs(data, tmp_path):
    res, plain = nets(data)
    r = run_ensemble(EnsembleConfig.preset("quick"), tmp_path, residual=res, plain=plain, data=data,
                     names=("resnet14", "plain14"))
    assert r == load(tmp_path / "results.json")  # written, and read back equal
    json.dumps(r.to_json(), allow_nan=False)
    assert r.to_json()["experiment"] == "ensemble" and r.model == "resnet14" and r.plain_model == "plain14"
    n = r.n
    assert n == 6 and r.counts == resgrad.paths.counts(6) and len(r.path_fraction) == 7
    ex, sa = r.exact, r.sampled
    assert len(ex.norms) == len(ex.example_norms) == 7 and ex.rel_error < 1e-4
    assert sa.lengths == list(range(7)) and len(sa.mean) == len(sa.std) == len(sa.total) == 7
    assert sa.samples == 20 and sa.batchnorm == "eval" and "eval mode" in sa.note
    assert set(r.effective.exact.to_json()) == WINDOW == set(r.effective.sampled.to_json())
    assert "cancel" in r.effective.explanation
    ref = r.reference
    assert (ref["effective"]["lo"], ref["effective"]["hi"]) == (5, 17)
    assert round(100 * ref["effective"]["share_of_paths"], 2) == 0.45
    assert r.exact_plain.n == 0 and r.exact_plain.norm > 0
    les = r.lesion
    for key, kind in (("residual", "residual"), ("plain", "plain")):
        rows = les[key].blocks
        assert len(rows) == 6 and all(b.kind == kind for b in rows)
        assert [b.downsample for b in rows] == [False, False, True, False, True, False]
        d = r.deletion[key]
        assert d.k[0] == 0 and d.mean[0] == les[key].baseline and len(d.errors[-1]) == 2
    ro = r.reorder
    assert ro.swaps[0] == 0 and ro.kendall_tau[0] == 1.0 and ro.plain is not None
    assert r.models["residual"].params == r.models["plain"].params
    assert set(r.timing) == {"paths", "lesion", "total"}


def test_registry_names_are_trained_through_fit_and_reused_as_run_folders(data, tmp_path):
    cfg = EnsembleConfig.preset(
        "quick", residual="resnet14", plain=None, data="synthetic",
        train=resgrad.TrainConfig(epochs=1, max_steps=2, device="cpu"),
    )
    r = run_ensemble(cfg, tmp_path, data=data, parts=("paths",))
    info = r.models["residual"]
    assert info.source == "trained" and r.lesion is None and r.plain_model is None
    run_dir = info.run_dir
    assert (tmp_path / "runs").is_dir() and run_dir.endswith("resnet14-synthetic-s0")
    r2 = run_ensemble(EnsembleConfig.preset("quick", plain=None), None, residual=run_dir, data=data,
                      parts=("lesion",))
    assert r2.models["residual"].source == "run" and r2.model == "resnet14"
    assert r2.exact is None and len(r2.lesion["residual"].blocks) == 6


def test_short_path_training_uses_active_blocks(data, tmp_path):
    cfg = EnsembleConfig.preset("quick", residual="resnet14", plain=None, short_path=2,
                                train=resgrad.TrainConfig(epochs=1, max_steps=2, device="cpu"))
    r = run_ensemble(cfg, tmp_path, data=data, parts=("short",))
    sp = r.short_path
    assert sp.active_blocks == 2 and sp.n == 6 and 0 <= sp.test_error <= 1
    assert sp.bn_recalibrated and 0 <= sp.test_error_as_trained <= 1
    assert sp.full_test_error == r.models["residual"].test_error
    cfg_run = read_json(tmp_path / "runs" / "resnet14-short2-synthetic-s0" / "config.json")["config"]
    assert cfg_run["active_blocks"] == 2
    assert r.reference["short_path"]["active_blocks"] == 23
    res, _ = nets(data)
    with pytest.raises(ValueError, match="registry name or a run"):
        run_ensemble(cfg, residual=res, data=data, parts=("short",))
    with pytest.raises(ValueError, match="short_path"):
        EnsembleConfig(short_path=0)


def test_untrained_names_say_so(data):
    r = run_ensemble(EnsembleConfig.preset("quick", residual="resnet8", plain=None, samples=2), data=data,
                     parts=("paths",))
    assert r.models["residual"].source == "initialisation"
    assert any("untrained" in note for note in r.notes)


def test_bad_inputs(data):
    res, plain = nets(data)
    with pytest.raises(ValueError, match="one path"):
        run_ensemble(EnsembleConfig.preset("quick"), residual=plain, plain=None, data=data, parts=("paths",))
    with pytest.raises(ValueError, match="parts"):
        run_ensemble(EnsembleConfig.preset("quick"), residual=res, data=data, parts=("nope",))
    with pytest.raises(ValueError, match="classes"):
        other = resgrad.load_data("synthetic", shape=(1, 12), num_classes=3, n_train=8, n_test=8)
        run_ensemble(EnsembleConfig.preset("quick"), residual=res, plain=None, data=other)
    with pytest.raises(ValueError, match="samples"):
        EnsembleConfig(samples=0)
    with pytest.raises(ValueError, match="size"):
        EnsembleConfig.preset("huge")
