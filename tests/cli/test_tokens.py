"""Token inputs in diagnose, paths and lesion: small HF models built from configs, checked
against plain autograd / the model's own loss and logits on the same batch."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

pytest.importorskip("transformers")

import resgrad  # noqa: E402
from resgrad import tokens  # noqa: E402
from resgrad.cli import app  # noqa: E402
from resgrad.cli._spec import resolve_spec  # noqa: E402

runner = CliRunner()
SMALL = ["--layers", "2", "--width", "32", "--vocab", "64", "--seq-len", "8"]


def _ok(res):
    assert res.exit_code == 0, res.output
    return res.output


def _usage_error(res, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1, res.output
    for n in needles:
        assert n in res.output, res.output


def _hf(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return resolve_spec(f"hf:{arch}", layers=2, width=32, vocab=64).model


@pytest.mark.parametrize("arch,causal", [("gpt2", True), ("bert", False), ("llama", True)])
def test_loss_is_the_models_own_and_equals_cross_entropy_over_logits(arch, causal):
    m = _hf(arch).eval()  # eval: no dropout, so two calls see the same function
    ids = tokens.random_ids(64, 8, 3, seed=1)
    assert tokens.is_causal(m) is causal
    with torch.no_grad():
        own = tokens.own_loss(m, ids)
        hf = m(input_ids=ids, labels=ids).loss
        lg = m(input_ids=ids).logits
        lg = lg[:, :-1] if causal else lg
        tg = ids[:, 1:] if causal else ids
        ce = F.cross_entropy(lg.reshape(-1, 64), tg.reshape(-1))  # independent of TokenView's layout
        view = F.cross_entropy(tokens.TokenView(m)(ids), tokens.targets(ids, causal))
    assert torch.equal(own, hf)
    assert torch.allclose(ce, hf, rtol=1e-5) and torch.allclose(view, hf, rtol=1e-5)


def test_text_ids_are_bytes_cut_in_sequences(tmp_path):
    f = tmp_path / "t.txt"
    raw = ("ASCII and UTF-8: héllo wörld ✓ 日本語. " * 12).encode()[:400]  # multi-byte characters: ids >= 128
    f.write_bytes(raw)
    ids = tokens.text_ids(f, 50, 100)
    assert ids.shape == (8, 50) and ids.dtype == torch.int64
    assert ids.flatten().tolist() == list(raw)
    assert tokens.text_ids(f, 50, 3).shape == (3, 50)
    with pytest.raises(ValueError, match=f"byte ids up to {max(raw)} .* vocabulary is 64"):
        tokens.text_ids(f, 50, 8, vocab=64)


def test_diagnose_gradient_equals_autograd_of_the_models_loss(tmp_path):
    # llama: no dropout, so the train-mode step is deterministic and comparable.
    out = tmp_path / "d"
    _ok(runner.invoke(app, ["diagnose", "hf:llama", *SMALL, "--batch-size", "4", "--out", str(out)]))
    res = json.loads((out / "results.json").read_text())
    m = _hf("llama").train()
    ids = tokens.random_ids(64, 8, 4, seed=0)
    loss = m(input_ids=ids, labels=ids).loss
    loss.backward()
    assert math.isclose(res["losses"][0], float(loss.detach()), rel_tol=1e-5)
    rows = {r["name"]: r for r in res["layers"]}
    checked = 0
    for name, mod in m.named_modules():
        ps = [p for p in mod.parameters(recurse=False) if p.grad is not None]
        if not ps or name not in rows:
            continue
        want = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in ps))
        assert math.isclose(rows[name]["param_grad_norm"], want, rel_tol=1e-4), name
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_diagnose_runs_on_token_models(tmp_path, arch):
    out = tmp_path / arch
    text = _ok(runner.invoke(app, ["diagnose", f"hf:{arch}", *SMALL, "--out", str(out)]))
    assert "layers flagged" in text
    res = json.loads((out / "results.json").read_text())
    assert math.isfinite(res["losses"][0]) and abs(res["losses"][0] - math.log(64)) < 1.0  # near uniform at init
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["tokens"]["vocab"] == 64 and cfg["config"]["tokens"]["seq_len"] == 8


def _first_block_grad(m, ids, causal):
    """Autograd of the model's own loss at the first transformer layer's input (hook on the original)."""
    layer = m.model.layers[0] if hasattr(m, "model") else m.transformer.h[0]
    held = {}

    def pre(mod, args, kwargs):
        x = (args[0] if args else kwargs["hidden_states"])
        held["x"] = x
        x.retain_grad()

    h = layer.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        loss = m(input_ids=ids, labels=ids).loss
    finally:
        h.remove()
    (g,) = torch.autograd.grad(loss, held["x"])
    return g, int(tokens.targets(ids, causal).numel())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_paths_reference_is_autograd_of_the_models_loss(arch):
    m = _hf(arch).eval()
    ids = tokens.random_ids(64, 8, 3, seed=2)
    want, count = _first_block_grad(m, ids, True)
    dec = resgrad.paths.decompose(tokens.TokenView(resgrad.adapt(m)), ids, targets=tokens.targets(ids, True),
                                  training=False)
    # decompose's default loss is the summed cross-entropy; the model's .loss is its mean.
    assert torch.allclose(dec.reference, want * count, rtol=1e-4, atol=1e-6)
    assert torch.allclose(dec.total, want * count, rtol=1e-3, atol=1e-5)
    assert dec.n == 4 and dec.rel_error < 1e-5


def test_paths_cli_on_tokens(tmp_path):
    out = tmp_path / "p"
    _ok(runner.invoke(app, ["paths", "hf:gpt2", "--layers", "3", "--width", "32", "--vocab", "64", "--seq-len", "8",
                            "--samples", "5", "--batch-size", "4", "--out", str(out)]))
    res = json.loads((out / "results.json").read_text())
    # --layers 3 reaches the model: 3 layers x (attention, MLP) = 6 residual units.
    assert res["n"] == 6 and res["exact"]["rel_error"] < 1e-5 and res["exact"]["examples"] == 4


@pytest.mark.slow  # ~6 s: the digits data and a ViT
def test_paths_cli_on_an_hf_image_model(tmp_path):
    out = tmp_path / "v"
    _ok(runner.invoke(app, ["paths", "hf:vit", "--data", "digits", "--layers", "3", "--samples", "5",
                            "--examples", "8", "--out", str(out)]))
    res = json.loads((out / "results.json").read_text())
    assert res["n"] == 6 and res["exact"]["rel_error"] < 1e-5


def test_lesion_cli_on_tokens_scores_next_token_error(tmp_path):
    out = tmp_path / "l"
    _ok(runner.invoke(app, ["lesion", "hf:llama", *SMALL, "--trials", "1", "--batch-size", "4", "--out", str(out)]))
    res = json.loads((out / "results.json").read_text())
    m = _hf("llama").eval()
    ids = tokens.random_ids(64, 8, 4, seed=0)
    with torch.no_grad():
        pred = m(input_ids=ids).logits.argmax(-1)[:, :-1]
    want = float((pred != ids[:, 1:]).double().mean())
    assert math.isclose(res["lesion"]["residual"]["baseline"], want, abs_tol=1e-9)
    assert math.isclose(res["models"]["residual"]["test_error"], want, abs_tol=1e-9)  # per token, not per sequence
    assert len(res["lesion"]["residual"]["blocks"]) == 4


def test_text_input_end_to_end(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    _ok(runner.invoke(app, ["diagnose", "hf:bert", "--text", str(f), "--seq-len", "16", "--batch-size", "2",
                            "--out", str(tmp_path / "d")]))


def test_bad_token_input_one_line_exit_2(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("héllo wörld, more than sixty-four bytes of text to cut into sequences " * 3)
    for cmd in ("diagnose", "paths", "lesion"):
        _usage_error(runner.invoke(app, [cmd, "resnet20", "--vocab", "10", "--out", str(tmp_path / cmd)]),
                     "no embedding layer")
        _usage_error(runner.invoke(app, [cmd, "hf:bert", "--seq-len", "600", "--out", str(tmp_path / cmd)]),
                     "--seq-len 600", "512 positions")
        _usage_error(runner.invoke(app, [cmd, "hf:gpt2", "--vocab", "64", "--text", str(f), "--seq-len", "8",
                                         "--out", str(tmp_path / cmd)]), "vocabulary is 64", "--vocab 256")


def test_unknown_model_and_too_large_vocab_one_line_exit_2(tmp_path):
    f = tmp_path / "mm.py"
    f.write_text("import torch.nn as nn\n"
                 "class Odd(nn.Module):\n"
                 "    def __init__(self):\n"
                 "        super().__init__(); self.a = nn.Linear(40, 10)\n"
                 "    def forward(self, x): return self.a(x.flatten(1))\n"
                 "def emb(): return nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 50))\n")
    for cmd in ("paths", "lesion"):
        _usage_error(runner.invoke(app, [cmd, f"{f}:Odd", "--out", str(tmp_path / cmd)]),
                     "GPT2Block", "resgrad.register_adapter")
    _usage_error(runner.invoke(app, ["diagnose", f"{f}:emb", "--vocab", "60", "--out", str(tmp_path / "d")]),
                 "--vocab 60 is larger than", "vocabulary of 50")
    _ok(runner.invoke(app, ["diagnose", f"{f}:emb", "--vocab", "50", "--out", str(tmp_path / "d2")]))


def _binaries(tmp_path):
    """Files a user may pass by mistake: a checkpoint, gzip, random bytes, an image, UTF-16 text."""
    import gzip
    import random

    out = {}
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "ckpt.pt")
    out["checkpoint"] = tmp_path / "ckpt.pt"
    (tmp_path / "a.gz").write_bytes(gzip.compress(b"some text to compress " * 200, mtime=0))
    out["gzip"] = tmp_path / "a.gz"
    (tmp_path / "rand.bin").write_bytes(random.Random(0).randbytes(4096))
    out["random"] = tmp_path / "rand.bin"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 2))
    fig.savefig(tmp_path / "fig.png")
    plt.close(fig)
    out["png"] = tmp_path / "fig.png"
    (tmp_path / "u16.txt").write_text("hello world, a text in UTF-16 " * 20, encoding="utf-16")
    out["utf16"] = tmp_path / "u16.txt"
    return out


def test_not_text_refuses_binaries_and_keeps_text(tmp_path):
    from pathlib import Path

    from resgrad.data.text import not_text

    for kind, p in _binaries(tmp_path).items():
        assert not_text(p.read_bytes()) is not None, kind
    assert "UTF-16" in not_text(_binaries(tmp_path)["utf16"].read_bytes())
    readme = Path(__file__).resolve().parents[2] / "README.md"
    texts = [readme.read_bytes(), "héllo wörld ✓ 日本語\n".encode() * 50, "café crème, à la française\n".encode(
        "latin-1") * 50, b"\x1b[31mred\x1b[0m log line\tand a tab\r\n" * 50, b""]
    for t in texts:
        assert not_text(t) is None, t[:40]
    # the counts it gives are the file's (an independent count of the same bytes)
    rand = _binaries(tmp_path)["random"].read_bytes()
    nul = sum(1 for b in rand if b == 0)
    assert f"{nul} NUL byte(s) in 4096" in not_text(rand)


def test_every_text_option_refuses_a_binary_file_in_one_line(tmp_path):
    bins = _binaries(tmp_path)
    small = ["--layers", "2", "--width", "32", "--seq-len", "8"]
    for p in bins.values():
        for cmd in ("diagnose", "paths", "lesion"):
            _usage_error(runner.invoke(app, [cmd, "hf:gpt2", *small, "--text", str(p), "--out", str(tmp_path / cmd)]),
                         f"--text {p} is not text", "give a plain text file")
        _usage_error(runner.invoke(app, ["transformer", "--text", str(p), "--out", str(tmp_path / "t")]),
                     "is not text", "give a plain text file")
    with pytest.raises(ValueError, match="is not text"):
        resgrad.data.text(str(bins["checkpoint"]))
    with pytest.raises(ValueError, match="is not text"):
        tokens.text_ids(bins["png"], 8, 4)
