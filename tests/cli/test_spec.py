"""SPEC forms timm:NAME and hf:ARCH / hf:path/to/folder: built offline, adaptable, clear errors."""

from __future__ import annotations

import sys

import pytest
import torch

import resgrad
from resgrad.cli._spec import HF_LAYERS, HF_WIDTH, resolve_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_timm_name_builds_without_weights_and_adapts():
    pytest.importorskip("timm")
    rm = resolve_spec("timm:resnet18", num_classes=3)
    assert rm.kind == "timm" and rm.input_shape == (3, 224, 224) and rm.num_classes == 3
    assert len(resgrad.residual_blocks(resgrad.adapt(rm.model))) == 8
    tagged = resolve_spec("timm:resnet18.a1_in1k")  # a weight tag only names pretrained weights
    assert tagged.model.num_classes == 1000


def test_timm_unknown_name_lists_close_matches():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"timm has no model 'resnett18'; did you mean resnet18"):
        resolve_spec("timm:resnett18")
    with pytest.raises(ValueError, match="without downloading"):
        resolve_spec("timm:hf-hub:timm/resnet18.a1_in1k")


@pytest.mark.parametrize("arch,units,head", [("gpt2", 4, "GPT2LMHeadModel"), ("bert", 4, "BertForMaskedLM"),
                                             ("llama", 4, "LlamaForCausalLM"), ("vit", 4, "ViTForImageClassification")])
def test_hf_arch_builds_a_small_model_from_its_config(arch, units, head):
    pytest.importorskip("transformers")
    rm = resolve_spec(f"hf:{arch}")
    assert rm.kind == "hf" and type(rm.model).__name__ == head
    cfg = rm.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size) == (HF_LAYERS, HF_WIDTH)
    assert len(resgrad.residual_blocks(resgrad.adapt(rm.model))) == units
    if arch == "vit":
        assert rm.input_shape == (3, 32, 32) and rm.info["inputs"] == "pixel_values"
    else:
        assert rm.num_classes == cfg.vocab_size == 256 and rm.info["inputs"] == "input_ids"


def test_hf_sizes_are_keyword_arguments():
    pytest.importorskip("transformers")
    rm = resolve_spec("hf:qwen2", layers=3, width=48, vocab=100)
    cfg = rm.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (3, 48, 100)
    assert len(resgrad.residual_blocks(resgrad.adapt(rm.model))) == 6
    ids = torch.randint(100, (1, 5))
    assert rm.model(ids).logits.shape == (1, 5, 100)


def test_hf_folder_loads_offline(tmp_path):
    T = pytest.importorskip("transformers")
    torch.manual_seed(0)
    orig = T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)).eval()
    orig.save_pretrained(tmp_path / "tiny")
    rm = resolve_spec(f"hf:{tmp_path / 'tiny'}")
    assert rm.kind == "hf" and type(rm.model).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(64, (2, 5))
    view = resgrad.adapt(rm.model.eval())
    torch.testing.assert_close(view(ids).logits, orig(ids).logits, rtol=1e-6, atol=1e-6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_spec(f"hf:{tmp_path / 'empty'}")


def test_hf_names_that_need_the_network_or_do_not_exist():
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="would need the network"):
        resolve_spec("hf:openai-community/gpt2")
    with pytest.raises(ValueError, match="no architecture 'gtp2'; did you mean gpt2"):
        resolve_spec("hf:gtp2")


def test_a_model_the_adapters_do_not_know_says_how_to_register_one():
    pytest.importorskip("transformers")
    rm = resolve_spec("hf:t5", layers=1, width=32)  # T5's blocks have no adapter
    with pytest.raises(NotImplementedError) as e:
        resgrad.adapt(rm.model)
    msg = str(e.value)
    assert "\n" not in msg and "GPT2Block" in msg and "resgrad.register_adapter(MyBlock, fn)" in msg


@pytest.mark.parametrize("spec,extra", [("timm:resnet18", "timm"), ("hf:gpt2", "hf")])
def test_missing_package_names_the_extra(monkeypatch, spec, extra):
    monkeypatch.setitem(sys.modules, "timm" if extra == "timm" else "transformers", None)  # import fails
    with pytest.raises(ImportError, match=rf"pip install 'resgrad\[{extra}\]'"):
        resolve_spec(spec)


def test_a_raising_factory_is_named_with_its_spec(tmp_path, monkeypatch):
    from resgrad.cli._spec import resolve_spec

    (tmp_path / "boom_nets.py").write_text("def make():\n    raise RuntimeError('no GPU here')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"SPEC 'boom_nets:make': make\(\) raised RuntimeError: no GPU here"):
        resolve_spec("boom_nets:make")
