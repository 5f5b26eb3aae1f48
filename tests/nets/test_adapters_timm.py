"""resgrad.adapt on timm: ResNet/ResNeXt blocks, ConvNeXt blocks, ViT blocks (pretrained=False)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resgrad
from resgrad.nets import adapt, residual_blocks

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_thread")  # small nets: see tests/conftest.py


def _resnet(block: str, **kw) -> nn.Module:
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    return ResNet({"basic": BasicBlock, "bottleneck": Bottleneck}[block], [1, 1, 1, 1], num_classes=5, **kw)


def _vit(**kw) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=16, patch_size=8,
                             depth=2, embed_dim=32, num_heads=2, **kw)


# name -> (factory(drop_path_rate, **extra), units, units with a non-identity shortcut)
MODELS = {
    "resnet18": (lambda d, **kw: timm.create_model("resnet18", pretrained=False, num_classes=5,
                                                   drop_path_rate=d, **kw), 8, 3),
    "resnext": (lambda d, **kw: _resnet("bottleneck", cardinality=4, base_width=4, drop_path_rate=d, **kw), 4, 4),
    "seresnet": (lambda d, **kw: _resnet("basic", block_args={"attn_layer": "se"}, drop_path_rate=d, **kw), 4, 3),
    "convnext": (lambda d, **kw: timm.create_model("convnext_atto", pretrained=False, num_classes=5,
                                                   drop_path_rate=d, **kw), 12, 0),
    "convnext_conv_mlp": (lambda d, **kw: timm.create_model("convnext_atto", pretrained=False, num_classes=5,
                                                            conv_mlp=True, drop_path_rate=d, **kw), 12, 0),
    "vit": (lambda d, **kw: _vit(drop_path_rate=d, **kw), 4, 0),
}
# Initialisations that leave every branch carrying gradient (timm zeroes the last BN of ResNet
# branches and starts ConvNeXt's layer scale at 1e-6, which would make the branch terms ~0).
LIVE = {"resnet18": {"zero_init_last": False}, "resnext": {"zero_init_last": False},
        "seresnet": {"zero_init_last": False}, "convnext": {"ls_init_value": 1.0},
        "convnext_conv_mlp": {"ls_init_value": 1.0}, "vit": {"init_values": 0.5}}


def make(name: str, drop_path: float = 0.0, live: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name][0](drop_path, **(LIVE[name] if live else {})).double()


def images(name: str = "") -> torch.Tensor:
    size = 32 if "convnext" in name else 16  # ConvNeXt downsamples by 32
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def assert_same(a, b) -> None:
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def first_block(name: str, model: nn.Module) -> nn.Module:
    return model.blocks[0] if name == "vit" else model.stages[0].blocks[0] if "convnext" in name else model.layer1[0]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_equal_the_original(name, train):
    # Train mode: BatchNorm batch statistics and drop-path 0.2, both models seeded identically.
    orig = make(name, drop_path=0.2 if train else 0.0)
    before = {k: v.clone() for k, v in orig.state_dict().items()}
    view = adapt(orig)
    x = images(name)
    orig.train(train), view.train(train)
    torch.manual_seed(3)
    a = orig(x)
    torch.manual_seed(3)
    b = view(x)
    assert_same(b, a)
    rb = residual_blocks(view)
    _, n, down = MODELS[name]
    assert len(rb) == n and sum(b.changes_shape for b in rb) == down
    ids = lambda m: {id(t) for t in [*m.parameters(), *m.buffers()]}  # noqa: E731
    assert ids(view) == ids(orig) and residual_blocks(orig) == []
    if not train:  # adapting changed no weight (timm's zero-init of the last BN included)
        after = orig.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items())


def test_zero_init_last_is_kept():
    orig = make("resnet18")
    zeroed = [m.bn2.weight for m in orig.modules() if type(m).__name__ == "BasicBlock"]
    assert zeroed and all(not w.detach().any() for w in zeroed)  # timm's default zero_init_last
    view = adapt(orig)
    # The same tensors, still zero.
    assert all(w is v for w, v in zip([b.branch.bn2.weight for b in residual_blocks(view)], zeroed, strict=True))
    assert not any(w.detach().any() for w in zeroed)


@pytest.mark.parametrize("name", list(MODELS))
def test_decompose_sums_to_autograd(name):
    orig = make(name, live=True).eval()
    view = adapt(orig)
    x = images(name)
    w = torch.randn(2, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = lambda out: (out * w).sum()  # noqa: E731
    dec = resgrad.paths.decompose(view, x, loss)
    assert dec.n == MODELS[name][1] and dec.rel_error < 1e-10
    seen = []

    def keep(module, args):
        args[0].retain_grad()
        seen.append(args[0])

    handle = first_block(name, orig).register_forward_pre_hook(keep)
    try:
        loss(orig(x)).backward()
    finally:
        handle.remove()
    assert_same(dec.reference, seen[0].grad)
    assert_same(dec.total, seen[0].grad)
    assert float(dec.grads[1:].norm()) > 1e-3 * float(seen[0].grad.norm())  # branches carry gradient


def _last_of_branch(name: str, block: nn.Module) -> nn.Module:
    """The original module whose output, zeroed, zeroes the block's branch."""
    if name == "vit":
        return block.mlp
    if "convnext" in name:
        return block.mlp
    return block.bn3 if hasattr(block, "bn3") else block.bn2  # SE of zero is zero


@pytest.mark.parametrize("name", ["resnet18", "resnext", "seresnet", "convnext", "vit"])
def test_lesion_equals_the_original_with_the_branch_zeroed(name):
    orig = make(name, live=True).eval()
    view = adapt(orig)
    x = images(name)
    full = view(x)
    rb = residual_blocks(view)
    unit = 1 if name == "vit" else len(rb) - 1  # vit: the first MLP unit; others: the last block
    if name == "vit":
        target = orig.blocks[0].mlp
    else:
        last = [m for m in orig.modules() if type(m).__name__ in ("BasicBlock", "Bottleneck", "ConvNeXtBlock")][-1]
        target = _last_of_branch(name, last)
    with resgrad.gates(view, lesion=[unit]):
        got = view(x)
    handle = target.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
    try:
        want = orig(x)
    finally:
        handle.remove()
    assert_same(got, want)
    assert not torch.allclose(got, full)


def test_vit_block_mask_passes_through():
    orig = make("vit", live=True).eval()
    view = adapt(orig)
    x = images()
    tokens = 1 + (16 // 8) ** 2
    mask = torch.eye(tokens, dtype=torch.bool) | (torch.rand(tokens, tokens, generator=torch.Generator().manual_seed(4)) > 0.5)
    mask[:, 0] = True
    a = orig.forward_features(x, attn_mask=mask)
    b = view.forward_features(x, attn_mask=mask)
    assert_same(b, a)
    assert not torch.allclose(a, orig.forward_features(x))
