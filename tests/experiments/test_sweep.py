"""The sweep: a TOML grid into one folder, per-cell statistics over seeds, resumable, strict input."""

import json
import math

import pytest

from resgrad import stats
from resgrad.executors import LocalExecutor
from resgrad.experiments.sweep import SweepConfig, load_config, model_names, parse_config, run
from resgrad.results import SweepResult, load

DATA = {"synthetic": {"shape": [1, 16], "n_train": 192, "n_test": 64, "seed": 3}}
GRID = {"depths": [8], "seeds": [0, 1, 2], "datasets": ["synthetic"], "data_kwargs": DATA,
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05}}


def test_a_grid_gives_cells_with_mean_std_and_interval_over_seeds(tmp_path):
    cfg = parse_config(GRID)
    res = run(cfg, tmp_path, executor=LocalExecutor(1, threads=1), log=lambda _: None, progress=False)
    assert load(tmp_path / "results.json") == res and isinstance(res, SweepResult)
    assert [(c.model, c.arch, c.depth, c.seeds) for c in res.cells] == [("plain8", "plain", 8, [0, 1, 2]),
                                                                       ("resnet8", "residual", 8, [0, 1, 2])]
    assert [(r.model, r.seed) for r in res.runs] == [(m, s) for m in ("plain8", "resnet8") for s in (0, 1, 2)]
    for c in res.cells:
        runs = [r for r in res.runs if r.model == c.model]
        errs = [r.final.test_error for r in runs]
        st = c.metrics["test_error"]
        assert st.values == errs and st.mean == pytest.approx(sum(errs) / 3) and st.n == 3
        assert st.std == pytest.approx(stats.std(errs))
        assert (st.ci_low, st.ci_high) == pytest.approx(stats.t_interval(errs, 0.95))
        assert set(c.metrics) == {"train_error", "test_error", "train_loss", "test_loss"}
        ratios = [r.grad[0].ratio_first_last for r in runs]  # the first profile: the net at initialisation
        assert c.log10_grad_ratio_init.values == pytest.approx([math.log10(x) for x in ratios])
        assert c.grad_ratio_init == pytest.approx(math.prod(ratios) ** (1 / 3))  # geometric mean
        assert c.log10_grad_ratio_final.values == pytest.approx([math.log10(r.grad[-1].ratio_first_last)
                                                                 for r in runs])
        for r in runs:
            assert r.run_dir.endswith(f"runs/synthetic/{r.model}-s{r.seed}")
    assert res.cell("synthetic", "resnet8").arch == "residual"
    with pytest.raises(KeyError, match="no cell synthetic/resnet20"):
        res.cell("synthetic", "resnet20")

    # A rerun is a no-op that returns the same result; another grid in the folder is refused.
    logs = []
    assert run(cfg, tmp_path, log=logs.append) == res and "already finished" in logs[0]
    with pytest.raises(ValueError, match=r"different config \(seeds"):
        run(parse_config({**GRID, "seeds": [0]}), tmp_path, log=lambda _: None)


def test_a_killed_sweep_resumes_its_unfinished_runs(tmp_path):
    cfg = parse_config({**GRID, "seeds": [0]})
    first = run(cfg, tmp_path / "a", log=lambda _: None, progress=False)
    # As if killed after the runs trained but before results.json: the runs are reused, not retrained.
    (tmp_path / "a" / "results.json").unlink()
    run_dir = tmp_path / "a" / "runs" / "synthetic" / "resnet8-s0"
    mtime = (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = run(cfg, tmp_path / "a", log=lambda _: None, progress=False)
    assert (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    assert again.cells == first.cells


def test_models_by_name_and_the_mlp_family():
    assert model_names(SweepConfig(family="mlp", depths=(4,), width=32)) == ("plainmlp-4x32", "resmlp-4x32")
    assert model_names(SweepConfig(depths=(20, 56), archs=("residual",), unit="pre")) == ("preresnet20",
                                                                                          "preresnet56")
    assert model_names(SweepConfig(models=("ResNet20", "plainmlp-8x64"))) == ("resnet20", "plainmlp-8x64")


@pytest.mark.parametrize("doc, message", [
    ({"depth": [8]}, r"unknown key 'depth'; did you mean 'depths'\?"),
    ({"epochs": 3}, r"unknown key 'epochs'; training options go in the \[train\] table"),
    ({"train": {"lrr": 0.1}}, r"unknown key \[train\] 'lrr'; did you mean 'lr'\?"),
    ({"train": {"epochs": 0}}, r"\[train\] epochs must be an integer >= 1, received 0"),
    ({"depths": [9]}, r"depths \[9\]: He et al. 2015 nets have 6n\+2 layers"),
    ({"depths": "20"}, r"depths is '20', expected a list of integers"),
    ({"seeds": []}, r"seeds is empty"),
    ({"datasets": ["mnist-2d"]}, r"unknown dataset 'mnist-2d'; did you mean mnist1d\?"),
    ({"family": "vgg"}, r"family must be one of he2015, mlp, received 'vgg'"),
    ({"models": ["resnet21"]}, r"models: 'resnet21': depth must be 6n\+2"),
    ({"archs": ["skip"]}, r"archs must be 'plain' and/or 'residual'"),
    ({"data_kwargs": {"cifar10": {}}}, r"data_kwargs names 'cifar10', which is not in datasets"),
])
def test_bad_sweep_input_is_one_line_naming_the_key(doc, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_config(doc, source="grid.toml")
    assert str(e.value).startswith("grid.toml: ") and "\n" not in str(e.value)


def test_toml_files(tmp_path):
    p = tmp_path / "grid.toml"
    p.write_text('family = "mlp"\ndepths = [4]\nseeds = [0, 1]\ndatasets = ["synthetic"]\n'
                 '[train]\nepochs = 3\nlr = 0.01\nmilestones = [0.5]\n[data_kwargs.synthetic]\nn_train = 64\n')
    cfg = load_config(p, device="cpu")
    assert cfg.train.epochs == 3 and cfg.train.milestones == (0.5,) and cfg.train.device == "cpu"
    assert cfg.data_kwargs == {"synthetic": {"n_train": 64}}
    assert json.loads(json.dumps(cfg.to_dict()))["family"] == "mlp"
    p.write_text("depths = [20\n")
    with pytest.raises(ValueError, match=r"grid.toml is not valid TOML"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "none.toml")
