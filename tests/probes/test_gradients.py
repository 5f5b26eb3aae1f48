"""GradientMonitor against plain autograd (an independent computation), hooks removed, edge cases."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resgrad
from resgrad.probes import GradientMonitor, block_gradient_profile


def _hooks_left(model: nn.Module) -> list[str]:
    left = []
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs"):
            if getattr(m, attr, None):
                left.append(f"{name or '<root>'}.{attr}")
    return left


def _data(shape=(8, 1, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randint(0, 10, (shape[0],), generator=g)


def _param_rows(mon: GradientMonitor, step: int = 0) -> dict[str, dict]:
    return {r["name"]: r for r in mon.records if r["kind"] == "param" and r["step"] == step}


@pytest.mark.parametrize("name", ["resnet20", "resmlp-4x64", "plain20"])
def test_param_norms_equal_grad_norm(name):
    torch.manual_seed(0)
    model = resgrad.build_for(name, (1, 40), 10)
    x, y = _data()
    with GradientMonitor(model) as mon:
        F.cross_entropy(model(x), y).backward()
        assert mon.step() is True
    rows = _param_rows(mon)
    for pname, p in model.named_parameters():
        assert rows[pname]["norm"] == pytest.approx(float(p.grad.norm()), rel=1e-5)
        assert rows[pname]["numel"] == p.numel()
        assert rows[pname]["nonfinite"] == 0
        assert rows[pname]["rms"] == pytest.approx(float(p.grad.norm()) / math.sqrt(p.numel()), rel=1e-5)
    assert not _hooks_left(model)


def test_torchvision_resnet18_params_and_activations():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None, num_classes=10)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    with GradientMonitor(model, activations=True) as mon:
        F.cross_entropy(model(x), y).backward()
        mon.step()
    rows = _param_rows(mon)
    for pname, p in model.named_parameters():
        assert rows[pname]["norm"] == pytest.approx(float(p.grad.norm()), rel=1e-5), pname
    acts = {r["name"]: r for r in mon.records if r["kind"] == "activation"}
    # BasicBlock calls its one self.relu twice: two rows; in-place ReLU is fine with tensor hooks.
    assert "layer1.0.relu" in acts and "layer1.0.relu#1" in acts
    assert acts["fc"]["norm"] > 0 and all(r["nonfinite"] == 0 for r in acts.values())
    assert not _hooks_left(model)


def _capture_blocks(model: nn.Module, x, y):
    """Reference: torch.autograd.grad w.r.t. every block's input and output."""
    ins, outs, hs = [], [], []
    for b in resgrad.blocks(model):
        hs.append(b.register_forward_pre_hook(lambda m, a: ins.append(a[0])))
        hs.append(b.register_forward_hook(lambda m, a, o: outs.append(o)))
    loss = F.cross_entropy(model(x), y)
    for h in hs:
        h.remove()
    grads = torch.autograd.grad(loss, ins + outs)
    n = len(ins)
    return [float(g.norm()) for g in grads[:n]], [float(g.norm()) for g in grads[n:]]


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resmlp-4x64"])
def test_block_activation_norms_equal_autograd(name):
    torch.manual_seed(0)
    model = resgrad.build_for(name, (1, 40), 10)
    x, y = _data()
    ref_in, ref_out = _capture_blocks(model, x, y)  # BN in train mode: same batch, same output
    with GradientMonitor(model, params=False, activations=True) as mon:
        F.cross_entropy(model(x), y).backward()
        mon.step()
    assert mon.block_profile(at="input") == pytest.approx(ref_in, rel=1e-5)
    assert mon.block_profile(at="output") == pytest.approx(ref_out, rel=1e-5)
    # blocks-only mode gives the same profile with fewer hooks
    with GradientMonitor(model, params=False, activations="blocks") as mon2:
        F.cross_entropy(model(x), y).backward()
        mon2.step()
    assert mon2.block_profile() == pytest.approx(ref_in, rel=1e-5)
    assert {r["kind"] for r in mon2.records} == {"input", "activation"}


def test_leaf_activation_norm_equals_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x = torch.randn(4, 5)
    h = model[0](x)
    a = model[1](h)
    out = model[2](a)
    gh, ga, go = torch.autograd.grad(out.pow(2).sum(), (h, a, out))
    with GradientMonitor(model, activations=True) as mon:
        model(x).pow(2).sum().backward()
        mon.step()
    acts = {r["name"]: r["norm"] for r in mon.records if r["kind"] == "activation"}
    assert acts == pytest.approx({"0": float(gh.norm()), "1": float(ga.norm()), "2": float(go.norm())}, rel=1e-6)


def test_no_hook_remains_after_exit_and_exception():
    torch.manual_seed(0)
    model = resgrad.build_for("resnet20", (1, 40), 10)
    x, y = _data()
    kept = []
    h = model.stem.register_forward_hook(lambda m, a, o: kept.append(o))
    with pytest.raises(RuntimeError, match="boom"), GradientMonitor(model, activations=True):
        loss = F.cross_entropy(model(x), y)  # tensor hooks now sit on activations
        raise RuntimeError("boom")
    h.remove()
    assert not _hooks_left(model)
    assert not kept[0]._backward_hooks  # tensor hooks removed too
    loss.backward()  # a late backward must not write into the closed monitor


def test_nonfinite_counted_not_dropped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    w = torch.ones(5, 2)
    w[0, 0] = float("inf")
    with GradientMonitor(model, activations=True) as mon:
        (model(x) * w).sum().backward()
        model[0].bias.grad[0] = float("nan")
        mon.step()
    rows = {(r["kind"], r["name"]): r for r in mon.records}
    assert rows[("activation", "1")]["nonfinite"] == 1
    assert rows[("param", "0.bias")]["nonfinite"] >= 1
    assert not math.isfinite(rows[("param", "0.bias")]["norm"])
    assert rows[("param", "1.weight")]["nonfinite"] == 3  # inf * activations in one row of W


def test_grad_none_parameters_are_rows_not_crashes():
    model = nn.ModuleDict({"used": nn.Linear(3, 2), "unused": nn.Linear(3, 2)})
    model.unused.bias.requires_grad_(False)  # frozen: not monitored
    x = torch.randn(4, 3)
    with GradientMonitor(model, weights=True) as mon:
        model["used"](x).sum().backward()
        mon.step()
    rows = {(r["kind"], r["name"]): r for r in mon.records}
    assert rows[("param", "unused.weight")]["norm"] is None
    assert rows[("param", "unused.weight")]["nonfinite"] is None
    assert ("param", "unused.bias") not in rows
    assert rows[("param", "used.weight")]["norm"] > 0
    assert rows[("weight", "unused.weight")]["norm"] == pytest.approx(float(model.unused.weight.detach().norm()))


def test_every_and_schedule():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    for kwargs, want in (({"every": 2}, {0, 2}), ({"schedule": lambda s: s in (1, 3)}, {1, 3})):
        with GradientMonitor(model, activations=True, **kwargs) as mon:
            for _ in range(4):
                model(x).sum().backward()
                mon.step()
                model.zero_grad()
        assert {r["step"] for r in mon.records} == want
        assert {r["step"] for r in mon.records if r["kind"] == "activation"} == want


def test_gradient_accumulation_combines_passes():
    model = nn.Linear(3, 2)
    xs = [torch.randn(4, 3), torch.randn(4, 3)]
    refs = [torch.autograd.grad(model(x).pow(2).sum(), model.weight)[0] for x in xs]
    outs = []
    for x in xs:
        o = model(x)
        outs.append(float(torch.autograd.grad(o.pow(2).sum(), o)[0].norm()))
    with GradientMonitor(model, activations=True) as mon:
        for x in xs:
            model(x).pow(2).sum().backward()
        mon.step()
    rows = {(r["kind"], r["name"]): r for r in mon.records}
    assert rows[("param", "weight")]["norm"] == pytest.approx(float((refs[0] + refs[1]).norm()), rel=1e-5)
    assert rows[("activation", "<model>")]["norm"] == pytest.approx(math.hypot(*outs), rel=1e-5)
    assert rows[("activation", "<model>")]["numel"] == 16


def test_amp_grad_scaler_unscaled():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    ref = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with GradientMonitor(model, scaler=scaler, activations=True) as mon:
        scaler.scale(F.cross_entropy(model(x), y)).backward()
        mon.step()  # grads still scaled: the monitor divides
        opt.zero_grad()
        scaler.scale(F.cross_entropy(model(x), y)).backward()
        scaler.unscale_(opt)
        mon.on_before_optimizer_step(model, opt, 1)  # already unscaled: not divided again
        scaler.step(opt)
        scaler.update()
    for step in (0, 1):
        rows = _param_rows(mon, step)
        for (pname, _), g in zip(model.named_parameters(), ref, strict=True):
            assert rows[pname]["norm"] == pytest.approx(float(g.norm()), rel=1e-4), (step, pname)
    act = [r for r in mon.records if r["kind"] == "activation" and r["name"] == "2"]
    assert act[0]["norm"] == pytest.approx(act[1]["norm"], rel=1e-5)
    assert act[0]["norm"] < 10  # divided by 1024


def test_callback_mode_and_update_ratio():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 4)
    mon = GradientMonitor(model, updates=True, activations=True)
    mon.on_train_start(model)
    assert mon.attached
    w0 = model.weight.detach().clone()
    for step in range(2):
        model(x).pow(2).mean().backward()
        mon.on_after_backward(model, step)
        mon.on_before_optimizer_step(model, opt, step)
        opt.step()
        opt.zero_grad()
        if step == 0:
            w1 = model.weight.detach().clone()
    mon.on_train_end(model)
    assert not mon.attached and not _hooks_left(model)
    upd = [r for r in mon.records if r["kind"] == "update" and r["name"] == "weight"]
    assert [r["step"] for r in upd] == [0, 1]
    assert upd[0]["ratio"] == pytest.approx(float((w1 - w0).norm() / w0.norm()), rel=1e-5)
    assert mon.state_dict() == {"step": 2}


def test_exports(tmp_path, monkeypatch):
    from resgrad.integrations.loggers import records_frame, records_to_jsonl
    from resgrad.probes import _exports

    monkeypatch.setattr(_exports, "_WARNED", set())  # warned once per process: reset for this test

    model = nn.Linear(3, 2)
    with GradientMonitor(model) as mon:
        model(torch.randn(2, 3)).sum().backward()
        mon.step()
    p = records_to_jsonl(mon, tmp_path / "g.jsonl")
    with open(p) as f:
        lines = [json.loads(s) for s in f]
    assert len(lines) == 2 and lines[0]["kind"] == "param"
    assert lines[0]["norm"] == pytest.approx(float(model.weight.grad.norm()), rel=1e-6)
    pd = pytest.importorskip("pandas")
    df = records_frame(mon)
    assert isinstance(df, pd.DataFrame) and list(df.columns)[:3] == ["step", "name", "kind"]
    # The 0.1 methods still work, warning once that they moved.
    with pytest.warns(DeprecationWarning, match="records_to_jsonl"):
        p2 = mon.to_jsonl(tmp_path / "g2.jsonl")
    with open(p) as f, open(p2) as g:
        assert f.read() == g.read()
    with pytest.warns(DeprecationWarning, match="records_frame"):
        assert mon.to_pandas().equals(df)


def test_bad_arguments_say_what_was_received():
    with pytest.raises(TypeError, match="received type"):
        GradientMonitor(nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every must be"):
        GradientMonitor(nn.Linear(2, 2), every=0)
    with pytest.raises(ValueError, match="activations must be"):
        GradientMonitor(nn.Linear(2, 2), activations="some")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["resnet20", "plain20", "plainmlp-16x64"])
def test_log_space_profile_equals_autograd(name):
    torch.manual_seed(0)
    model = resgrad.build_for(name, (1, 40), 10).double()
    x, y = _data()
    ref_in, _ = _capture_blocks(model, x.double(), y)
    prof = block_gradient_profile(model, x.double(), y)
    assert prof["log10_norm"] == pytest.approx([math.log10(v) for v in ref_in], abs=1e-9)
    assert prof["numel"][0] == 8 * (16 * 40 if "mlp" not in name else 64)


def test_log_space_profile_deep_sigmoid_is_tiny_not_zero():
    torch.manual_seed(0)
    model = resgrad.build("plainmlp", depth=256, width=32, activation="sigmoid", in_features=40)
    x, y = _data()
    prof = block_gradient_profile(model, x, y)  # float32 throughout
    ratio = prof["log10_norm"][0] - prof["log10_norm"][-1]
    assert -400 < ratio < -60  # far below float32's smallest number, still measured
    with pytest.raises(ValueError, match="no resgrad blocks"):
        block_gradient_profile(nn.Linear(40, 10), x.flatten(1), y)


def test_as_a_fit_callback():
    fit = getattr(resgrad, "fit", None)
    if fit is None:
        pytest.skip("resgrad.fit is not available")
    torch.manual_seed(0)
    model = resgrad.build_for("resmlp-4x64", (1, 40), 10)
    data = resgrad.load_data("synthetic", n_train=64, n_test=16)
    cfg = resgrad.TrainConfig(epochs=1, batch_size=32, lr=0.01, device="cpu")
    with GradientMonitor(model, every=1, activations="blocks") as mon:
        fit(model, data, cfg, callbacks=[mon], progress=False)
    assert {r["step"] for r in mon.records} == {0, 1}
    assert len(mon.block_profile(step=1)) == 4 and not _hooks_left(model)


def test_device_path_without_host_reads(monkeypatch):
    """The accelerator path (float64 accumulation, counts on the device, no .item()) agrees."""
    from resgrad.probes import _norms

    monkeypatch.setattr(_norms, "host_readable", lambda t: False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    w = torch.ones(5, 2)
    w[0, 0] = float("inf")
    with GradientMonitor(model, activations=True) as mon:
        (model(x) * w).sum().backward()
        model[0].bias.grad[1] = float("nan")
        mon.step()
    rows = {(r["kind"], r["name"]): r for r in mon.records}
    assert rows[("param", "2.weight")]["nonfinite"] == 3
    assert rows[("param", "0.bias")]["nonfinite"] >= 1
    assert rows[("activation", "2")]["nonfinite"] == 1
    model.zero_grad()
    model(x).sum().backward()
    with GradientMonitor(model) as mon:
        mon.step()
    for name, p in model.named_parameters():
        assert _param_rows(mon)[name]["norm"] == pytest.approx(float(p.grad.norm()), rel=1e-6)


def test_transformer_encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    x = torch.randn(3, 5, 16)
    with GradientMonitor(model, activations=True) as mon:
        model(x).pow(2).mean().backward()
        mon.step()
    rows = _param_rows(mon)
    for pname, p in model.named_parameters():
        assert rows[pname]["norm"] == pytest.approx(float(p.grad.norm()), rel=1e-5)
    acts = {r["name"] for r in mon.records if r["kind"] == "activation"}
    assert {"layers.0.linear1", "layers.1.norm2"} <= acts
    assert not _hooks_left(model)
