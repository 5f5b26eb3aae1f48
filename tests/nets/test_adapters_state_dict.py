"""An adapted model saves and loads under the original model's keys, for every adapter family.

The view regroups the original's modules into Residual units; its state_dict must still read
``transformer.h.0.ln_1.weight`` (not ``...attn.branch.norm.weight``), so a checkpoint of the
adapted model reloads into the original class with no missing or unexpected key and the same
outputs, and an original checkpoint loads into a view.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resgrad.nets import adapt

pytestmark = pytest.mark.usefixtures("one_thread")


def _tv(block: str) -> nn.Module:
    tv = pytest.importorskip("torchvision")
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    return ResNet({"basic": BasicBlock, "bottleneck": Bottleneck}[block], [1, 1, 1, 1], num_classes=3) \
        if block == "bottleneck" else tv.models.resnet18(num_classes=3)


def _timm(name: str) -> nn.Module:
    timm = pytest.importorskip("timm")
    if name == "vit":
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=16,
                                 patch_size=8, depth=2, embed_dim=32, num_heads=2, init_values=0.5)
    if name == "bottleneck":
        from timm.models.resnet import Bottleneck, ResNet

        return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=3, zero_init_last=False)
    return timm.create_model({"basic": "resnet18", "convnext": "convnext_atto"}[name], pretrained=False, num_classes=3)


def _hf(name: str) -> nn.Module:
    T = pytest.importorskip("transformers")
    if name == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=8,
                                              bos_token_id=0, eos_token_id=0))
    if name == "bert":
        return T.BertForMaskedLM(T.BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                              intermediate_size=32, vocab_size=40, max_position_embeddings=8))
    if name == "vit":
        return T.ViTForImageClassification(T.ViTConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                                       intermediate_size=32, image_size=8, patch_size=4, num_labels=3))
    cfg = getattr(T, f"{name}Config")(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                                      intermediate_size=32, vocab_size=40, max_position_embeddings=8,
                                      bos_token_id=0, eos_token_id=0)
    return T.AutoModelForCausalLM.from_config(cfg)


def _encoder_layer(norm_first: bool) -> nn.Module:
    return nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=norm_first)


def _encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    return nn.Sequential(nn.Linear(4, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))


def _images(size):
    return lambda m: m(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)))


_ids = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(1))
_seq = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
# name -> (make, call returning a tensor, Hugging Face model?)
CASES = {
    "torchvision-basic": (lambda: _tv("basic"), _images(32), False),
    "torchvision-bottleneck": (lambda: _tv("bottleneck"), _images(32), False),
    "encoder-layer-post-norm": (lambda: _encoder_layer(False), lambda m: m(_seq), False),
    "encoder-layer-pre-norm": (lambda: _encoder_layer(True), lambda m: m(_seq), False),
    "transformer-encoder": (_encoder, lambda m: m(_seq[..., :4]), False),
    "timm-basic": (lambda: _timm("basic"), _images(32), False),
    "timm-bottleneck": (lambda: _timm("bottleneck"), _images(32), False),
    "timm-convnext": (lambda: _timm("convnext"), _images(32), False),
    "timm-vit": (lambda: _timm("vit"), _images(16), False),
    "hf-gpt2": (lambda: _hf("gpt2"), lambda m: m(input_ids=_ids).logits, True),
    "hf-bert": (lambda: _hf("bert"), lambda m: m(input_ids=_ids).logits, True),
    "hf-llama": (lambda: _hf("Llama"), lambda m: m(input_ids=_ids).logits, True),
    "hf-mistral": (lambda: _hf("Mistral"), lambda m: m(input_ids=_ids).logits, True),
    "hf-qwen2": (lambda: _hf("Qwen2"), lambda m: m(input_ids=_ids).logits, True),
    "hf-vit": (lambda: _hf("vit"), lambda m: m(pixel_values=torch.randn(
        2, 3, 8, 8, generator=torch.Generator().manual_seed(1))).logits, True),
}


def _make(case: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[case][0]().eval()


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_keys_are_the_originals_and_reload(case, tmp_path):
    _, call, is_hf = CASES[case]
    orig = _make(case, 0)
    view = adapt(orig)
    with torch.no_grad():
        want = call(orig)
    ref_sd, sd = orig.state_dict(), view.state_dict()
    assert set(sd) == set(ref_sd), (sorted(set(sd) - set(ref_sd))[:4], sorted(set(ref_sd) - set(sd))[:4])
    for k, v in ref_sd.items():
        assert torch.equal(sd[k], v), k

    # Saved from the view, loaded into a differently initialised original: nothing missing,
    # nothing unexpected, the same outputs.
    fresh = _make(case, 1)
    with torch.no_grad():
        assert not torch.equal(call(fresh), want)  # the reload below is what makes them equal
    res = fresh.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(call(fresh), want, rtol=0, atol=0)

    # And the other way: the original's checkpoint into a fresh view.
    view2 = adapt(_make(case, 2))
    res = view2.load_state_dict(ref_sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(call(view2), want, rtol=1e-6, atol=1e-6)

    if is_hf:  # save_pretrained of the view, from_pretrained of the original class
        view.save_pretrained(tmp_path / "hf")
        back, info = type(orig).from_pretrained(tmp_path / "hf", output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():
            torch.testing.assert_close(call(back.eval()), want, rtol=0, atol=0)


def test_a_strict_load_still_names_a_missing_key():
    orig = _make("encoder-layer-pre-norm", 0)
    sd = orig.state_dict()
    sd.pop("norm2.weight")
    with pytest.raises(RuntimeError, match="norm2.weight"):
        adapt(_make("encoder-layer-pre-norm", 1)).load_state_dict(sd)
