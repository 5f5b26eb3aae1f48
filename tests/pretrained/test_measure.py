"""resgrad.pretrained's measurements on tiny transformers models built from config, against independent computations."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import resgrad  # noqa: E402
from resgrad.pretrained import deletion as dl  # noqa: E402
from resgrad.pretrained import ensemble as en  # noqa: E402
from resgrad.pretrained import measure as ms  # noqa: E402
from resgrad.pretrained.scoring import Scorer  # noqa: E402


def tiny_llama(dtype=torch.float32, layers=3):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    return transformers.LlamaForCausalLM(cfg).to(dtype).eval()


def tiny_bert(dtype=torch.float32, layers=2):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                                  num_attention_heads=2, max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    return transformers.BertModel(cfg, add_pooling_layer=False).to(dtype).eval()


def lm_scorer(b=2, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Scorer("lm", torch.randint(0, 50, (b, s), generator=g))


def embed_scorer(b=3, s=6):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (2 * b, s), generator=g)
    mask = torch.ones(2 * b, s, dtype=torch.long)
    mask[0, -2:] = 0
    return Scorer("embed", ids, {"attention_mask": mask})


@pytest.mark.parametrize("make,scorer", [(tiny_llama, lm_scorer), (tiny_bert, embed_scorer)])
def test_param_norms_equal_plain_autograd(make, scorer):
    model, sc = make(), scorer()
    view = resgrad.adapt(model)
    flow = ms.unit_flow(view, sc.inputs, sc.loss, forward_kwargs=sc.kwargs, probes=2)
    # Plain autograd on the original model: backward, then each unit's weights' .grad.
    model.zero_grad()
    sc.loss(sc.forward(model)).backward()
    units = resgrad.blocks(view)
    want = [math.sqrt(sum(float(p.grad.double().square().sum()) for p in ms.weight_params(u))) for u in units]
    assert len(flow.param_norms) == 2 * len(dl.layer_list(model)[2])
    assert flow.param_norms == pytest.approx(want, rel=1e-6)
    assert all(w > 0 for w in want)
    assert flow.loss == pytest.approx(float(sc.loss(sc.forward(model)).detach()), rel=1e-6)


def test_stream_gradients_and_skip_branch_split_against_autograd():
    model, sc = tiny_llama(torch.float64), lm_scorer()
    view = resgrad.adapt(model)
    flow = ms.unit_flow(view, sc.inputs, sc.loss, probes=1)
    units = resgrad.blocks(view)
    xs = []
    hs = [u.register_forward_pre_hook(lambda m, a: xs.append(a[0])) for u in units]
    hs.append(units[-1].register_forward_hook(lambda m, a, o: xs.append(o)))
    value = sc.loss(sc.forward(view))
    for h in hs:
        h.remove()
    gs = torch.autograd.grad(value, xs, retain_graph=True)
    assert flow.stream_norms == pytest.approx([float(g.norm()) for g in gs], rel=1e-9)
    # Pre-LN: the gradient at unit i's input is the skip part (the output's gradient) plus the branch part.
    for i, u in enumerate(units):
        assert flow.skip_norms[i] == pytest.approx(float(gs[i + 1].norm()), rel=1e-9)
        if i % 2:  # the MLP branch is a function of its input alone: call it again
            x = xs[i].detach().requires_grad_(True)
            (jb,) = torch.autograd.grad(u.branch(x), x, gs[i + 1])
            assert flow.branch_norms[i] == pytest.approx(float(jb.norm()), rel=1e-9)
            assert torch.allclose(gs[i], gs[i + 1] + jb, rtol=1e-9, atol=1e-12)
    assert all(0 < s < 1 for s in flow.branch_share)


def test_branch_jacobian_ratio_against_explicit_jacobian():
    model = tiny_llama(torch.float64, layers=1)
    sc = lm_scorer(b=1, s=4)
    view = resgrad.adapt(model)
    unit = resgrad.blocks(view)[1]  # the MLP unit: a function of its input alone
    xs = []
    h = unit.register_forward_pre_hook(lambda m, a: xs.append(a[0].detach()))
    with torch.no_grad():
        sc.forward(view)
    h.remove()
    x = xs[0]
    jac = torch.autograd.functional.jacobian(unit.branch, x).reshape(x.numel(), x.numel())
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = float((jac @ v.flatten()).norm() / v.norm())
    # rel 1e-6: Llama's RMSNorm computes in float32 inside a float64 model.
    assert ms.jvp_ratio(unit.branch, x, v) == pytest.approx(want, rel=1e-6)
    # The VJP ratio unit_flow reports: the transpose on the same probe ...
    x2 = x.clone().requires_grad_(True)
    (ju,) = torch.autograd.grad(unit.branch(x2), x2, v)
    assert float(ju.norm() / v.norm()) == pytest.approx(float((jac.T @ v.flatten()).norm() / v.norm()), rel=1e-6)
    # ... and its mean square over probes estimates ||J||_F^2 / d, as the JVP ratio does.
    flow = ms.unit_flow(view, sc.inputs, sc.loss, probes=400, seed=0)
    rms = float(jac.norm() / math.sqrt(x.numel()))
    assert flow.jacobian[1] == pytest.approx(rms, rel=0.15)


def test_angular_distance_and_block_influence_by_hand():
    a = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    b = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    # Token 0: 90 degrees -> 1/2; token 1: 0 -> 0; mean 1/4.
    assert ms.angular_distance(a, b) == pytest.approx(0.25, abs=1e-7)
    assert ms.block_influence(a, b) == pytest.approx(0.5, abs=1e-7)
    mask = torch.tensor([[True, False]])
    assert ms.angular_distance(a, b, mask) == pytest.approx(0.5, abs=1e-7)


def test_stream_matches_hidden_states():
    model, sc = tiny_bert(), embed_scorer()
    view = resgrad.adapt(model)
    st = ms.stream(view, sc.inputs, forward_kwargs=sc.kwargs)
    with torch.no_grad():
        hs = model(sc.inputs, output_hidden_states=True, **sc.kwargs).hidden_states
    mask = sc.kwargs["attention_mask"].bool()
    assert len(st.norms) == len(hs) == 3
    assert st.norms == pytest.approx([float(h.norm(dim=-1)[mask].mean()) for h in hs], rel=1e-5)
    cos = F.cosine_similarity(hs[0].double(), hs[2].double(), dim=-1)
    want = float((torch.arccos(cos.clamp(-1, 1)) / math.pi)[mask].mean())
    assert st.angular[0][2] == pytest.approx(want, rel=1e-5)
    assert st.angular[2][0] == st.angular[0][2] and st.angular[1][1] == 0.0


def test_exact_decomposition_sums_to_the_gradient_float64():
    model, sc = tiny_llama(torch.float64), lm_scorer()
    view = resgrad.adapt(model)
    pv = en.path_view(view, sc.inputs, sc.loss, samples=4)
    assert pv["exact"]["n"] == 6
    # Llama's RMSNorm and rotary embeddings compute in float32 inside a float64 model; the warning says so.
    assert pv["exact"]["rel_error"] < 1e-5
    assert pv["sampled"]["n"] == 6 and len(pv["sampled"]["mean"]) == 7
    assert pv["passes"] == pytest.approx(en.backward_passes(6)) == pytest.approx(3.5 + 1)


def test_bert_decomposition_float64():
    model, sc = tiny_bert(torch.float64), embed_scorer()
    pv = en.path_view(resgrad.adapt(model), sc.inputs, sc.loss, forward_kwargs=sc.kwargs, samples=0)
    assert pv["exact"]["rel_error"] < 1e-10
    assert pv["sampled"] is None


def test_deleted_layer_perplexity_equals_transformers_without_it():
    model, sc = tiny_llama(), lm_scorer()
    with dl.layers_as(model, [0, 2]):
        got = sc.score(model)["perplexity"]
    # An independent copy with the layer removed from the ModuleList and the config adjusted.
    other = copy.deepcopy(model)
    other.model.layers = torch.nn.ModuleList([other.model.layers[0], other.model.layers[2]])
    other.config.num_hidden_layers = 2
    with torch.no_grad():
        want = math.exp(float(other(sc.inputs, labels=sc.inputs, use_cache=False).loss))
    assert got == pytest.approx(want, rel=1e-5)
    assert len(model.model.layers) == 3 and model.config.num_hidden_layers == 3  # put back
    assert sc.score(model)["perplexity"] != pytest.approx(got)


def test_deletion_choices_and_the_oracle():
    model, sc = tiny_llama(layers=4), lm_scorer()
    st = ms.stream(resgrad.adapt(model), sc.inputs)
    d = dl.deletion(model, sc.score, "perplexity", st.angular, st.block_influence, shuffles=2)
    assert d["layers"] == 4 and len(d["single"]) == 4 and [c["k"] for c in d["consecutive"]] == [1, 2]
    for c in d["consecutive"]:
        vals = [s["perplexity"] for s in c["scores"]]
        assert c["oracle"]["perplexity"] == min(vals)
        k = c["k"]
        starts = range(len(vals))
        assert c["angular_start"] == min(starts, key=lambda s: st.angular[s][s + k])
        assert c["angular"]["perplexity"] >= c["oracle"]["perplexity"]
    assert d["reorder"]["layers"] == [1, 2] and len(d["reorder"]["shuffled"]) == 2
    with dl.layers_as(model, [0, 3]):
        assert sc.score(model) == d["reorder"]["skipped"]


def test_embed_scores():
    model, sc = tiny_bert(), embed_scorer()
    full = sc.score(model)
    assert full["cosine"] == pytest.approx(1.0)
    emb = torch.nn.functional.normalize(
        (model(sc.inputs, **sc.kwargs).last_hidden_state * sc.kwargs["attention_mask"][..., None]).sum(1)
        / sc.kwargs["attention_mask"].sum(1, keepdim=True), dim=-1)
    b = emb.shape[0] // 2
    want = float(((emb[:b] @ emb[b:].T).argmax(1) == torch.arange(b)).float().mean())
    assert full["retrieval"] == pytest.approx(want)
    with dl.layers_as(model, [1]):
        assert sc.score(model)["cosine"] < 1 - 1e-6  # a random tiny BERT: each layer changes little
