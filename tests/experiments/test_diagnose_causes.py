"""diagnose names causes: each built into a model (it must fire) and left out (it must not)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from resgrad.experiments.diagnose import DiagnoseConfig, run
from resgrad.nets.mlp import MLP
from resgrad.verdicts import DEAD_RELU_FRACTION


def _causes(model, shape=(8,), steps=1, batch=16, out=None):
    torch.manual_seed(0)
    r = run(DiagnoseConfig(spec="test", input_shape=shape, steps=steps, batch_size=batch), out, model=model)
    return {c.kind: c for c in r.causes}


def test_zero_init_branch_resgrad_mlp():
    zero = _causes(MLP(4, 16, in_features=8, branch_scale="zero_init_last"))
    c = zero["zero-init-branch"]
    assert len(c.modules) == 4 and all(n.endswith("weight") for n in c.modules)
    assert "--steps" in c.message and "Goyal" in c.message
    assert "zero-init-branch" not in _causes(MLP(4, 16, in_features=8))
    moved = _causes(MLP(4, 16, in_features=8, branch_scale="zero_init_last"), steps=3)["zero-init-branch"]
    assert "after 2 SGD step(s) 4 of them are no longer 0" in moved.message


def test_zero_init_branch_timm_resnet(tmp_path):
    timm = pytest.importorskip("timm")
    c = _causes(timm.create_model("resnet18", pretrained=False, num_classes=10), (3, 64, 64), batch=2,
                out=tmp_path / "r")
    want = [f"layer{s}.{b}.bn2.weight" for s in range(1, 5) for b in range(2)]  # the last BN of every block
    assert c["zero-init-branch"].modules == want
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["causes"][0]["modules"] == want  # in results.json too
    off = _causes(timm.create_model("resnet18", pretrained=False, num_classes=10, zero_init_last=False),
                  (3, 64, 64), batch=2)
    assert "zero-init-branch" not in off


def _relu_net(bias: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        net[0].bias.fill_(bias)
    return net


def test_dead_relu():
    c = _causes(_relu_net(-100.0))["dead-relu"]
    assert c.modules == ["1"] and "100%" in c.message and f"{DEAD_RELU_FRACTION:.0%}" in c.message
    assert "dead-relu" not in _causes(_relu_net(0.0))


class _Unused(nn.Module):
    def __init__(self, use: bool) -> None:
        super().__init__()
        self.a, self.spare, self.use = nn.Linear(8, 4), nn.Linear(8, 4), use

    def forward(self, x):
        return self.a(x) + (self.spare(x) if self.use else 0)


def test_params_without_grad():
    c = _causes(_Unused(False))["no-grad"]
    assert c.modules == ["spare"] and "not used in the forward" in c.message
    assert "no-grad" not in _causes(_Unused(True))


class _Sqrt(nn.Module):
    def forward(self, x):
        # Forward finite (sqrt(0) = 0); backward: d sqrt/du at 0 is inf, and u = x - x sends
        # +inf and -inf to x, which sum to NaN.
        return x + torch.sqrt(x - x)


def test_non_finite_origin():
    bad = nn.Sequential(nn.Linear(8, 16), _Sqrt(), nn.Linear(16, 4))
    with pytest.warns(RuntimeWarning):
        c = _causes(bad)["non-finite"]
    # The NaN first shows in the gradient at the Linear's output, made by _Sqrt's backward.
    assert c.modules == ["0"] and "produced by the backward of '1'" in c.message, c.message
    assert "non-finite" not in _causes(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)))


def test_zero_init_branch_explains_every_flag_and_keeps_the_stream_on_the_trend():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    r = run(DiagnoseConfig(spec="t", input_shape=(3, 64, 64), batch_size=2),
            model=timm.create_model("resnet18", pretrained=False, num_classes=10))
    flagged = [x for x in r.layers if x.flags]
    # the layers before each block's zero-initialised bn2 get exactly zero gradient ...
    want = {f"layer{s}.{b}.{m}" for s in range(1, 5) for b in range(2) for m in ("conv1", "bn1", "drop_block",
                                                                                   "act1", "aa", "conv2")}
    assert flagged and {x.name for x in flagged} <= want and all(x.flags == ["zero"] for x in flagged)
    assert {x.cause for x in flagged} == {"zero-init-branch"} and "no-known-cause" not in {c.kind for c in r.causes}
    # ... while each block's post-addition activation stays on the main path the trend is fitted on
    rows = {x.name: x for x in r.layers}
    assert rows["layer2.0.act2"].decades_from_trend is not None and not rows["layer2.0.act2"].flags
    assert r.trend.verdict == "healthy" and r.trend.left_out == 0
