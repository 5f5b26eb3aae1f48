"""resgrad.adapt: foreign residual nets as Residual blocks, same outputs, shared weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resgrad
from resgrad.nets import Residual, adapt, residual_blocks

tvr = pytest.importorskip("torchvision.models.resnet")


pytestmark = pytest.mark.usefixtures("one_thread")  # small nets: see tests/conftest.py


def shares_everything(view: nn.Module, orig: nn.Module) -> bool:
    ids = lambda m: {id(t) for t in [*m.parameters(), *m.buffers()]}  # noqa: E731
    return ids(view) == ids(orig)


def outputs(model: nn.Module, x: torch.Tensor, train: bool, **kw) -> torch.Tensor:
    model.train(train)
    return model(x, **kw)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(
    "make,n_blocks,n_down",
    [
        (lambda: tvr.resnet18(weights=None, num_classes=7), 8, 3),
        (lambda: tvr.ResNet(tvr.Bottleneck, [1, 2, 1, 1], num_classes=5), 5, 4),
    ],
    ids=["resnet18", "bottleneck"],
)
def test_torchvision_resnets(make, n_blocks, n_down, train):
    torch.manual_seed(0)
    orig = make()
    view = adapt(orig)
    x = torch.randn(2, 3, 16, 16)  # layer4 runs at 1x1: small and still exercises every block
    assert torch.equal(outputs(view, x, train), outputs(orig, x, train))
    rb = residual_blocks(view)
    assert len(rb) == n_blocks and sum(b.changes_shape for b in rb) == n_down
    assert shares_everything(view, orig)
    assert residual_blocks(orig) == [] and isinstance(orig.layer1[0], (tvr.BasicBlock, tvr.Bottleneck))
    # One set of weights: a change through the view is a change of the original.
    with torch.no_grad():
        rb[0].branch.conv1.weight.add_(1.0)
    orig.eval(), view.eval()
    assert torch.equal(view(x), orig(x))


def encoder(norm_first: bool, activation="relu") -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True,
        norm_first=norm_first, activation=activation,
    )
    return nn.TransformerEncoder(layer, num_layers=3, norm=nn.LayerNorm(16), enable_nested_tensor=False)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_transformer_encoder(norm_first, train):
    orig = encoder(norm_first, activation="gelu" if norm_first else "relu")
    view = adapt(orig)
    x = torch.randn(2, 5, 16)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    for kw in ({}, {"src_key_padding_mask": pad}, {"mask": causal, "is_causal": True}):
        torch.testing.assert_close(outputs(view, x, train, **kw), outputs(orig, x, train, **kw), rtol=1e-5, atol=1e-6)
    rb = residual_blocks(view)
    assert len(rb) == 6  # attention and feed-forward per layer
    assert shares_everything(view, orig)
    post = [type(b.post).__name__ for b in rb]
    assert post == (["Identity"] * 6 if norm_first else ["LayerNorm"] * 6)


def test_single_encoder_layer_with_a_mask():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=True)  # (S, B, E)
    view = adapt(layer)
    x = torch.randn(4, 3, 8)
    mask = torch.zeros(4, 4).masked_fill(torch.eye(4, dtype=torch.bool).roll(1, 1), float("-inf"))
    torch.testing.assert_close(view(x, src_mask=mask), layer(x, src_mask=mask), rtol=1e-5, atol=1e-6)
    assert all(isinstance(b, Residual) for b in (view.attn, view.ff))


def test_path_tools_apply_to_an_adapted_resnet():
    torch.manual_seed(0)
    view = adapt(tvr.resnet18(weights=None, num_classes=4)).double()
    x, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 3])
    dec = resgrad.paths.decompose(view, x, targets=y, training=False)
    assert dec.n == 8 and dec.rel_error < 1e-10
    out = view.eval()(x)
    with resgrad.paths.deleted(view, blocks=[]):
        assert torch.equal(view(x), out)


def test_native_model_is_returned_as_is():
    m = resgrad.build("resmlp-4x64")
    assert adapt(m) is m


def test_unsupported_model_names_what_is_supported():
    with pytest.raises(NotImplementedError, match=r"LSTM.*BasicBlock.*TransformerEncoderLayer"):
        adapt(nn.LSTM(3, 4))


def test_a_class_is_refused():
    with pytest.raises(TypeError, match="instantiate"):
        adapt(nn.Linear)
