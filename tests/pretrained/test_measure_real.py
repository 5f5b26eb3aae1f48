"""The measurements on the real models (skipped where their wheels are not installed).

MiniLM (22.7M parameters) is fast; SmolLM2's tests (135M, 30 layers) load it once per session
(about 17 s on 2 idle cores) and are marked slow. Tolerances: the fp32 models are measured in
fp32. MiniLM's path components sum to autograd's gradient within 1e-4 of its norm. SmolLM2's
components cancel massively (measured: the largest length's norm is ~5,000x the total's), so
the sum is checked relative to the largest component, within 1e-5 (float32's eps is 1.2e-7;
60 units of accumulated rounding), not to the total.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from resgrad.data.corpus import corpus
from resgrad.pretrained import batches, loss, perplexity
from resgrad.pretrained import deletion as dl
from resgrad.pretrained import ensemble as en
from resgrad.pretrained import measure as ms
from resgrad.pretrained.scoring import Scorer

REAL_REL = 1e-4  # fp32 on the real models (see the docstring)


def _check_grads(pre, sc):
    flow = ms.unit_flow(pre.view, sc.inputs, sc.loss, forward_kwargs=sc.kwargs, probes=1)
    pre.model.zero_grad()
    sc.loss(sc.forward(pre.model)).backward()
    want = [math.sqrt(sum(float(p.grad.double().square().sum()) for p in ms.weight_params(u))) for u in pre.units]
    pre.model.zero_grad(set_to_none=True)
    assert flow.param_norms == pytest.approx(want, rel=1e-5)
    return flow


def test_minilm_grads_paths_and_a_deleted_layer(minilm):
    b = batches(minilm, corpus(), seq_len=16, n=4, seed=0)
    sc = Scorer.of(minilm.task, b)
    assert float(sc.loss(sc.forward(minilm.model)).detach()) == pytest.approx(float(loss(minilm, b).detach()), rel=1e-5)
    flow = _check_grads(minilm, sc)
    assert len(flow.param_norms) == 12
    pv = en.path_view(minilm.view, sc.inputs, sc.loss, forward_kwargs=sc.kwargs, samples=0)
    assert pv["exact"]["n"] == 12 and pv["exact"]["rel_error"] < REAL_REL
    # Layer 3 removed, against a copy whose encoder holds the other five (transformers' own forward).
    other = copy.deepcopy(minilm.model)
    other.encoder.layer = torch.nn.ModuleList([other.encoder.layer[i] for i in (0, 1, 2, 4, 5)])
    other.config.num_hidden_layers = 5
    with dl.layers_as(minilm.model, [0, 1, 2, 4, 5]):
        got = perplexity(minilm, b)
    assert got == pytest.approx(perplexity(minilm, b, other), rel=1e-5)


@pytest.mark.slow
def test_smollm2_grads_paths_and_a_deleted_layer(smollm2):
    b = batches(smollm2, corpus(), seq_len=8, n=2, seed=0)
    sc = Scorer.of(smollm2.task, b)
    _check_grads(smollm2, sc)
    pv = en.path_view(smollm2.view, sc.inputs, sc.loss, forward_kwargs=sc.kwargs, samples=0)
    ex = pv["exact"]
    assert ex["n"] == 60 and ex["rel_error"] * ex["total_norm"] / max(ex["norms"]) < 1e-5
    assert pv["passes"] == pytest.approx(31.5) and pv["passes"] <= 0.6 * 60
    other = copy.deepcopy(smollm2.model)
    keep = [i for i in range(30) if i != 20]
    other.model.layers = torch.nn.ModuleList([other.model.layers[i] for i in keep])
    other.config.num_hidden_layers = 29
    with torch.no_grad():
        # The same call as the scorer's (the all-ones attention mask included: without it transformers takes
        # another causal-mask path, which moved this perplexity by 1.4e-4 relative in fp32).
        want = math.exp(float(other(b.ids, attention_mask=b.mask, labels=b.ids, use_cache=False).loss))
    with dl.layers_as(smollm2.model, keep):
        # Measured: 609.61 vs 609.52 (1.4e-4 relative; the tiny Llama and MiniLM agree within 1e-5). The
        # cause is not identified. 1e-3 is still far tighter than removing another layer: on the study's
        # 2 x 16-token batch single removals moved the perplexity by 8% (the least) to 360x.
        assert sc.score(smollm2.model)["perplexity"] == pytest.approx(want, rel=1e-3)
    assert sc.score(smollm2.model)["perplexity"] == pytest.approx(perplexity(smollm2, b), rel=1e-5)
