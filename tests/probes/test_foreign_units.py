"""GradientMonitor on models without resgrad blocks: the residual units come from the
adapter registry and are hooked on the model's own modules. The rows must equal the rows
of the same monitor on ``resgrad.adapt(model)``, whose Residual units hook the unit's
input and output tensors directly, and the model must be left as it was."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import resgrad
from resgrad.probes import GradientMonitor

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(norm_first: bool) -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    return nn.Sequential(nn.Linear(4, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(16, 3))


def _bert() -> nn.Module:
    T = pytest.importorskip("transformers")
    return T.BertForSequenceClassification(T.BertConfig(
        num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=40,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3))


def _resnet() -> nn.Module:
    tv = pytest.importorskip("torchvision")
    return tv.models.resnet18(num_classes=3)


CASES = {
    "torchvision": (_resnet, lambda: torch.randn(2, 3, 32, 32), lambda m, x: m(x)),
    "encoder-post-norm": (lambda: _encoder(False), lambda: torch.randn(2, 5, 4), lambda m, x: m(x).mean(1)),
    "encoder-pre-norm": (lambda: _encoder(True), lambda: torch.randn(2, 5, 4), lambda m, x: m(x).mean(1)),
    "bert": (_bert, lambda: torch.randint(0, 40, (2, 6)), lambda m, x: m(input_ids=x).logits),
}


def _rows(model, x, call, **opts):
    y = torch.tensor([0, 2])
    with GradientMonitor(model, activations="blocks", **opts) as mon:
        nn.functional.cross_entropy(call(model, x), y).backward()
        mon.step()
    return mon


@pytest.mark.parametrize("case", list(CASES))
def test_rows_equal_the_adapted_view(case):
    make, inputs, call = CASES[case]
    torch.manual_seed(0)
    model = make().eval()  # eval: BatchNorm uses running stats, the same in both runs
    twin = copy.deepcopy(model)
    keys, n_hooks = list(model.state_dict()), sum(len(m._forward_hooks) for m in model.modules())
    x = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no hook ran" / compile warning
        mine = _rows(model, x, call)
    ref = _rows(resgrad.adapt(twin), x, call)
    got = {(r["kind"], r["name"]): r for r in mine.records if r["kind"] in ("input", "activation")}
    want = {(r["kind"], r["name"]): r for r in ref.records if r["kind"] in ("input", "activation")}
    assert got.keys() == want.keys() and len(got) >= 8
    for k, r in want.items():
        assert got[k]["norm"] == pytest.approx(r["norm"], rel=1e-6), k
        assert got[k]["block"] == r["block"] and got[k]["numel"] == r["numel"]
    assert mine.block_profile() == pytest.approx(ref.block_profile(), rel=1e-6)
    # Parameters are labelled with their unit, as on the adapted view.
    pb = {r["name"]: r["block"] for r in mine.records if r["kind"] == "param"}
    assert any(b is not None for b in pb.values())
    assert list(model.state_dict()) == keys
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks


def test_no_units_is_said_at_construction_without_blaming_compile():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.warns(RuntimeWarning, match="no resgrad block and no residual unit") as got:
        mon = GradientMonitor(model, activations="blocks")
    assert "compile" not in str(got[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: not again at the step
        with mon:
            model(torch.randn(2, 3)).sum().backward()
            mon.step()
    assert {r["kind"] for r in mon.records} == {"param"}


def test_hooks_that_did_not_run_name_both_causes():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    other = nn.Linear(3, 2)
    with GradientMonitor(model, activations=True) as mon:
        model[0].weight.grad = torch.ones(4, 3)  # gradients exist, but no monitored module ran
        other(torch.randn(2, 3)).sum().backward()
        with pytest.warns(RuntimeWarning, match="did not run its hooked modules, or it is torch.compile'd"):
            mon.step()


class _MyBlock(nn.Module):
    """A user's residual block: x + f(x), then tanh."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d))
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(x + self.f(x))


@pytest.fixture
def clean_registry():
    from resgrad.nets.adapters import _registry

    saved, builtin = dict(_registry._ADAPTERS), set(_registry._BUILTIN)
    yield
    _registry._ADAPTERS.clear()
    _registry._ADAPTERS.update(saved)
    _registry._BUILTIN.clear()
    _registry._BUILTIN.update(builtin)


@pytest.mark.usefixtures("clean_registry")
def test_a_registered_user_block_is_found_and_matches_autograd():
    resgrad.register_adapter(_MyBlock, lambda b: resgrad.Residual(b.f, post=b.act))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), _MyBlock(6), _MyBlock(6), nn.Linear(6, 2))
    x = torch.randn(4, 3)
    with GradientMonitor(model, activations="blocks") as mon:
        model(x).square().sum().backward()
        mon.step()
    xs = []
    hs = [model[i].register_forward_pre_hook(lambda m, a: xs.append(a[0])) for i in (1, 2)]
    hs.append(model[2].register_forward_hook(lambda m, a, o: xs.append(o)))
    ref = torch.autograd.grad(model(x).square().sum(), xs)
    for h in hs:
        h.remove()
    rows = {(r["kind"], r["name"]): r["norm"] for r in mon.records}
    assert rows[("input", "1")] == pytest.approx(float(ref[0].norm()), rel=1e-6)
    assert rows[("input", "2")] == pytest.approx(float(ref[1].norm()), rel=1e-6)
    assert rows[("activation", "2")] == pytest.approx(float(ref[2].norm()), rel=1e-6)
    assert mon.block_profile() == pytest.approx([float(ref[0].norm()), float(ref[1].norm())], rel=1e-6)


def test_a_refused_layer_is_skipped_with_one_line():
    T = pytest.importorskip("transformers")
    model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=8,
                                           add_cross_attention=True, bos_token_id=0, eos_token_id=0))
    with pytest.warns(RuntimeWarning, match=r"transformer.h.0 is not watched as residual units: .*cross-attention"):
        GradientMonitor(model, activations="blocks")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # parameters only: nothing to say
        GradientMonitor(model)
