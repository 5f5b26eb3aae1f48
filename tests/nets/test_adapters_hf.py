"""resgrad.adapt on Hugging Face transformers: GPT-2, BERT, Llama/Mistral/Qwen2, ViT.

Every model is built from a tiny config (nothing downloads), in float64. The adapted view
must give the original's outputs exactly (eval; train with dropout on, seeded
identically before each call), share every parameter, decompose exactly, and a lesioned
unit must equal the original with that sublayer's output zeroed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resgrad
from resgrad.nets import adapt, residual_blocks

T = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # small nets: see tests/conftest.py

V, E, L, S = 64, 32, 2, 6  # vocab, width, layers, sequence length


def _gpt2(p: float) -> nn.Module:
    return T.GPT2LMHeadModel(T.GPT2Config(n_layer=L, n_embd=E, n_head=2, vocab_size=V, n_positions=16,
                                          resid_pdrop=p, embd_pdrop=p, attn_pdrop=p))


def _bert(p: float) -> nn.Module:
    return T.BertForMaskedLM(T.BertConfig(num_hidden_layers=L, hidden_size=E, num_attention_heads=2,
                                          intermediate_size=2 * E, vocab_size=V, max_position_embeddings=16,
                                          hidden_dropout_prob=p, attention_probs_dropout_prob=p))


def _decoder(config_cls: str, **extra):
    def make(p: float) -> nn.Module:
        cfg = getattr(T, config_cls)(num_hidden_layers=L, hidden_size=E, num_attention_heads=2, num_key_value_heads=1,
                                     intermediate_size=2 * E, vocab_size=V, max_position_embeddings=16,
                                     attention_dropout=p, **extra)
        return T.AutoModelForCausalLM.from_config(cfg)

    return make


def _vit(p: float) -> nn.Module:
    return T.ViTForImageClassification(T.ViTConfig(num_hidden_layers=L, hidden_size=E, num_attention_heads=2,
                                                   intermediate_size=2 * E, image_size=8, patch_size=4, num_labels=3,
                                                   hidden_dropout_prob=p, attention_probs_dropout_prob=p))


MAKERS = {
    "gpt2": _gpt2,
    "bert": _bert,
    "llama": _decoder("LlamaConfig"),
    "mistral": _decoder("MistralConfig", sliding_window=3),  # the window is shorter than the sequence
    "qwen2": _decoder("Qwen2Config"),
    "vit": _vit,
}
RMSNORM = {"llama", "mistral", "qwen2"}


def make(name: str, p: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return MAKERS[name](p).double()


def batch(name: str) -> tuple[torch.Tensor, dict]:
    """(inputs, extra keyword arguments) for one call: token ids with padding, or images."""
    g = torch.Generator().manual_seed(1)
    if name == "vit":
        return torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64), {"labels": torch.tensor([0, 2])}
    ids = torch.randint(V, (2, S), generator=g)
    mask = torch.ones(2, S, dtype=torch.long)
    mask[1, :2] = 0  # left padding on the second sequence
    return ids, {"attention_mask": mask, "labels": ids}


def layers(name: str, model: nn.Module) -> nn.ModuleList:
    return {"gpt2": lambda: model.transformer.h, "bert": lambda: model.bert.encoder.layer,
            "vit": lambda: model.vit.layers}.get(name, lambda: model.model.layers)()


def sublayer(name: str, layer: nn.Module, which: str) -> nn.Module:
    """The original module whose output, zeroed, removes the ``which`` branch of ``layer``."""
    if name == "bert":  # post-LN: LayerNorm(dropout(dense(.)) + x); a zero dense output leaves LayerNorm(x)
        return layer.attention.output.dense if which == "attn" else layer.output.dense
    if name == "gpt2":
        return layer.attn if which == "attn" else layer.mlp
    if name == "vit":
        return layer.attention if which == "attn" else layer.mlp
    return layer.self_attn if which == "attn" else layer.mlp


def _zero(module, args, out):
    return (torch.zeros_like(out[0]), *out[1:]) if isinstance(out, tuple) else torch.zeros_like(out)


def shares_everything(view: nn.Module, orig: nn.Module) -> bool:
    ids = lambda m: {id(t) for t in [*m.parameters(), *m.buffers()]}  # noqa: E731
    return ids(view) == ids(orig)


def assert_same(a, b, rtol: float = 1e-9, equal_nan: bool = False) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12, equal_nan=equal_nan)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(MAKERS))
def test_outputs_equal_the_original(name, train):
    # Train mode runs with dropout 0.1 everywhere; both models are seeded identically before each
    # call and the view draws its dropout masks in the original's order.
    orig = make(name, p=0.1 if train else 0.0)
    view = adapt(orig)
    x, kw = batch(name)
    orig.train(train)
    torch.manual_seed(7)
    a = orig(x, **kw)
    torch.manual_seed(7)
    b = view(x, **kw)
    assert type(a) is type(b)
    assert_same(b.logits, a.logits)
    assert_same(b.loss, a.loss)
    if train:  # the dropout did act: another seed gives other logits
        torch.manual_seed(8)
        assert not torch.allclose(orig(x, **kw).logits, a.logits)
    rb = residual_blocks(view)
    assert len(rb) == 2 * L  # one unit per attention and per MLP sublayer
    assert shares_everything(view, orig) and residual_blocks(orig) == []
    post = {type(b.post).__name__ for b in rb}
    assert post == ({"LayerNorm"} if name == "bert" else {"Identity"})  # post-LN: the norm is on the skip path


@pytest.mark.parametrize("asked_before", [False, True], ids=["view-first", "original-first"])
@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "vit"])
def test_hidden_states_attentions_and_a_change_through_the_view(name, asked_before):
    orig = make(name).eval()
    orig.config._attn_implementation = "eager"  # the implementation that returns attention weights
    x, kw = batch(name)
    kw |= {"output_hidden_states": True, "output_attentions": True}
    if asked_before:  # transformers installed its capturing hooks on the original already
        orig(x, **kw)
    view = adapt(orig)
    b, a = view(x, **kw), orig(x, **kw)
    assert len(b.hidden_states) == len(a.hidden_states) == L + 1  # each recorded once, in both models
    assert len(b.attentions) == len(a.attentions) == L
    for ha, hb in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions, strict=True):
        # Llama's eager attention gives NaN weights for a padded query that sees no key: in both.
        assert_same(hb, ha, equal_nan=True)
    assert torch.isfinite(b.logits[0]).all()
    # One set of weights: a change through the view is a change of the original.
    with torch.no_grad():
        next(residual_blocks(view)[1].branch.parameters()).mul_(2.0)  # (adding a constant: LayerNorm output sums to 0)
    changed = view(x, **kw).logits
    assert_same(changed, orig(x, **kw).logits, equal_nan=True)
    assert not torch.allclose(changed[0], b.logits[0])


@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral"])
def test_cache_passes_through(name):
    orig = make(name).eval()
    view = adapt(orig)
    ids, kw = batch(name)
    mask = kw["attention_mask"]
    for m in (orig, view):
        first = m(ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
        m.step = m(ids[:, 4:], attention_mask=mask, cache=first.cache, use_cache=True)
    assert_same(view.step.logits, orig.step.logits)
    assert view.step.cache.get_seq_length() == S


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generate_gives_the_same_tokens(name):
    orig = make(name).eval()
    orig.generation_config.pad_token_id = orig.generation_config.eos_token_id = 0
    view = adapt(orig)
    ids = batch(name)[0][:, :3]
    want = orig.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(view.generate(ids, max_new_tokens=4, do_sample=False), want)


class Call(nn.Module):
    """``decompose`` calls ``model(inputs)``: this carries the mask and picks the logits."""

    def __init__(self, model: nn.Module, **kw) -> None:
        super().__init__()
        self.model, self.kw = model, kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, **self.kw).logits


def _rmsnorm_in_float64(model: nn.Module) -> None:
    """transformers' RMSNorm computes in float32 whatever the input dtype (for stability in half
    precision), which bounds the float64 check at float32 round-off; this is the same function
    in float64."""
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = lambda h, m=m: m.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))


def _first_input_grad(name: str, model: Call, x: torch.Tensor, loss) -> torch.Tensor:
    """Plain autograd on the original: the gradient at the first layer's input."""
    seen = []

    def hook(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        h.retain_grad()
        seen.append(h)

    handle = layers(name, model.model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        loss(model(x)).backward()
    finally:
        handle.remove()
    return seen[0].grad


@pytest.mark.parametrize("name", list(MAKERS))
def test_decompose_sums_to_autograd(name):
    orig = make(name).eval()
    if name in RMSNORM:
        _rmsnorm_in_float64(orig)
    view = adapt(orig)
    x, kw = batch(name)
    kw.pop("labels")
    w = torch.randn(*Call(orig, **kw)(x).shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = lambda out: (out * w).sum()  # noqa: E731
    dec = resgrad.paths.decompose(Call(view, **kw), x, loss)
    assert dec.n == 2 * L and dec.rel_error < 1e-10
    ref = _first_input_grad(name, Call(orig, **kw), x, loss)
    assert_same(dec.total, ref)
    assert_same(dec.reference, ref)
    assert float(dec.grads[1:].norm()) > 1e-3 * float(ref.norm())  # the branches carry part of it


# decompose's own float64 check may warn about the float32 round-off inside RMSNorm.
@pytest.mark.filterwarnings("ignore:the path components sum:RuntimeWarning")
@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_decompose_with_stock_rmsnorm_is_exact_to_float32(name):
    view = adapt(make(name))
    ids, _ = batch(name)
    dec = resgrad.paths.decompose(view, ids, lambda o: o.logits.square().sum())
    assert dec.n == 2 * L and dec.rel_error < 1e-6


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "vit"])
def test_lesion_equals_the_original_with_the_sublayer_zeroed(name):
    orig = make(name).eval()
    view = adapt(orig)
    x, kw = batch(name)
    full = view(x, **kw).logits
    for unit, (layer, which) in ((1, (0, "mlp")), (2, (1, "attn"))):
        with resgrad.gates(view, lesion=[unit]):
            got = view(x, **kw).logits
        handle = sublayer(name, layers(name, orig)[layer], which).register_forward_hook(_zero)
        try:
            want = orig(x, **kw).logits
        finally:
            handle.remove()
        assert_same(got, want)
        assert not torch.allclose(got, full)


def test_adapted_layer_is_an_instance_of_the_original_class():
    orig = make("qwen2")
    view = adapt(orig)
    vl, ol = view.model.layers[0], orig.model.layers[0]
    assert isinstance(vl, type(ol)) and vl is not ol
    assert vl.attn.branch.attn is ol.self_attn and vl.mlp.branch.mlp is ol.mlp
    assert adapt(view) is view  # a view is adapted once
    assert type(orig.model.layers[0]).__name__ == "Qwen2DecoderLayer"  # the original is untouched


def test_cross_attention_is_refused():
    cfg = T.GPT2Config(n_layer=1, n_embd=E, n_head=2, vocab_size=V, add_cross_attention=True)
    with pytest.raises(NotImplementedError, match="cross-attention.*register_adapter"):
        adapt(T.GPT2Model(cfg))


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_reordered_units_see_the_masks_and_positions_of_their_new_place(name):
    orig = make(name).eval()
    view = adapt(orig)
    x, kw = batch(name)
    full = view(x, **kw).logits
    with resgrad.paths.reordered(view, [0, 1, 2, 3]):
        assert_same(view(x, **kw).logits, full)
    # The first layer's MLP and the second layer's attention trade places: a unit that moved
    # out of its layer gets the new layer's context (rotary positions, masks) and still runs.
    with resgrad.paths.reordered(view, [0, 2, 1, 3]):
        got = view(x, **kw).logits
    assert torch.isfinite(got).all() and not torch.allclose(got, full)
    # By hand on the original: attention 0, attention 1, MLP 0, MLP 1 (Llama: pre-norm sublayers).
    if name == "llama":
        lay = orig.model.layers
        h = orig.model.embed_tokens(x)
        pos = torch.arange(S).unsqueeze(0)
        mask = T.masking_utils.create_causal_mask(config=orig.config, inputs_embeds=h,
                                                   attention_mask=kw["attention_mask"], cache=None,
                                                   position_ids=pos)
        rope = orig.model.rotary_emb(h, position_ids=pos)
        for i in (0, 1):
            h = h + lay[i].self_attn(lay[i].input_layernorm(h), attention_mask=mask, position_embeddings=rope)[0]
            if i == 1:
                for j in (0, 1):
                    h = h + lay[j].mlp(lay[j].post_attention_layernorm(h))
        assert_same(got, orig.lm_head(orig.model.norm(h)))
