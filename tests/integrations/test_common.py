"""Metric names, option checks and lazy imports shared by every integration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import resgrad
from resgrad.integrations import metric_dict
from resgrad.probes import GradientMonitor


def test_metric_names_follow_the_documented_scheme():
    model = resgrad.build("resmlp", depth=2, width=8, in_features=4, num_classes=3)
    with GradientMonitor(model, activations=True) as mon:
        nn.functional.cross_entropy(model(torch.randn(3, 4)), torch.tensor([0, 1, 2])).backward()
        mon.step()
    m = metric_dict(mon.records)
    blocks = mon.block_profile()
    assert m["resgrad/block_grad/0"] == pytest.approx(blocks[0]) and m["resgrad/block_grad/1"] == pytest.approx(blocks[1])
    for name, p in model.named_parameters():
        assert m[f"resgrad/grad_norm/{name}"] == pytest.approx(float(p.grad.norm()), rel=1e-6)
    assert any(k.startswith("resgrad/act_grad_norm/") for k in m)
    assert m["resgrad/nonfinite/total"] == 0 and not any(k.startswith("resgrad/nonfinite/b") for k in m)


def test_options_checked_without_a_model():
    with pytest.raises(TypeError, match="unknown GradientMonitor option 'evry'; valid options: every"):
        GradientMonitor.check_options(evry=2)
    with pytest.raises(TypeError, match="sync_dist must be"):
        GradientMonitor.check_options(sync_dist="yes")
    with pytest.raises(TypeError, match="params must be True or False"):
        GradientMonitor.check_options(params=1)
    with pytest.raises(ValueError, match="activations must be"):
        GradientMonitor.check_options(activations=1)
    GradientMonitor.check_options(every=3, activations="blocks", sync_dist=False)  # fine


def test_frozen_model_fails_at_construction():
    with pytest.raises(ValueError, match=r"Linear has no parameters that require grad \(received 2 frozen\)"):
        GradientMonitor(nn.Linear(2, 2).requires_grad_(False))


def test_importing_integrations_imports_no_framework():
    src = str(Path(resgrad.__file__).resolve().parents[1])
    code = ("import sys; import resgrad.integrations, resgrad.integrations.loggers; "
            "bad = [m for m in ('lightning', 'transformers', 'wandb', 'mlflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={"PYTHONPATH": src, "PATH": ""})
