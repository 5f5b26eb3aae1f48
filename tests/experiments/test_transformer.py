"""The Transformer study: flow at init against a hand-run backward, the quick experiment end to end
(results validate, a rerun is a no-op, layer lesions equal brute force), the CLI's bad input."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from resgrad import paths
from resgrad.cli import app
from resgrad.data import load as load_data
from resgrad.experiments import transformer as T
from resgrad.nets import blocks, gates
from resgrad.nets.transformer import Transformer
from resgrad.results import TransformerResult, load
from resgrad.rundir import RunDir
from resgrad.train import load_run

runner = CliRunner()


@pytest.mark.parametrize("kind", ["preln", "postln", "noskip"])
def test_flow_at_init_equals_a_unit_by_unit_backward(kind):
    torch.manual_seed(0)
    net = Transformer(3, kind=kind, d_model=16, n_heads=2).double()
    x = torch.randn(8, 1, 40, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    norms, streams = T.flow_at_init(net, x, y)
    # Reference: run the units one by one, keep every stream tensor, one .backward().
    h = net.embed(x.reshape(8, -1, 4)) + net.pos
    hs = []
    for u in net.blocks:
        h.retain_grad()
        hs.append(h)
        h = u(h)
    h.retain_grad()
    hs.append(h)
    net.zero_grad()
    F.cross_entropy(net.head(net.norm(h).mean(1)), y).backward()
    torch.testing.assert_close(torch.tensor(streams, dtype=torch.float64),
                               torch.stack([t.grad.norm() for t in hs]), rtol=1e-12, atol=0)
    for u, n in zip(net.blocks, norms, strict=True):
        op = u.branch.op  # the sublayer's weights, its LayerNorm left out
        ref = math.sqrt(sum(float(p.grad.square().sum()) for p in op.parameters()))
        assert n == pytest.approx(ref, rel=1e-12)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf") / "quick"
    lines: list[str] = []
    result = T.run(T.preset("quick"), out, log=lines.append, progress=False)
    return out, result, lines


def test_quick_study_writes_a_valid_result(quick):
    out, r, _ = quick
    again = load(out / "results.json")
    assert isinstance(again, TransformerResult) and again.to_json() == r.to_json()
    assert r.task == "classify" and r.layers == 2
    assert {(c.kind, c.warmup) for c in r.cells} == {(k, w) for k in ("preln", "postln", "noskip")
                                                     for w in (False, True)}
    for row in r.flow.rows:
        assert len(row.param_norms) == 2 * row.depth and len(row.stream_norms) == 2 * row.depth + 1
        assert row.growth == pytest.approx(row.layer_norms[-1] / row.layer_norms[0])
        assert row.layer_norms[0] == pytest.approx(math.hypot(*row.param_norms[:2]))
    # The recipe: AdamW, linear warm-up in the warm-up runs only.
    for run in r.runs:
        cfg = json.loads((RunDir(run.run_dir).path / "config.json").read_text())["config"]
        assert cfg["optimizer"] == "adamw" and cfg["warmup_shape"] == "linear"
        assert (cfg["warmup_iters"] > 0) == run.warmup
        assert [h["epoch"] for h in run.history] == [1, 2]
    # The pre-LN net's exact decomposition sums to autograd over its 4 units.
    assert r.ensemble is not None and r.ensemble.n == 4 and r.ensemble.exact.rel_error < 1e-4


def test_layer_lesions_equal_brute_force(quick):
    out, r, _ = quick
    data = load_data("mnist1d").subset(512, 256)
    for kind, les in r.lesions.items():
        run = next(x for x in r.runs if x.kind == kind and not x.warmup)
        model, _ = load_run(run.run_dir)
        with torch.no_grad():
            base = (model.eval()(data.x_test).argmax(1) != data.y_test).float().mean().item()
            assert les.base == pytest.approx(base)
            for layer in range(les.layers):
                with gates(model, lesion=[2 * layer, 2 * layer + 1]):
                    e = (model(data.x_test).argmax(1) != data.y_test).float().mean().item()
                assert les.single[layer] == pytest.approx(e)
        (c,) = les.consecutive  # 2 layers: k = 1 only
        assert c.errors == les.single and c.best == min(les.single)
        assert c.angular_error == c.errors[c.angular_start]
        counts = torch.bincount(data.y_test, minlength=10)
        assert les.chance == pytest.approx(1 - counts.max().item() / len(data.y_test))
        assert les.reorder is None  # 2 layers: no middle to reorder
    assert len(blocks(model)) == 4


def test_a_rerun_is_a_no_op_and_another_config_is_refused(quick):
    out, r, _ = quick
    ckpt = out / "runs" / "preln-2-nowarmup-s0" / "checkpoints" / "last.pt"
    mtime = ckpt.stat().st_mtime_ns
    lines: list[str] = []
    again = T.run(T.preset("quick"), out, log=lines.append)
    assert again.to_json() == r.to_json() and any("already finished" in s for s in lines)
    assert ckpt.stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different config"):
        T.run(T.preset("quick", epochs=3), out, log=lines.append)


def test_reorder_of_the_middle_layers_uses_the_given_order():
    torch.manual_seed(0)
    data = load_data("mnist1d").subset(256, 128)
    cfg = T.TransformerConfig(layers=5, shuffles=2, flow_depths=(2,), flow_seeds=(0,))
    model = Transformer(5, kind="preln")
    les = T._layer_lesion(model, "preln", "preln-5", data, cfg, seed=0)
    assert les["reorder"]["layers"] == [1, 2, 3]
    with paths.reordered(model, T._layer_units([0, 3, 2, 1, 4])):
        e = paths.error_rate(model, data.x_test, data.y_test)
    assert les["reorder"]["reversed"] == pytest.approx(e)
    assert [c["k"] for c in les["consecutive"]] == [1, 2, 3, 4]
    assert len(les["consecutive"][1]["errors"]) == 4  # starts 0..3 for k = 2


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("hello world")
    cases = [
        (["transformer", "--size", "huge"], "--size must be one of quick, default, full"),
        (["transformer", "--text", str(tmp_path / "missing.txt")], "no such file"),
        (["transformer", "--text", str(short)], "too short"),
        (["transformer", "--epochs", "0"], "--epochs must be >= 1"),
    ]
    for args, msg in cases:
        res = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--device", "cpu"])
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "o").exists()  # nothing written for bad input


def test_cli_runs_the_quick_size_and_renders_its_report(tmp_path):
    out = tmp_path / "tf"
    args = ["transformer", "--size", "quick", "--out", str(out), "--device", "cpu", "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "report:" in res.output.strip().splitlines()[-1]
    assert isinstance(load(out / "results.json"), TransformerResult)
    assert "Transformer" in (out / "report.html").read_text()
    again = runner.invoke(app, args)  # finished: a no-op that re-renders
    assert again.exit_code == 0 and "already finished" in again.output
