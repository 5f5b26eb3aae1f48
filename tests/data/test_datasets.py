"""mnist1d, digits and the by-name ``load``: shapes, dtypes, caches, RNG hygiene, errors."""

from __future__ import annotations

import importlib
import importlib.util
import random
import sys

import numpy as np
import pytest
import torch

import resgrad.data as data
from resgrad.data import DataBundle, load

mnist1d_mod = importlib.import_module("resgrad.data.mnist1d")  # the attribute is the function


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Nothing in these tests may write to the user's cache folder.
    monkeypatch.setenv("RESGRAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESGRAD_DATA", raising=False)


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    """One generation shared by the module's tests: (cache folder, bundle)."""
    d = tmp_path_factory.mktemp("mnist1d-cache")
    return d, data.mnist1d(cache_dir=d)


def _check_bundle(b: DataBundle, name: str, n_train: int, n_test: int, shape: tuple[int, ...]) -> None:
    assert b.name == name
    assert b.x_train.shape == (n_train, *shape) and b.x_test.shape == (n_test, *shape)
    assert b.x_train.dtype == b.x_test.dtype == torch.float32
    assert b.y_train.dtype == b.y_test.dtype == torch.int64
    assert b.y_train.shape == (n_train,) and b.y_test.shape == (n_test,)
    assert b.num_classes == 10
    assert set(b.y_train.tolist()) == set(range(10)) and set(b.y_test.tolist()) == set(range(10))
    assert torch.isfinite(b.x_train).all() and torch.isfinite(b.x_test).all()


# --- mnist1d -----------------------------------------------------------------------------


def test_mnist1d_shapes_and_standardisation(mnist_cache):
    cache, b = mnist_cache
    _check_bundle(b, "mnist1d", 4000, 1000, (1, 40))
    assert abs(float(b.x_train.mean())) < 0.05 and abs(float(b.x_train.std()) - 1) < 0.05
    assert b.augment is None
    assert b.info["cache_hit"] is False and b.info["cache_file"].startswith(str(cache))
    assert b.info["args"]["seed"] == 42 and b.info["args"]["final_seq_length"] == 40
    assert "url" not in b.info["args"]
    assert "Greydanus" in b.info["source"] and "how" in b.info["normalisation"]


def test_mnist1d_cache_hit_skips_generation(mnist_cache, monkeypatch):
    cache, fresh = mnist_cache

    def boom(args):
        raise AssertionError("generated again despite a cache file")

    monkeypatch.setattr(mnist1d_mod, "_generate", boom)
    again = data.mnist1d(cache_dir=cache)
    assert again.info["cache_hit"] is True and again.info["args"] == fresh.info["args"]
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, k), getattr(fresh, k))
    flat = data.mnist1d(cache_dir=cache, flat=True)
    assert flat.x_train.shape == (4000, 40) and flat.x_test.shape == (1000, 40)
    assert torch.equal(flat.x_train, fresh.x_train[:, 0])


def test_mnist1d_cache_equals_fresh_generation_and_keeps_global_rngs(mnist_cache, tmp_path):
    _, cached = mnist_cache
    np.random.seed(1234)
    random.seed(99)
    np_before, py_before = np.random.get_state(), random.getstate()
    fresh = data.mnist1d(cache_dir=tmp_path / "elsewhere")  # make_dataset re-seeds both RNGs
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert random.getstate() == py_before
    assert fresh.info["cache_hit"] is False
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(fresh, k), getattr(cached, k))


def test_mnist1d_cache_folder_from_env(mnist_cache, monkeypatch):
    cache, _ = mnist_cache
    monkeypatch.setenv("RESGRAD_CACHE", str(cache))
    b = data.mnist1d()
    assert b.info["cache_hit"] is True and b.info["cache_file"].startswith(str(cache))


def test_mnist1d_seed_changes_the_data(mnist_cache, tmp_path):
    _, default = mnist_cache
    b = data.mnist1d(seed=7, cache_dir=tmp_path)
    assert b.info["args"]["seed"] == 7 and b.x_train.shape == (4000, 1, 40)
    assert not torch.equal(b.x_train, default.x_train)
    with pytest.raises(TypeError, match="seed must be an int"):
        data.mnist1d(seed=1.5)


# --- digits ------------------------------------------------------------------------------


def test_digits_shapes_split_and_standardisation():
    pytest.importorskip("sklearn")
    b = data.digits()
    _check_bundle(b, "digits", 1438, 359, (1, 8, 8))
    assert abs(float(b.x_train.mean())) < 1e-4 and abs(float(b.x_train.std()) - 1) < 1e-3
    flat = data.digits(flat=True)
    assert flat.x_train.shape == (1438, 64) and flat.x_test.shape == (359, 64)
    assert torch.equal(flat.x_train.reshape(-1, 1, 8, 8), b.x_train)  # same fixed split every call
    assert torch.equal(flat.y_test, b.y_test)


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` raise ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError) as e:
        data.digits()
    msg = str(e.value)
    assert "resgrad[digits]" in msg and "scikit-learn" in msg and "\n" not in msg


# --- load --------------------------------------------------------------------------------


def test_load_dispatches_by_name(mnist_cache):
    cache, _ = mnist_cache
    assert load("synthetic", n_train=20, n_test=10).name == "synthetic"
    assert load("MNIST-1D", cache_dir=cache, flat=True).x_train.shape == (4000, 40)
    assert load(" mnist1d ", cache_dir=cache).name == "mnist1d"
    if importlib.util.find_spec("sklearn") is not None:
        assert load("digits").name == "digits"
    assert data.DATASETS == ("mnist1d", "cifar10", "digits", "synthetic", "text")


def test_load_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; did you mean mnist1d\?") as e:
        load("mnist")
    assert "cifar10" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="choose one of mnist1d, cifar10, digits, synthetic"):
        load("imagenet")
    with pytest.raises(TypeError, match="must be a str"):
        load(10)


def test_all_is_explicit_and_complete():
    for name in ("load", "DataBundle", "mnist1d", "cifar10", "digits", "synthetic", "DATASETS"):
        assert name in data.__all__ and hasattr(data, name)


def test_a_lone_last_training_example_is_dropped_not_given_to_batchnorm():
    from resgrad.data import synthetic

    d = synthetic((4,), n_train=9, n_test=5)
    sizes = [len(xb) for xb, _ in d.batches(4, generator=torch.Generator().manual_seed(0))]
    assert sizes == [4, 4] and d.num_batches(4) == 2 and d.num_batches(4, train=False) == 2
    assert [len(xb) for xb, _ in d.batches(4, train=False)] == [4, 1]  # evaluation keeps every example
    assert [len(xb) for xb, _ in synthetic((4,), n_train=1, n_test=1).batches(4)] == [1]
