"""Deleting and reordering blocks: exact baselines, restored state, shape-safe swaps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resgrad.nets import blocks, build
from resgrad.paths import (
    deleted,
    error_rate,
    k_deletions,
    kendall_tau,
    random_swaps,
    reorder_curve,
    reordered,
    single_deletions,
    stages,
    swap_groups,
)


def he(name: str = "resnet20"):
    torch.manual_seed(0)
    return build(name, dims=1, in_channels=1, num_classes=4).eval()


X = torch.randn(16, 1, 12)
Y = torch.randint(4, (16,))


def manual(model, x, replace: dict[int, nn.Module] | None = None, order: list[int] | None = None):
    """The forward pass written out block by block (HeNet layout)."""
    bl = blocks(model)
    order = order or list(range(len(bl)))
    h = model.stem(x)
    for j in range(len(bl)):
        b = bl[order[j]]
        h = replace[j](h) if replace and j in replace else b(h)
    return model.fc(model.pool(model.final(h)).flatten(1))


@pytest.mark.parametrize("name", ["resnet20", "plain20", "preresnet20"])
def test_empty_deletion_reproduces_the_baseline_exactly(name):
    m = he(name)
    base = m(X)
    with deleted(m, blocks=[]):
        assert torch.equal(m(X), base)


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_deleting_a_block_leaves_its_shortcut(name):
    m = he(name)
    for i in (1, 3):  # 3 is a downsampling block: option A subsample + pad remains
        b = blocks(m)[i]
        with deleted(m, blocks=[i]):
            out = m(X)
        assert torch.equal(out, manual(m, X, {i: lambda h, b=b: b.post(b.shortcut(h))}))
    assert not any(b.lesioned for b in blocks(m))


def test_deletion_is_restored_after_an_exception():
    m = he()
    with pytest.raises(RuntimeError), deleted(m, blocks=[0, 2]):
        raise RuntimeError("boom")
    assert not any(b.lesioned for b in blocks(m))


def test_swap_groups_keep_to_one_stage_and_skip_downsampling():
    m = he()
    assert swap_groups(m, X) == [[0, 1, 2], [4, 5], [7, 8]]
    assert stages(m) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [b.changes_shape for b in blocks(m)].count(True) == 2


def test_reordering_runs_the_new_order_and_restores_the_old():
    m = he()
    base = m(X)
    original = blocks(m)
    order = [2, 1, 0, 3, 5, 4, 6, 7, 8]
    with reordered(m, order) as now:
        assert blocks(m) == now == [original[i] for i in order]
        out = m(X)
    assert torch.equal(out, manual(m, X, order=order)) and not torch.equal(out, base)
    assert blocks(m) == original and torch.equal(m(X), base)
    with pytest.raises(KeyError), reordered(m, order):
        raise KeyError("boom")
    assert blocks(m) == original


def test_bad_order_says_what_it_received():
    with pytest.raises(ValueError, match="permutation"), reordered(he(), [0, 0, 1, 2, 3, 4, 5, 6, 7]):
        pass


def test_kendall_tau_and_random_swaps():
    assert kendall_tau([0, 1, 2, 3]) == 1.0 and kendall_tau([3, 2, 1, 0]) == -1.0
    g = torch.Generator().manual_seed(0)
    groups = [[0, 1, 2], [4, 5], [7, 8]]
    for k in range(6):
        order = random_swaps(9, groups, k, g)
        assert sorted(order) == list(range(9)) and order[3] == 3 and order[6] == 6
        for grp in groups:  # blocks only move within their group
            assert sorted(order[i] for i in grp) == grp
    with pytest.raises(ValueError, match="swapped"):
        random_swaps(3, [], 1, g)


def test_lesion_experiments_return_tables():
    m = he()
    base = error_rate(m, X, Y)
    single = single_deletions(m, X, Y)
    assert single["baseline"] == base and len(single["blocks"]) == 9
    assert [r["downsample"] for r in single["blocks"]] == [False] * 3 + [True, False, False] * 2
    assert all(r["kind"] == "residual" for r in single["blocks"])
    curve = k_deletions(m, X, Y, [0, 1, 7], trials=3, seed=0)
    assert curve[0]["errors"] == [base] and len(curve[1]["errors"]) == 3 and curve[2]["k"] == 7
    with pytest.raises(ValueError, match=r"0\.\.7"):
        k_deletions(m, X, Y, [8])
    rows = reorder_curve(m, X, Y, [0, 2], trials=2, seed=0)
    assert rows[0]["trials"] == [{"tau": 1.0, "error": base}]
    assert len(rows[1]["trials"]) == 2 and all(-1 <= t["tau"] < 1 for t in rows[1]["trials"])
    assert torch.equal(m(X), he()(X))  # nothing left changed


def test_non_block_model_names_adapt():
    with pytest.raises(ValueError, match=r"resgrad\.adapt"):
        single_deletions(nn.Sequential(nn.Linear(12, 4)), X.flatten(1), Y)
