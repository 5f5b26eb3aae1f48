"""Every registered model builds and runs; published parameter counts; twins match."""

import pytest
import torch

import resgrad
from resgrad.nets import blocks, build, build_for, list_models

# He et al. 2015 Table 6 (2-D, 3 input channels, 10 classes, option A).
PUBLISHED = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
BIG = {"resnet1202", "plain1202", "preresnet1001", "preplain1001"}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("depth,count", PUBLISHED.items())
def test_published_parameter_counts(depth, count):
    with torch.device("meta"):
        res, pl = build(f"resnet{depth}"), build(f"plain{depth}")
    assert n_params(res) == count
    assert n_params(pl) == count


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(1, 40), (3, 16, 16)], ids=["1d", "2d"])
def test_every_model_builds_and_runs(name, shape):
    if name in BIG:
        pytest.skip("1000+ layers: covered by the meta-device count test and the slow test")
    torch.manual_seed(0)
    m = build_for(name, shape, 10).eval()
    out = m(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    assert len(blocks(m)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BIG))
def test_big_models_run(name):
    m = build_for(name, (3, 8, 8), 10).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize(
    "res,plain,kw",
    [
        ("resnet20", "plain20", {}),
        ("resnet20", "plain20", {"shortcut": "B"}),
        ("preresnet110", "preplain110", {}),
        ("preresnet164", "preplain164", {}),
        ("resmlp-4x64", "plainmlp-4x64", {}),
        ("resmlp", "plainmlp", {"norm": "batch", "depth": 3}),
    ],
)
def test_twins_share_state_dict_keys_and_counts(res, plain, kw):
    with torch.device("meta"):
        r, p = build(res, **kw), build(plain, **kw)
    assert list(r.state_dict()) == list(p.state_dict())
    assert n_params(r) == n_params(p)
    assert [type(b).__name__ for b in blocks(r)] == ["Residual"] * len(blocks(r))
    assert [type(b).__name__ for b in blocks(p)] == ["Plain"] * len(blocks(p))


def test_block_counts_follow_depth():
    with torch.device("meta"):
        assert len(blocks(build("resnet56"))) == 27
        assert len(blocks(build("resnet110"))) == 54
        assert len(blocks(build("preresnet164"))) == 54
        assert len(blocks(build("resnet", depth=74))) == 36
        assert len(blocks(build("resnet74"))) == 36
        assert len(blocks(build("resmlp-7x32"))) == 7


def test_option_a_shortcuts_have_no_parameters_and_option_b_does():
    with torch.device("meta"):
        a, b = build("resnet20"), build("resnet20", shortcut="B")
    down_a = [bl for bl in blocks(a) if bl.changes_shape]
    down_b = [bl for bl in blocks(b) if bl.changes_shape]
    assert len(down_a) == len(down_b) == 2  # stride 2 at the start of stages 2 and 3
    assert all(n_params(bl.shortcut) == 0 for bl in down_a)
    assert all(n_params(bl.shortcut) > 0 for bl in down_b)


def test_option_a_shortcut_subsamples_and_zero_pads():
    from resgrad.nets import ShortcutA

    x = torch.randn(2, 4, 8, 8)
    y = ShortcutA(4, 8, 2, dims=2)(x)
    assert y.shape == (2, 8, 4, 4)
    assert torch.equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert y[:, :2].abs().sum() == 0 and y[:, 6:].abs().sum() == 0


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("resnet21", {}, "6n\\+2"),
        ("resnet", {"depth": 10}, "6n\\+2"),
        ("preresnet", {"depth": 100, "block": "bottleneck"}, "9n\\+2"),
        ("resnett20", {}, "did you mean resnet20"),
        ("resmlp-0x8", {}, "depth"),
        ("resnet20", {"dims": 3}, "dims must be 1"),
        ("plainmlp", {"branch_scale": "rezero"}, "residual nets only"),
        ("resmlp", {"activation": "swish"}, "activation must be one of"),
    ],
)
def test_bad_inputs_are_value_errors_that_say_how(name, kw, match):
    with pytest.raises(ValueError, match=match):
        build(name, **kw)


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        resgrad.register_model("resnet20")(lambda: None)


def test_list_models_pattern_and_natural_order():
    assert list_models("resnet*") == [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)]
    assert list_models("nothing*") == []


def test_conv_net_rejects_wrong_input_rank():
    m = build_for("resnet20", (1, 40), 10)
    with pytest.raises(ValueError, match="expects input \\(B, C, L\\)"):
        m(torch.randn(2, 40))
    with pytest.raises(ValueError, match="convolutional"):
        build_for("resnet20", (40,), 10)


def test_mlp_branch_scales():
    from resgrad.nets import Scale

    z = build("resmlp", depth=3, width=8, branch_scale="zero_init_last")
    x = torch.randn(4, 40)
    for b in blocks(z):  # zero-init last layer: every block starts as the identity
        h = torch.randn(4, 8)
        assert torch.equal(b(h), h)
    r = build("resmlp", depth=3, width=8, branch_scale="rezero")
    scales = [m for m in r.modules() if isinstance(m, Scale)]
    assert len(scales) == 3 and all(s.alpha.item() == 0 and s.alpha.requires_grad for s in scales)
    f = build("resmlp", depth=3, width=8, branch_scale=0.5)
    assert [float(m.alpha) for m in f.modules() if isinstance(m, Scale)] == [0.5] * 3
    assert z(x).shape == (4, 10)
