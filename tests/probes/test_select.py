"""GradientMonitor's selection (select=), per-quantity schedules (schedules=), per-unit rows
(per=), and the one-line errors at construction for bad input."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import resgrad
from resgrad.nets.blocks import Residual
from resgrad.probes import GradientMonitor

pytestmark = pytest.mark.usefixtures("one_thread")


def _net():
    torch.manual_seed(0)
    return resgrad.build_for("resnet20", (3, 16, 16), 3)


def _step(model, mon, steps=1):
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        model.zero_grad()
        x = torch.randn(2, 3, 16, 16, generator=g)
        nn.functional.cross_entropy(model(x), torch.tensor([0, 2])).backward()
        mon.step()
    return mon.records


def _units(model):
    return [n for n, m in model.named_modules() if isinstance(m, Residual)]


def test_depth_positions_select_units_and_their_parameters():
    model = _net()
    names = _units(model)
    assert len(names) == 9
    with GradientMonitor(model, activations="blocks", split=True, select=["first", "middle", "last"]) as mon:
        rows = _step(model, mon)
    assert {r["name"] for r in rows if r["kind"] == "branch"} == {names[0], names[4], names[8]}
    assert {r["block"] for r in rows if r["kind"] == "input"} == {0, 4, 8}
    params = [r for r in rows if r["kind"] == "param"]
    want = [n for n, _ in model.named_parameters() if any(n.startswith(u + ".") for u in (names[0], names[4], names[8]))]
    assert [r["name"] for r in params] == want


def test_every_k_and_index():
    model = _net()
    with GradientMonitor(model, split=True, params=False, select=["every:4", -2]) as mon:
        rows = _step(model, mon)
    assert {r["block"] for r in rows if r["kind"] == "skip"} == {0, 4, 8, 7}


def test_glob_regex_and_type():
    model = _net()
    with GradientMonitor(model, select="stages.0.*") as mon:
        rows = _step(model, mon)
    got = [r["name"] for r in rows if r["kind"] == "param"]
    assert got and all(n.startswith("stages.0.") for n in got)
    with GradientMonitor(model, select=re.compile(r"branch\.[03]\.weight$")) as mon:
        rows = _step(model, mon)
    want = [n for n, _ in model.named_parameters() if re.search(r"branch\.[03]\.weight$", n)]
    assert [r["name"] for r in rows if r["kind"] == "param"] == want and want
    with GradientMonitor(model, select=nn.Linear, activations="leaves") as mon:
        rows = _step(model, mon)
    linear = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {r["name"].rsplit(".", 1)[0] for r in rows if r["kind"] == "param"} == linear
    assert {r["name"] for r in rows if r["kind"] == "activation"} >= linear


def test_schedules_per_quantity():
    model = _net()
    with GradientMonitor(model, every=1, weights=True, split=True,
                         schedules={"weights": 3, "split": lambda s: s == 1}) as mon:
        rows = _step(model, mon, 4)
    steps = {k: {r["step"] for r in rows if r["kind"] == k} for k in ("param", "weight", "skip", "stream")}
    assert steps == {"param": {0, 1, 2, 3}, "weight": {0, 3}, "skip": {1}, "stream": {1}}


def test_per_unit_rows_combine_the_units_parameters():
    model = _net()
    with GradientMonitor(model, per="param", weights=True) as a:
        ref = _step(model, a)
    with GradientMonitor(model, per="unit", weights=True) as b:
        rows = _step(model, b)
    names = _units(model)
    for kind in ("param", "weight"):
        by_unit: dict[int, float] = {}
        for r in ref:
            if r["kind"] == kind and r["block"] is not None:
                by_unit[r["block"]] = by_unit.get(r["block"], 0.0) + r["norm"] ** 2
        got = {r["block"]: r for r in rows if r["kind"] == kind and r["block"] is not None}
        assert set(got) == set(range(9))
        for i, sq in by_unit.items():
            assert got[i]["name"] == names[i]
            assert got[i]["norm"] == pytest.approx(sq ** 0.5, rel=1e-9)
        # Parameters outside every unit (stem, head) keep their own rows.
        outside = [r["name"] for r in ref if r["kind"] == kind and r["block"] is None]
        assert outside and outside == [r["name"] for r in rows if r["kind"] == kind and r["block"] is None]


def test_per_auto_is_per_unit_for_a_deep_model_only():
    assert GradientMonitor(_net()).per_unit is False  # ResNet-20: 59 parameter tensors
    deep = resgrad.build("resnet110", dims=2, in_channels=3)
    mon = GradientMonitor(deep)
    assert mon.per_unit is True and len(mon._params) > 128
    with mon:
        deep.zero_grad()
        nn.functional.cross_entropy(deep(torch.randn(1, 3, 8, 8)), torch.tensor([1])).backward()
        mon.step()
    rows = [r for r in mon.records if r["kind"] == "param"]
    assert len(rows) == 54 + sum(1 for r in rows if r["block"] is None)  # one per unit, plus stem/head


def test_update_ratio_per_unit_against_a_direct_computation():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with GradientMonitor(model, per="unit", params=False, updates=True) as mon:
        nn.functional.cross_entropy(model(torch.randn(2, 3, 16, 16)), torch.tensor([0, 2])).backward()
        mon.step()
        opt.step()
    rows = {r["name"]: r for r in mon.records if r["kind"] == "update"}
    unit = _units(model)[3]
    members = [n for n in before if n.startswith(unit + ".")]
    dw = sum(float((dict(model.named_parameters())[n].detach() - before[n]).double().pow(2).sum()) for n in members)
    w = sum(float(before[n].double().pow(2).sum()) for n in members)
    assert rows[unit]["norm"] == pytest.approx(dw ** 0.5, rel=1e-6)
    assert rows[unit]["ratio"] == pytest.approx((dw / w) ** 0.5, rel=1e-6)


@pytest.mark.parametrize("opts, message", [
    ({"select": "middel"}, "select: the glob 'middel' matches no parameter, unit or module of HeNet"),
    ({"select": "re:^nothing$"}, "select: the regex 're:^nothing$' matches no parameter"),
    ({"select": "re:("}, "select: 're:(' is not a valid regular expression"),
    ({"select": "every:0"}, "select: 'every:0' needs a whole number of units >= 1"),
    ({"select": 3.5}, "select: 3.5 (float) is not a selector"),
    ({"select": 99}, "select: unit index 99 is out of range for 9 units"),
    ({"select": nn.LSTM}, "select: the module type <class 'torch.nn.modules.rnn.LSTM'> matches no"),
    ({"select": []}, "select: an empty list selects nothing"),
    ({"schedules": {"params": 0}}, "schedules['params'] must be every k >= 1 steps, received 0"),
    ({"schedules": {"split": 5}}, "schedules names 'split', which is off"),
    ({"schedules": {"grads": 5}}, "schedules: unknown quantity 'grads'"),
    ({"per": "layer"}, "per must be 'auto', 'param' or 'unit', received 'layer'"),
    ({"split": 1}, "split must be True or False, received 1"),
])
def test_bad_input_is_one_line_at_construction(opts, message):
    with pytest.raises((ValueError, TypeError)) as e:
        GradientMonitor(_net(), **opts)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("opts", [{"split": True}, {"act_norms": True}, {"select": "first"}])
def test_a_quantity_needing_units_on_a_model_without_any(opts):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError) as e:
        GradientMonitor(model, **opts)
    msg = str(e.value)
    assert "no resgrad block and no residual unit that resgrad.adapt knows" in msg and "\n" not in msg
    assert msg.startswith(next(iter(opts)) if "select" in opts else f"{next(iter(opts))}=True")


def test_callbacks_check_the_new_options_before_training():
    # The framework callbacks call GradientMonitor.check_options: a bad schedule fails there.
    with pytest.raises(ValueError, match="schedules\\['params'\\] must be every k >= 1"):
        GradientMonitor.check_options(schedules={"params": 0})


def test_new_rows_have_the_same_columns_and_readable_names():
    from resgrad.probes.names import metric_dict
    from resgrad.probes.quantities import COLUMNS, KINDS

    model = _net()
    with GradientMonitor(model, split=True, act_norms=True, activations="blocks") as mon:
        rows = _step(model, mon)
    assert all(tuple(r) == COLUMNS for r in rows) and {r["kind"] for r in rows} <= set(KINDS)
    d = metric_dict(rows)
    u = _units(model)[2]
    assert d[f"resgrad/branch_share/{u}"] == pytest.approx(
        next(r["ratio"] for r in rows if r["kind"] == "branch" and r["name"] == u))
    for fam in ("skip_grad", "branch_grad", "forward_ratio", "stream_norm", "act_norm"):
        assert f"resgrad/{fam}/{u}" in d


def test_selection_on_a_foreign_model_keeps_the_values():
    T = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=40, n_positions=16,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    ids = torch.randint(0, 40, (2, 6))

    def rows(**opts):
        with GradientMonitor(model, split=True, **opts) as mon:
            model.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            mon.step()
        return {(r["kind"], r["name"]): r["norm"] for r in mon.records}

    full, some = rows(), rows(select=["first", "last", T.models.gpt2.modeling_gpt2.GPT2MLP])
    units = list(dict.fromkeys(n for k, n in full if k == "branch"))  # rows come in forward order
    got = {n for k, n in some if k == "branch"}
    mlps = {n for n in units if n.endswith("mlp")}
    assert got == {units[0], units[-1]} | mlps and len(units) == 6
    for key, v in some.items():
        assert v == pytest.approx(full[key], rel=1e-6), key
