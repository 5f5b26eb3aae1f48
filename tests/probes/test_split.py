"""The skip/branch split, forward ratios, stream and activation norms per residual unit
(GradientMonitor(split=True, act_norms=True)) against an independent computation.

The reference runs the model's ``resgrad.adapt`` view (or the resgrad net itself) without
any monitor, keeps each unit's input x, shortcut output s(x) and branch output F(x), and
takes the two parts of ∂L/∂x with plain ``torch.autograd.grad``: the skip part is the VJP
of s with ∂L/∂s, the branch part the VJP of F with ∂L/∂F. Their sum must be ∂L/∂x.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import resgrad
from resgrad.nets.blocks import Residual, blocks
from resgrad.probes import GradientMonitor

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(norm_first: bool) -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    return nn.Sequential(nn.Linear(4, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                         nn.Linear(16, 3))


def _gpt2() -> nn.Module:
    T = pytest.importorskip("transformers")
    return T.GPT2ForSequenceClassification(T.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, num_labels=3, pad_token_id=0))


def _bert() -> nn.Module:
    T = pytest.importorskip("transformers")
    return T.BertForSequenceClassification(T.BertConfig(
        num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=40,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3))


def _timm() -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model("resnet18", num_classes=3, pretrained=False)


def _resnet20() -> nn.Module:
    return resgrad.build_for("resnet20", (3, 16, 16), 3)


def _images(size: int) -> callable:
    return lambda: torch.randn(2, 3, size, size)


CASES = {
    "resgrad-resnet20": (_resnet20, _images(16), lambda m, x: m(x)),
    "timm-resnet18": (_timm, _images(32), lambda m, x: m(x)),
    "gpt2": (_gpt2, lambda: torch.randint(1, 40, (2, 6)), lambda m, x: m(input_ids=x).logits),
    "bert": (_bert, lambda: torch.randint(1, 40, (2, 6)), lambda m, x: m(input_ids=x).logits),
    "encoder-post-norm": (lambda: _encoder(False), lambda: torch.randn(2, 5, 4), lambda m, x: m(x).mean(1)),
    "encoder-pre-norm": (lambda: _encoder(True), lambda: torch.randn(2, 5, 4), lambda m, x: m(x).mean(1)),
}
TARGET = torch.tensor([0, 2])


def reference(view: nn.Module, x: torch.Tensor, call) -> dict[str, dict[str, float]]:
    """Per unit of ``view``: the two parts of ∂L/∂x by autograd.grad, and the forward norms."""
    units = [(n, b) for n, b in view.named_modules() if isinstance(b, Residual)]
    seen: dict[str, dict[str, torch.Tensor]] = {n: {} for n, _ in units}
    hooks = []
    for n, b in units:
        hooks.append(b.register_forward_pre_hook(lambda m, a, n=n: seen[n].__setitem__("x", a[0])))
        # view_as: s is a tensor of its own even when the shortcut is nn.Identity (returns x).
        hooks.append(b.shortcut.register_forward_hook(
            lambda m, a, o, n=n: seen[n].__setitem__("s", o.view_as(o)) or seen[n]["s"]))
        hooks.append(b.branch.register_forward_hook(lambda m, a, o, n=n: seen[n].__setitem__("f", o)))
        hooks.append(b.register_forward_hook(lambda m, a, o, n=n: seen[n].__setitem__("y", o)))
    try:
        loss = nn.functional.cross_entropy(call(view, x), TARGET)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for n, t in seen.items():
        gs, gf = torch.autograd.grad(loss, [t["s"], t["f"]], retain_graph=True)
        skip, = torch.autograd.grad(t["s"], t["x"], gs, retain_graph=True)
        branch, = torch.autograd.grad(t["f"], t["x"], gf, retain_graph=True)
        total, = torch.autograd.grad(loss, t["x"], retain_graph=True)
        torch.testing.assert_close(skip + branch, total, rtol=1e-5, atol=1e-9)  # the two parts add up
        out[n] = {"skip": skip.norm().item(), "branch": branch.norm().item(), "stream": t["x"].norm().item(),
                  "forward": t["f"].norm().item(), "act_norm": t["y"].norm().item(),
                  "ratio": (t["f"].norm() / t["x"].norm()).item()}
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_split_matches_autograd_of_each_path(case):
    make, inputs, call = CASES[case]
    torch.manual_seed(0)
    model = make().eval()  # eval: BatchNorm's running statistics, the same in both passes
    view = copy.deepcopy(model) if blocks(model) else resgrad.adapt(copy.deepcopy(model))
    x = inputs()
    want = reference(view, x, call)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    with GradientMonitor(model, split=True, act_norms=True) as mon:
        nn.functional.cross_entropy(call(model, x), TARGET).backward()
        mon.step()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    got: dict[str, dict[str, dict]] = {}
    for r in mon.records:
        if r["kind"] in ("skip", "branch", "stream", "forward", "act_norm"):
            got.setdefault(r["name"], {})[r["kind"]] = r
    assert got.keys() == want.keys() and len(want) >= 4
    for name, w in want.items():
        g = got[name]
        for kind in ("skip", "branch", "stream", "forward", "act_norm"):
            assert g[kind]["norm"] == pytest.approx(w[kind], rel=1e-5, abs=1e-12), (name, kind)
        assert g["forward"]["ratio"] == pytest.approx(w["ratio"], rel=1e-5)
        share = w["branch"] / (w["skip"] + w["branch"])
        assert g["branch"]["ratio"] == pytest.approx(share, rel=1e-5)
        assert g["skip"]["ratio"] + g["branch"]["ratio"] == pytest.approx(1.0)


def test_split_rows_compiled_equal_eager():
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    model = _resnet20().eval()
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 16, 16)

    def rows(m, compiled):
        with GradientMonitor(m, split=True, act_norms=True) as mon:
            fn = torch.compile(m, fullgraph=True) if compiled else m
            for _ in range(2):
                m.zero_grad()
                nn.functional.cross_entropy(fn(x), TARGET).backward()
                mon.step()
        return {(r["step"], r["kind"], r["name"]): r for r in mon.records if r["kind"] != "param"}

    eager, comp = rows(model, False), rows(twin, True)
    assert eager.keys() == comp.keys()
    assert {k[1] for k in eager} == {"skip", "branch", "stream", "forward", "act_norm"}
    for k, r in eager.items():
        assert comp[k]["norm"] == pytest.approx(r["norm"], rel=1e-4), k
        if r["ratio"] is not None:
            assert comp[k]["ratio"] == pytest.approx(r["ratio"], rel=1e-4), k


def test_plain_twin_branch_carries_the_whole_gradient():
    torch.manual_seed(0)
    model = resgrad.build_for("plain20", (3, 16, 16), 3).eval()
    with GradientMonitor(model, split=True, activations="blocks") as mon:
        nn.functional.cross_entropy(model(torch.randn(2, 3, 16, 16)), TARGET).backward()
        mon.step()
    rows = {(r["kind"], r["name"]): r for r in mon.records}
    units = [n for k, n in rows if k == "branch"]
    assert len(units) == 9
    for n in units:  # no skip in a Plain block: skip part 0, the branch is ∂L/∂x itself
        assert rows["skip", n]["norm"] == 0.0 and rows["branch", n]["ratio"] == 1.0
        assert rows["branch", n]["norm"] == pytest.approx(rows["input", n]["norm"], rel=1e-6)
