"""GradientMonitor under torch.compile (no graph break, eager's numbers) and the
non-finite origin (the first module in backward order whose output gradient is NaN/Inf)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resgrad
from resgrad.probes import GradientMonitor
from resgrad.probes.gradients import ORIGIN_KIND


def _net() -> nn.Module:
    # BatchNorm + in-place ReLU after a tapped module: the case a view-returning tap breaks.
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(4 * 12, 8), nn.Tanh(), nn.Linear(8, 3))


def _rows(mon: GradientMonitor, kind: str, step: int = 0) -> dict[str, float]:
    return {r["name"]: r["norm"] for r in mon.records if r["kind"] == kind and r["step"] == step}


def _reference(model: nn.Module, x, y) -> dict[str, float]:
    """Activation-gradient norms by torch.autograd.grad on an out-of-place copy (the
    monitor reports, for a module followed by an in-place op, the gradient of what it returned)."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    outs, t = {}, x
    for n, m in ref.named_children():
        t = m(t)
        outs[n] = t
    grads = torch.autograd.grad(F.cross_entropy(t, y), list(outs.values()))
    return {n: float(g.norm()) for n, g in zip(outs, grads, strict=True)}


def test_compiled_fullgraph_equals_eager_and_autograd(one_thread):
    torch.manual_seed(0)
    model = _net()
    x, y = torch.randn(6, 1, 12), torch.randint(0, 3, (6,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = _reference(model, x, y)
    model.load_state_dict(state)
    with GradientMonitor(model, activations=True) as eager:
        F.cross_entropy(model(x), y).backward()
        eager.step()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch._dynamo.reset()
    with GradientMonitor(model, activations=True) as mon:
        # fullgraph=True raises on any graph break; aot_eager traces forward AND backward.
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        F.cross_entropy(compiled(x), y).backward()
        assert mon.step() is True
    for n, p in model.named_parameters():  # the tap did not change training
        torch.testing.assert_close(p.grad, eager_grads[n])
    acts, eager_acts = _rows(mon, "activation"), _rows(eager, "activation")
    assert acts == pytest.approx(eager_acts, rel=1e-6)
    for n, v in ref.items():
        assert acts[n] == pytest.approx(v, rel=1e-5), n
    assert _rows(mon, "param") == pytest.approx(_rows(eager, "param"), rel=1e-6)
    assert all(r["nonfinite"] == 0 for r in mon.records if r["kind"] == "activation")


def test_dynamo_explain_counts_no_graph_break(one_thread):
    torch.manual_seed(0)
    model = resgrad.build("resmlp", depth=3, width=16, in_features=8, num_classes=3)
    x = torch.randn(4, 8)
    torch._dynamo.reset()
    with GradientMonitor(model, activations=True):
        ex = torch._dynamo.explain(model)(x)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


def test_compiled_blocks_profile_and_schedule(one_thread):
    torch.manual_seed(0)
    model = resgrad.build("resmlp", depth=3, width=16, in_features=8, num_classes=3)
    x, y = torch.randn(5, 8), torch.randint(0, 3, (5,))
    with GradientMonitor(model, params=False, activations="blocks") as eager:
        F.cross_entropy(model(x), y).backward()
        eager.step()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with GradientMonitor(model, params=False, activations="blocks", every=2) as mon:
        # Blocks 1 and 2 follow another block in one nn.Sequential: their inputs are not
        # tapped again, the previous output tap's value is reused (checked equal below).
        assert sorted(t.block for t in mon._taps.values() if t.source is not None) == [1, 2]
        for _ in range(3):  # steps 0 and 2 measured, step 1 runs the unmonitored graph
            F.cross_entropy(compiled(x), y).backward()
            mon.step()
    assert {r["step"] for r in mon.records} == {0, 2}
    assert mon.block_profile(step=0) == pytest.approx(eager.block_profile(), rel=1e-6)
    assert mon.block_profile(step=0, at="output") == pytest.approx(eager.block_profile(at="output"), rel=1e-6)


@pytest.mark.slow
def test_compiled_with_inductor_equals_eager():
    torch.manual_seed(0)
    model = _net()
    x, y = torch.randn(6, 1, 12), torch.randint(0, 3, (6,))
    with GradientMonitor(model, activations=True) as eager:
        F.cross_entropy(model(x), y).backward()
        eager.step()
    torch._dynamo.reset()
    with GradientMonitor(model, activations=True) as mon:
        F.cross_entropy(torch.compile(model, fullgraph=True)(x), y).backward()
        mon.step()
    assert _rows(mon, "activation") == pytest.approx(_rows(eager, "activation"), rel=1e-5)


class _SqrtRelu(nn.Module):
    """x + sqrt(relu(x) - relu(x).detach()): forward is x, but sqrt at 0 has an infinite
    derivative (the classic NaN source, like the norm of a zero vector)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        return x + torch.sqrt(r - r.detach())


def _nan_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), _SqrtRelu(), nn.Linear(6, 2))


def _first_bad_by_autograd(model: nn.Module, x) -> str:
    """Reference: the module closest to the loss whose output gradient is non-finite."""
    outs, names = [], []
    t = x
    for n, m in model.named_children():
        t = m(t)
        outs.append(t)
        names.append(n)
    grads = torch.autograd.grad(t.sum(), outs)
    for n, g in reversed(list(zip(names, grads, strict=True))):
        if not torch.isfinite(g).all():
            return n
    raise AssertionError("no non-finite gradient")


@pytest.mark.parametrize("compiled", [False, True])
def test_nonfinite_origin_names_the_first_module_in_backward_order(compiled, one_thread):
    torch.manual_seed(0)
    model = _nan_net()
    x = torch.randn(8, 4)
    want = _first_bad_by_autograd(model, x)
    assert want == "2"  # sqrt's backward at 0 is what produced it; '2' is the first to receive it
    torch._dynamo.reset()
    run = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
    with warnings.catch_warnings(record=True) as caught, GradientMonitor(model, activations=True) as mon:
        warnings.simplefilter("always")
        for _ in range(2):
            run(x).sum().backward()
            mon.step()
            model.zero_grad()
        rows = mon.records
    origin = [r for r in rows if r["kind"] == ORIGIN_KIND]
    assert len(origin) == 1 and origin[0]["name"] == want and origin[0]["step"] == 0
    assert origin[0]["nonfinite"] > 0
    assert mon.nonfinite_origin["produced_by"] == "3"
    msgs = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    assert len(msgs) == 1 and "'2'" in msgs[0] and "'3'" in msgs[0] and "\n" not in msgs[0]
    # downstream modules (tanh, linear 0) are non-finite too, but are not named
    acts = {r["name"]: r for r in rows if r["kind"] == "activation" and r["step"] == 0}
    assert acts["0"]["nonfinite"] > 0 and acts["4"]["nonfinite"] == 0


def test_nonfinite_origin_from_parameters_only():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    with warnings.catch_warnings(record=True) as caught, GradientMonitor(model) as mon:
        warnings.simplefilter("always")
        model(torch.randn(4, 3)).sum().backward()
        model[1].weight.grad[0, 0] = math.inf
        mon.step()
    assert mon.nonfinite_origin["name"] == "1.weight"
    assert any("parameter '1.weight'" in str(w.message) for w in caught)
    assert [r["name"] for r in mon.records if r["kind"] == ORIGIN_KIND] == ["1.weight"]


def test_warns_when_compiled_code_predates_the_hooks(one_thread):
    """Dynamo does not guard on module hooks by default: code traced for a hook-free
    instance of the same class is reused, so no hook runs. Say so, don't stay silent."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
    bare = resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=3)
    F.cross_entropy(torch.compile(bare, backend="aot_eager")(x), y).backward()
    hooked = resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=3)
    with GradientMonitor(hooked, activations=True) as mon:
        compiled = torch.compile(hooked, backend="aot_eager")
        with pytest.warns(RuntimeWarning, match="skip_nnmodule_hook_guards"):
            F.cross_entropy(compiled(x), y).backward()
            mon.step()
    torch._dynamo.reset()
