"""Tiny real model files for the loading tests: a 2-layer Llama GGUF (gguf.GGUFWriter, Q4_1 weights)
and a 2-layer BERT folder saved by transformers, both with random weights and working tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Sizes: every matrix dimension a multiple of 32, the Q4_1 block size.
HIDDEN, FFN, HEADS, KV_HEADS, LAYERS, CONTEXT = 64, 128, 4, 2, 2, 256


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table (the byte-level BPE alphabet), byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


def write_tiny_gguf(path: Path, *, seed: int = 0, arch: str = "llama", quant: str = "Q4_1") -> Path:
    """A 2-layer Llama LM in GGUF, its weight matrices quantised to ``quant``, with a byte-level BPE tokenizer."""
    import gguf

    rng = np.random.default_rng(seed)
    chars = _byte_chars()
    merges = ["Ġ t", "h e", "Ġt he", "i n", "e r"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + chars + [m.replace(" ", "") for m in merges]
    vocab = len(tokens) + (-len(tokens)) % 32  # pad the vocabulary to a whole number of blocks
    tokens += [f"<|unused{i}|>" for i in range(vocab - len(tokens))]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)  # control tokens, then normal ones
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-llama")
    w.add_block_count(LAYERS)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    qtype = getattr(gguf.GGMLQuantizationType, quant)

    def mat(name: str, rows: int, cols: int, scale: float = 0.08) -> None:
        data = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def vec(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    hd = HIDDEN // HEADS
    mat("token_embd.weight", vocab, HIDDEN, 0.5)
    for i in range(LAYERS):
        vec(f"blk.{i}.attn_norm.weight", HIDDEN)
        mat(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        mat(f"blk.{i}.attn_k.weight", KV_HEADS * hd, HIDDEN)
        mat(f"blk.{i}.attn_v.weight", KV_HEADS * hd, HIDDEN)
        mat(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        vec(f"blk.{i}.ffn_norm.weight", HIDDEN)
        mat(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        mat(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        mat(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    vec("output_norm.weight", HIDDEN)
    mat("output.weight", vocab, HIDDEN, 0.3)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def save_tiny_bert(folder: Path, *, seed: int = 0, sentence_transformers: bool = True) -> Path:
    """A 2-layer BertModel with a WordPiece tokenizer of letters, digits and punctuation, saved by transformers."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()[]{}-_=+*/<>#%&@$`~|\\^")
    words = ["the", "a", "is", "of", "and", "to", "in", "python", "function", "object"]
    vocab = specials + chars + ["##" + c for c in chars] + words
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128,
                     initializer_range=0.5)  # large weights: sentences get distinct embeddings
    BertModel(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    if sentence_transformers:  # what marks a sentence-transformers folder
        (folder / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": '
                                             '"sentence_transformers.models.Transformer"}]\n')
    return folder


# ---- fixtures -----------------------------------------------------------------------------

import importlib  # noqa: E402
import importlib.metadata as md  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q4_1.gguf")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return save_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_lm(tiny_gguf):
    from resgrad.pretrained import load

    return load(f"gguf:{tiny_gguf}", cache=False)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert):
    from resgrad.pretrained import load

    return load(f"hf:{tiny_bert}", cache=False)


@pytest.fixture(autouse=True)
def _cache_in_tmp(request, monkeypatch, tmp_path_factory):
    """Tiny models' dequantised copies go to a temporary cache folder, not the user's (the real
    models' tests keep the user's cache: the next session loads them in a second)."""
    if request.module.__name__.rsplit(".", 1)[-1] != "test_real":
        monkeypatch.setenv("RESGRAD_CACHE", str(tmp_path_factory.getbasetemp() / "resgrad-cache"))


class FakeDistribution:
    """What importlib.metadata.distribution returns, for a wheel laid out under ``root``."""

    def __init__(self, root: Path, version: str) -> None:
        self.root, self.version = root, version

    def locate_file(self, rel: str) -> Path:
        return self.root / rel


@pytest.fixture
def fake_wheels(monkeypatch):
    """``{distribution name: FakeDistribution}``: installed wheels as the loader sees them."""
    load_mod = importlib.import_module("resgrad.pretrained.load")  # the module (the package's `load` is the function)
    wheels: dict[str, FakeDistribution] = {}
    real = md.distribution

    def distribution(name: str):
        if name in wheels:
            return wheels[name]
        if name.startswith("fake-"):
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(load_mod.md, "distribution", distribution)
    return wheels


def _real(spec: str):
    from resgrad.pretrained import MissingWheel, load

    try:
        return load(spec)
    except MissingWheel as e:
        pytest.skip(str(e))
    except ImportError as e:  # transformers, gguf or accelerate missing
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (about 17 s to load on 2 idle cores; once per session)."""
    return _real("pretrained:smollm2-135m")


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (about 2 s to load)."""
    return _real("pretrained:minilm-l6")
