"""decompose/sample with forward_kwargs (attention_mask with padding) on adapted HF models:
the sum over path lengths equals plain autograd of the original model's forward."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

import resgrad  # noqa: E402
from resgrad import tokens  # noqa: E402
from resgrad.cli._spec import resolve_spec  # noqa: E402


def _setup(arch: str, dtype=torch.float32):
    torch.manual_seed(0)
    m = resolve_spec(f"hf:{arch}", layers=2, width=32, vocab=64).model.eval().to(dtype)
    ids = tokens.random_ids(64, 8, 3, seed=3)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, :3] = 0  # example 0: three padding tokens first (left padding, as for generation)
    mask[2, :2] = 0
    return m, ids, mask


def _loss(mask):
    keep = mask[:, 1:].bool()  # score only real next tokens

    def loss(out, y):  # out (B, V, T-1) class-major logits from TokenView
        return F.cross_entropy(out.transpose(1, 2)[keep], y[keep], reduction="sum")

    return loss


def _autograd_first_input(m, ids, mask, loss):
    layer = m.model.layers[0] if hasattr(m, "model") else m.transformer.h[0]
    held = {}

    def pre(mod, args, kwargs):
        held["x"] = args[0] if args else kwargs["hidden_states"]

    h = layer.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        lg = m(input_ids=ids, attention_mask=mask).logits[:, :-1].transpose(1, 2)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(loss(lg, ids[:, 1:]), held["x"])
    return g


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_decompose_with_attention_mask_sums_to_autograd(arch):
    m, ids, mask = _setup(arch)
    loss = _loss(mask)
    want = _autograd_first_input(m, ids, mask, loss)
    unmasked = _autograd_first_input(m, ids, torch.ones_like(mask), loss)
    assert not torch.allclose(want, unmasked, rtol=1e-3)  # the mask reaches the model
    view = tokens.TokenView(resgrad.adapt(m), causal=True)
    dec = resgrad.paths.decompose(view, ids, loss, targets=ids[:, 1:], training=False,
                                  forward_kwargs={"attention_mask": mask})
    assert torch.allclose(dec.reference, want, rtol=1e-4, atol=1e-6)
    assert torch.allclose(dec.total, want, rtol=1e-3, atol=1e-5)
    assert dec.rel_error < 1e-5 and dec.n == 4


def test_float64_llama_warns_why_the_sum_is_only_float32_exact():
    m, ids, mask = _setup("llama", torch.float64)
    view = tokens.TokenView(resgrad.adapt(m), causal=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        dec = resgrad.paths.decompose(view, ids, _loss(mask), targets=ids[:, 1:], forward_kwargs={"attention_mask": mask})
    msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    assert dec.rel_error < 1e-6
    assert len(msgs) == 1 and "LlamaRMSNorm" in msgs[0] and "float32" in msgs[0], msgs
    m2, ids2, mask2 = _setup("gpt2", torch.float64)  # GPT-2 stays float64 throughout: no warning
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        dec = resgrad.paths.decompose(tokens.TokenView(resgrad.adapt(m2), causal=True), ids2, _loss(mask2),
                                      targets=ids2[:, 1:], forward_kwargs={"attention_mask": mask2})
    assert dec.rel_error < 1e-12 and not [x for x in w if issubclass(x.category, RuntimeWarning)]


def test_sample_indexes_per_example_kwargs_like_the_inputs():
    m, ids, mask = _setup("gpt2")
    view = tokens.TokenView(resgrad.adapt(m), causal=True)
    y = ids[:, 1:]

    def ce(out, t):
        return F.cross_entropy(out, t, reduction="sum")

    # One example at a time with its own mask row == the batched sampler's rows (same seed, loop reference).
    loop = resgrad.paths.sample_loop(view, ids, ce, targets=y, lengths=[0, 4], samples=3, seed=1,
                                     forward_kwargs={"attention_mask": mask})
    ref = resgrad.paths.sample_loop(view, ids, ce, targets=y, lengths=[0, 4], samples=3, seed=1)
    assert not torch.allclose(loop.values, ref.values)  # the mask changes single-path magnitudes
    graph = resgrad.paths.sample(view, ids, ce, targets=y, lengths=[0], samples=6, seed=1, batch_size=3,
                                 forward_kwargs={"attention_mask": mask})
    # Length 0 is the one all-shortcut path: deterministic per example, so the sampled values are
    # the loop's length-0 values for the examples drawn; each must be one of the masked per-example norms.
    per_ex = [float(resgrad.paths.sample_loop(view, ids[b:b + 1], ce, targets=y[b:b + 1], lengths=[0], samples=1,
                                              forward_kwargs={"attention_mask": mask[b:b + 1]}).values[0, 0])
              for b in range(3)]
    for v in graph.values[0].tolist():
        assert min(abs(v - p) for p in per_ex) < 1e-4 * max(per_ex), (v, per_ex)


def test_lesion_error_with_attention_mask_matches_brute_force():
    m, ids, mask = _setup("llama")
    view = tokens.TokenView(resgrad.adapt(m), causal=True)
    y = ids[:, 1:]
    kw = {"attention_mask": mask}
    with torch.no_grad():
        pred = m(input_ids=ids, attention_mask=mask).logits.argmax(-1)[:, :-1]
        plain = m(input_ids=ids).logits.argmax(-1)[:, :-1]
    assert not torch.equal(pred, plain)  # the mask changes predictions
    want = float((pred != y).double().mean())
    assert resgrad.paths.error_rate(view, ids, y, batch_size=2, forward_kwargs=kw) == pytest.approx(want, abs=1e-12)
    single = resgrad.paths.single_deletions(view, ids, y, forward_kwargs=kw)
    assert single["baseline"] == pytest.approx(want, abs=1e-12) and len(single["blocks"]) == 4
