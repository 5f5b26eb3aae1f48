"""cifar10: the three source layouts, the cache, the He et al. augmentation, errors, real data."""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resgrad.data import cifar10, load
from resgrad.data.cifar10 import CLASSES, pad_crop_flip

cifar_mod = importlib.import_module("resgrad.data.cifar10")  # the attribute is the function

# The folder holding cifar10-jpeg.tar.gz: $RESGRAD_CIFAR10_TAR_DIR, else a "shared/data" folder beside the checkout.
REAL_DIR = Path(os.environ.get("RESGRAD_CIFAR10_TAR_DIR")
                or Path(__file__).resolve().parents[2].parent / "shared" / "data").resolve()
REAL_TAR = REAL_DIR / "cifar10-jpeg.tar.gz"
needs_real = pytest.mark.skipif(not REAL_TAR.is_file(), reason=f"no shared CIFAR-10 tarball at {REAL_TAR}")

N_TRAIN, N_TEST = 3, 2  # images per class in the tiny datasets


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Nothing in these tests may write to the user's cache folder or read the user's data.
    monkeypatch.setenv("RESGRAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESGRAD_DATA", raising=False)


@pytest.fixture(scope="module")
def tiny():
    """Random uint8 images (N, 3, 32, 32) in the loader's order: (rank within class, class)."""
    rng = np.random.default_rng(0)
    out = {}
    for split, per_class in (("train", N_TRAIN), ("test", N_TEST)):
        n = per_class * len(CLASSES)
        out[f"x_{split}"] = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        out[f"y_{split}"] = np.tile(np.arange(10), per_class).astype(np.int64)
    return out


def _write_pickles(root: Path, tiny) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    chunks = np.array_split(np.arange(len(tiny["y_train"])), 5)
    named = [(f"data_batch_{i + 1}", "x_train", "y_train", idx) for i, idx in enumerate(chunks)]
    named.append(("test_batch", "x_test", "y_test", np.arange(len(tiny["y_test"]))))
    for fname, xk, yk, idx in named:
        # The real batches are Python-2 pickles with bytes keys and rows R(1024) G(1024) B(1024).
        batch = {b"batch_label": fname.encode(), b"data": tiny[xk][idx].reshape(len(idx), -1),
                 b"labels": tiny[yk][idx].tolist(), b"filenames": [b"x.png"] * len(idx)}
        (d / fname).write_bytes(pickle.dumps(batch, protocol=2))
    return d


def _png(img_chw: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img_chw.transpose(1, 2, 0)).save(buf, format="PNG")  # lossless
    return buf.getvalue()


def _image_members(tiny):
    for split in ("train", "test"):
        for i, (img, cls) in enumerate(zip(tiny[f"x_{split}"], tiny[f"y_{split}"], strict=True)):
            yield f"{split}/{CLASSES[cls]}/{i // 10:04d}.png", _png(img)


def _write_folder(root: Path, tiny) -> Path:
    for name, blob in _image_members(tiny):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    return root


def _write_tar(path: Path, tiny, prefix: str = "CIFAR-10-images/") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, blob in _image_members(tiny):
            ti = tarfile.TarInfo(prefix + name)
            ti.size = len(blob)
            tf.addfile(ti, io.BytesIO(blob))
    return path


def _raw(b) -> tuple[np.ndarray, np.ndarray]:
    """Undo the normalisation: back to uint8 pixels."""
    m = torch.tensor(b.info["normalisation"]["mean"]).view(1, 3, 1, 1) * 255
    s = torch.tensor(b.info["normalisation"]["std"]).view(1, 3, 1, 1) * 255
    return ((b.x_train * s + m).round().to(torch.uint8).numpy(),
            (b.x_test * s + m).round().to(torch.uint8).numpy())


def _check_tiny(b, tiny) -> None:
    assert b.name == "cifar10" and b.num_classes == 10
    assert b.x_train.shape == (10 * N_TRAIN, 3, 32, 32) and b.x_test.shape == (10 * N_TEST, 3, 32, 32)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    xtr, xte = _raw(b)
    assert np.array_equal(xtr, tiny["x_train"]) and np.array_equal(xte, tiny["x_test"])
    assert np.array_equal(b.y_train.numpy(), tiny["y_train"]) and np.array_equal(b.y_test.numpy(), tiny["y_test"])
    # normalised per channel with train statistics
    assert torch.allclose(b.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(b.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


# --- the three layouts -------------------------------------------------------------------


@pytest.mark.parametrize("given", ["parent", "itself"])
def test_torchvision_pickle_layout(tmp_path, tiny, given):
    d = _write_pickles(tmp_path / "data", tiny)
    b = cifar10(data_dir=d.parent if given == "parent" else d)
    _check_tiny(b, tiny)
    assert "pickle" in b.info["source"] and b.info["path"] == str(d)


def test_image_folder_layout(tmp_path, tiny):
    _check_tiny(cifar10(data_dir=_write_folder(tmp_path / "imgs", tiny)), tiny)


def test_image_folder_tarball_given_as_file_or_folder(tmp_path, tiny):
    (tmp_path / "in").mkdir()
    tar = _write_tar(tmp_path / "in" / "cifar10-png.tar.gz", tiny)
    b = cifar10(data_dir=tar)
    _check_tiny(b, tiny)
    assert "tar" in b.info["source"]
    assert cifar10(data_dir=tar.parent).info["path"] == str(tar)


def test_pickle_tarball(tmp_path, tiny):
    d = _write_pickles(tmp_path / "src", tiny)
    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    _check_tiny(cifar10(data_dir=tar), tiny)


def test_data_dir_from_env_and_load_by_name(tmp_path, tiny, monkeypatch):
    d = _write_folder(tmp_path / "datasets" / "CIFAR-10-images", tiny)
    monkeypatch.setenv("RESGRAD_DATA", str(d.parent))  # a folder holding several datasets
    b = load("cifar-10")
    _check_tiny(b, tiny)
    assert b.info["path"] == str(d)


# --- the cache ---------------------------------------------------------------------------


def test_cache_is_used_and_keyed_by_source_mtime(tmp_path, tiny, monkeypatch):
    tar = _write_tar(tmp_path / "c.tar.gz", tiny)
    first = cifar10(data_dir=tar)
    assert first.info["cache_hit"] is False
    assert Path(first.info["cache_file"]).parent == tmp_path / "cache"  # $RESGRAD_CACHE

    def boom(*a):
        raise AssertionError("decoded again despite a cache file")

    with monkeypatch.context() as m:
        m.setattr(cifar_mod, "_decode", boom)
        again = cifar10(data_dir=tar)
    assert again.info["cache_hit"] is True and again.info["cache_file"] == first.info["cache_file"]
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, k), getattr(first, k))

    st = tar.stat()
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the source changed: decode again
    changed = cifar10(data_dir=tar, cache_dir=tmp_path / "explicit")
    assert changed.info["cache_hit"] is False
    assert Path(changed.info["cache_file"]).parent == tmp_path / "explicit"


def test_unreadable_cache_file_is_rebuilt(tmp_path, tiny):
    d = _write_folder(tmp_path / "imgs", tiny)
    path = Path(cifar10(data_dir=d).info["cache_file"])
    path.write_bytes(b"not an npz")
    b = cifar10(data_dir=d)
    assert b.info["cache_hit"] is False
    _check_tiny(b, tiny)


# --- augmentation (He et al. 2015 §4.2) --------------------------------------------------


def _crops(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Every (offset, flip) view of one image (C, H, W): ((2p+1)^2 * 2, C, H, W)."""
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    h, w = x.shape[-2:]
    views = [xp[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return torch.stack(views + [v.flip(-1) for v in views])


def test_pad_crop_flip_is_a_crop_or_its_mirror():
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = pad_crop_flip(x, torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.dtype == x.dtype
    which = []
    for xi, oi in zip(x, out, strict=True):
        hits = [k for k, v in enumerate(_crops(xi)) if torch.equal(v, oi)]
        assert len(hits) == 1  # exactly one of the 162 views
        which.append(hits[0])
    flipped = [k >= 81 for k in which]
    assert 10 < sum(flipped) < 54  # both outcomes occur, about half each
    assert len({k % 81 for k in which}) > 20  # offsets vary per example
    # the 4-pixel pad is zeros in normalised space (the train channel mean)
    assert any((o == 0).all(dim=0).any() for o in out)


def test_flip_really_flips():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5).repeat(32, 1, 1, 1)
    out = pad_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    is_flip = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    is_same = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(a != b for a, b in zip(is_flip, is_same, strict=True))  # each exactly one of the two
    assert any(is_flip) and any(is_same)


def test_augmentation_is_deterministic_for_a_seeded_generator():
    x = torch.randn(16, 3, 32, 32)
    a = pad_crop_flip(x, torch.Generator().manual_seed(5))
    b = pad_crop_flip(x, torch.Generator().manual_seed(5))
    c = pad_crop_flip(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_batches_only_are_augmented(tmp_path, tiny):
    d = _write_folder(tmp_path / "imgs", tiny)
    b = cifar10(data_dir=d)
    assert b.augment is pad_crop_flip and "He et al. 2015" in b.info["augment"]
    xs = torch.cat([xb for xb, _ in b.batches(7, train=False)])
    assert torch.equal(xs, b.x_test)  # test set: in order, never augmented
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(b.x_train), generator=torch.Generator().manual_seed(0))
    xb, yb = next(b.batches(len(b.x_train), generator=g))
    assert torch.equal(yb, b.y_train[order]) and not torch.equal(xb, b.x_train[order])
    plain = cifar10(data_dir=d, augment=False)
    assert plain.augment is None and plain.info["augment"] is None
    xb, _ = next(plain.batches(len(b.x_train), generator=torch.Generator().manual_seed(0)))
    assert torch.equal(xb, b.x_train[order])


# --- errors ------------------------------------------------------------------------------


def _one_line_naming_layouts(msg: str) -> None:
    assert "\n" not in msg
    for part in ("cifar-10-batches-py", "train/<class>/", "test/<class>/", ".tar.gz", "--data-dir", "RESGRAD_DATA"):
        assert part in msg, part


def test_missing_folder_error(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        cifar10(data_dir=where)
    assert f"received data_dir='{where}', which does not exist" in str(e.value)
    _one_line_naming_layouts(str(e.value))
    with pytest.raises(FileNotFoundError) as e:
        cifar10()  # neither data_dir nor RESGRAD_DATA
    assert "received no data folder" in str(e.value)
    _one_line_naming_layouts(str(e.value))


def test_unrecognised_folder_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as e:
        cifar10(data_dir=tmp_path / "empty")
    assert "which holds neither layout" in str(e.value)
    _one_line_naming_layouts(str(e.value))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="a file that is not a .tar.gz"):
        cifar10(data_dir=tmp_path / "notes.txt")


def test_bad_contents_errors(tmp_path, tiny):
    d = _write_folder(tmp_path / "imgs", tiny)
    (d / "train" / "airplanes").mkdir()
    with pytest.raises(ValueError, match="unknown class folder .*airplanes.*airplane automobile"):
        cifar10(data_dir=d)

    p = _write_pickles(tmp_path / "pk", tiny)
    (p / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="lacks data_batch_3"):
        cifar10(data_dir=p)

    class Evil:  # a pickle that would run code on load must be refused, not run
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (p / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="refusing to load"):
        cifar10(data_dir=p)

    big = tmp_path / "big" / "train" / "cat"
    big.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(big / "0.png")
    (tmp_path / "big" / "test" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="expected a 32x32 image, received 64x64"):
        cifar10(data_dir=tmp_path / "big")


# --- the real CIFAR-10 tarball (RESGRAD_CIFAR10_TAR_DIR; skipped without one) --------------------------------------------------


@needs_real
def test_real_tarball_first_members():
    assert cifar_mod._find_source(REAL_DIR) == ("tar", REAL_TAR)
    a = cifar_mod._read_tar(REAL_TAR, limit=300)  # streams only the first few hundred members
    n = len(a["y_train"]) + len(a["y_test"])
    assert n == 300
    x = np.concatenate([a["x_train"], a["x_test"]])
    assert x.shape == (300, 3, 32, 32) and x.dtype == np.uint8
    assert set(np.concatenate([a["y_train"], a["y_test"]]).tolist()) <= set(range(10))
    means = x.mean(axis=(0, 2, 3))
    assert ((means > 80) & (means < 170)).all()  # natural images, not blank or noise


@pytest.mark.slow
@needs_real
def test_real_cifar10_counts_balance_and_channel_means(tmp_path):
    # Decodes all 60k JPEGs (11-20 s on 2 shared cores): slow; test_real_tarball_first_members
    # is the fast check on the same file.
    t = time.perf_counter()
    b = cifar10(data_dir=REAL_TAR)
    decode_s = time.perf_counter() - t
    assert len(b.y_train) == 50000 and len(b.y_test) == 10000  # Krizhevsky 2009
    assert torch.bincount(b.y_train).tolist() == [5000] * 10
    assert torch.bincount(b.y_test).tolist() == [1000] * 10
    mean = np.array(b.info["normalisation"]["mean"]) * 255
    assert np.allclose(mean, [125.27, 122.93, 113.86], atol=0.01), mean  # data/README.md
    x_test, cache = b.x_test.clone(), Path(b.info["cache_file"])
    del b  # ~740 MB of float32
    try:
        t = time.perf_counter()
        again = cifar10(data_dir=REAL_TAR)
        load_s = time.perf_counter() - t
        assert again.info["cache_hit"] is True and torch.equal(again.x_test, x_test)
        print(f"cifar10: decode {decode_s:.1f} s, cache load {load_s:.2f} s")
    finally:
        cache.unlink(missing_ok=True)  # pytest keeps recent tmp folders; don't leave 185 MB behind
