"""CIFAR-10 (Krizhevsky 2009) from a local folder, decoded once and cached as uint8 arrays.

Accepted sources (``data_dir`` or ``$RESGRAD_DATA``):

- the torchvision layout ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``),
  given as that folder or the folder holding it;
- an image folder ``train/<class>/*.jpg|png`` and ``test/<class>/*.jpg|png``, with class
  index = position in :data:`CLASSES`;
- a ``.tar.gz`` of either (e.g. ``cifar10-jpeg.tar.gz``), given as the file or the folder
  holding it; members are read straight from the archive, nothing is extracted.

Inputs are normalised per channel with the train mean and std; training batches get the
He et al. 2015 §4.2 augmentation (:func:`pad_crop_flip`), the test set never does.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .bundle import DataBundle
from .cache import cache_file, load_arrays, save_arrays

__all__ = ["cifar10", "pad_crop_flip", "CLASSES"]

# The standard class order (Krizhevsky 2009's batches.meta; torchvision's CIFAR10.classes).
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ENV = "RESGRAD_DATA"

_FORMAT = 1  # bump when the cached arrays change meaning
_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_TAR_SUFFIXES = (".tar.gz", ".tgz")
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cifar10(
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    augment: bool = True,
) -> DataBundle:
    """CIFAR-10: x ``(N, 3, 32, 32)`` float32 normalised per channel, y int64 in 0..9.

    50000 train / 10000 test for the full dataset. The first call decodes the source
    (about 10 s for 60k JPEGs) and caches uint8 arrays under ``cache_dir`` /
    ``$RESGRAD_CACHE`` / the user cache folder, keyed by the source's path, size and mtime.
    ``augment=False`` drops the training augmentation.
    """
    kind, src = _find_source(data_dir)
    files = _source_files(kind, src)
    key = {"format": _FORMAT, "kind": kind, "source": str(src.resolve()),
           "files": [[str(f), st.st_size, st.st_mtime_ns] for f, st in ((f, f.stat()) for f in files)]}
    path = cache_file("cifar10", key, cache_dir)
    arrays = load_arrays(path)
    hit = arrays is not None and all(k in arrays for k in _ARRAYS)
    if not hit:
        arrays = _decode(kind, src, files)
        for split in ("train", "test"):
            if len(arrays[f"y_{split}"]) == 0:
                raise ValueError(f"CIFAR-10 source {str(src)!r} has no {split} images; an image "
                                 f"folder needs both train/<class>/ and test/<class>/")
        save_arrays(path, arrays)

    mean, std = _channel_stats(arrays["x_train"])  # in pixel units, 0..255
    x_train = _normalise(arrays["x_train"], mean, std)
    x_test = _normalise(arrays["x_test"], mean, std)
    y_train, y_test = torch.from_numpy(arrays["y_train"]), torch.from_numpy(arrays["y_test"])
    info: dict[str, Any] = {
        "source": f"CIFAR-10 (Krizhevsky 2009), {kind} layout",
        "path": str(src),
        "cache_file": str(path),
        "cache_hit": hit,
        "counts": {"train": len(y_train), "test": len(y_test)},
        "classes": list(CLASSES),
        "normalisation": {"how": "per channel, train mean and std", "units": "pixel / 255",
                          "mean": (mean / 255).tolist(), "std": (std / 255).tolist()},
        "augment": ("He et al. 2015 §4.2: 4-pixel zero pad after normalisation, random 32x32 crop, "
                    "random horizontal flip; training batches only") if augment else None,
    }
    return DataBundle("cifar10", x_train, y_train, x_test, y_test, len(CLASSES),
                      pad_crop_flip if augment else None, info)


def pad_crop_flip(x: Tensor, generator: torch.Generator, *, pad: int = 4) -> Tensor:
    """He et al. 2015 §4.2: pad ``pad`` pixels per side, crop back to size, flip half.

    Vectorised over the batch ``x`` ``(B, C, H, W)``: one offset and one coin per example,
    drawn from ``generator``. The padding is zeros in *normalised* space, i.e. the train
    channel mean; He et al. pad after subtracting the mean too, so a pad is "average
    colour", not black.
    """
    b, c, h, w = x.shape
    dev = generator.device
    i = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    j = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = i[:, None] + ar_h  # (B, H)
    cols = j[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W); flip = read backwards
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


# --- finding the source ------------------------------------------------------------------


def _not_found(received: str) -> str:
    return (f"CIFAR-10 not found: received {received}. Accepted: the torchvision folder "
            f"cifar-10-batches-py/ (data_batch_1..5, test_batch), or an image folder "
            f"train/<class>/*.jpg|png + test/<class>/*.jpg|png (or a .tar.gz of it); put one in "
            f"a folder and pass it with --data-dir DIR or RESGRAD_DATA=DIR")


def _is_tarball(p: Path) -> bool:
    return p.name.lower().endswith(_TAR_SUFFIXES)


def _find_source(data_dir: str | os.PathLike | None) -> tuple[str, Path]:
    """("pickle" | "folder" | "tar", path) for ``data_dir`` or ``$RESGRAD_DATA``."""
    if data_dir is None:
        data_dir = os.environ.get(ENV, "").strip() or None
    if data_dir is None:
        raise FileNotFoundError(_not_found(f"no data folder (data_dir=None and {ENV} unset)"))
    p = Path(data_dir).expanduser()
    if not p.exists():
        raise FileNotFoundError(_not_found(f"data_dir={str(p)!r}, which does not exist"))
    if p.is_file():
        if _is_tarball(p):
            return "tar", p
        raise ValueError(_not_found(f"data_dir={str(p)!r}, a file that is not a .tar.gz"))
    # The folder itself, or a child named like CIFAR (cifar-10-batches-py, CIFAR-10-images, ...),
    # so RESGRAD_DATA can point at a folder that holds several datasets.
    candidates = [p, *sorted(d for d in p.iterdir() if d.is_dir() and "cifar" in d.name.lower())]
    for d in candidates:
        if (d / "data_batch_1").is_file():
            return "pickle", d
        if (d / "train").is_dir() and (d / "test").is_dir():
            return "folder", d
    tars = sorted(f for f in p.iterdir() if f.is_file() and _is_tarball(f))
    named = [f for f in tars if "cifar" in f.name.lower()]
    if named or len(tars) == 1:
        return "tar", (named or tars)[0]
    raise ValueError(_not_found(f"data_dir={str(p)!r}, which holds neither layout"))


def _source_files(kind: str, src: Path) -> list[Path]:
    """The files that make up the source; their sizes and mtimes key the cache."""
    if kind == "tar":
        return [src]
    if kind == "pickle":
        missing = [b for b in _BATCHES if not (src / b).is_file()]
        if missing:
            raise ValueError(f"CIFAR-10 folder {str(src)!r} lacks {', '.join(missing)}; the torchvision "
                             f"layout needs data_batch_1..5 and test_batch")
        return [src / b for b in _BATCHES]
    files = []
    for split in ("train", "test"):
        for d in sorted((src / split).iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            _class_index(d.name, str(d))
            files += sorted(f for f in d.iterdir() if _is_image_name(f.name))
    return files


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(_IMAGE_SUFFIXES)


def _class_index(name: str, where: str) -> int:
    try:
        return CLASSES.index(name)
    except ValueError:
        raise ValueError(f"CIFAR-10 image folder: unknown class folder {where!r}; class folders "
                         f"must be named {' '.join(CLASSES)}") from None


# --- decoding ----------------------------------------------------------------------------


def _decode(kind: str, src: Path, files: list[Path]) -> dict[str, np.ndarray]:
    if kind == "tar":
        return _read_tar(src)
    if kind == "pickle":
        return _from_batches({f.name: _unpickle(f.read_bytes(), str(f)) for f in files})
    items = []
    for f in files:  # .../<split>/<class>/<name>
        items.append((f.parent.parent.name, _class_index(f.parent.name, str(f.parent)), f.name,
                      _decode_image(f, str(f))))
    return _assemble(items)


def _read_tar(path: Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """Decode a tarball of either layout in one streaming pass (``limit``: first N images)."""
    items: list[tuple[str, int, str, np.ndarray]] = []
    batches: dict[str, dict[str, Any]] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            parts = PurePosixPath(m.name).parts
            where = f"{path}:{m.name}"
            if parts[-1] in _BATCHES:
                batches[parts[-1]] = _unpickle(_member_bytes(tf, m), where)
            elif len(parts) >= 3 and parts[-3] in ("train", "test") and _is_image_name(parts[-1]):
                cls = _class_index(parts[-2], where)
                items.append((parts[-3], cls, parts[-1], _decode_image(io.BytesIO(_member_bytes(tf, m)), where)))
                if limit is not None and len(items) >= limit:
                    break
    if batches:
        return _from_batches(batches)
    if not items:
        raise ValueError(_not_found(f"{str(path)!r}, an archive that holds neither layout"))
    return _assemble(items)


def _member_bytes(tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    f = tf.extractfile(m)
    assert f is not None  # regular files always have a payload
    return f.read()


def _decode_image(f: str | os.PathLike | IO[bytes], where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            if im.size != (32, 32):
                raise ValueError(f"{where}: expected a 32x32 image, received {im.size[0]}x{im.size[1]}; "
                                 f"CIFAR-10 images are 32x32")
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)  # (32, 32, 3)
    except UnidentifiedImageError:
        raise ValueError(f"{where}: not a readable image; remove it or replace it with a 32x32 JPEG/PNG") from None


def _assemble(items: list[tuple[str, int, str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack decoded images per split in a fixed, class-interleaved order.

    Sorted by (rank of the file name within its class, class): any prefix is class-balanced,
    so ``DataBundle.subset(n)`` of an image folder is not all airplanes.
    """
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        mine = sorted((cls, name, arr) for s, cls, name, arr in items if s == split)
        rank: dict[int, int] = {}
        keyed = []
        for cls, _, arr in mine:
            rank[cls] = rank.get(cls, -1) + 1
            keyed.append((rank[cls], cls, arr))
        keyed.sort(key=lambda t: (t[0], t[1]))
        x = np.stack([a for *_, a in keyed]) if keyed else np.zeros((0, 32, 32, 3), np.uint8)
        out[f"x_{split}"] = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        out[f"y_{split}"] = np.array([cls for _, cls, _ in keyed], dtype=np.int64)
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Loads the CIFAR batches (dicts of numpy arrays and lists) and nothing else.

    A pickle can run arbitrary code on load; the batches need only numpy's array
    reconstruction, so every other global is refused.
    """

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")
        if module.startswith("numpy.core.") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 moved it; skip the shim's warning
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    try:
        d = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise ValueError(f"{where}: not a CIFAR-10 python batch ({e}); use the files from "
                         f"cifar-10-python.tar.gz") from None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: not a CIFAR-10 python batch (a {type(d).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _from_batches(batches: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    missing = [b for b in _BATCHES if b not in batches]
    if missing:
        raise ValueError(f"CIFAR-10 python batches: missing {', '.join(missing)}; the torchvision "
                         f"layout needs data_batch_1..5 and test_batch")

    def stack(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            data, labels = np.asarray(batches[n].get("data")), batches[n].get("labels")
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels is None:
                raise ValueError(f"CIFAR-10 batch {n}: expected data uint8 (N, 3072) and labels, received "
                                 f"data {data.dtype} {data.shape}; use the files from cifar-10-python.tar.gz")
            xs.append(data.reshape(-1, 3, 32, 32))  # rows are R(1024) G(1024) B(1024), Krizhevsky 2009
            ys.append(np.asarray(labels, dtype=np.int64))
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    x_train, y_train = stack(list(_BATCHES[:5]))
    x_test, y_test = stack(["test_batch"])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# --- normalisation -----------------------------------------------------------------------


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of uint8 images ``(N, 3, H, W)``, from a 256-bin
    histogram per channel: no float copy of the whole train set."""
    levels = np.arange(256, dtype=np.float64)
    mean, std = np.empty(x.shape[1]), np.empty(x.shape[1])
    xt = torch.from_numpy(x)
    for c in range(x.shape[1]):  # torch.bincount: several times faster than numpy's here
        h = torch.bincount(xt[:, c].reshape(-1), minlength=256).double().numpy()
        mean[c] = h @ levels / h.sum()
        std[c] = np.sqrt(h @ (levels - mean[c]) ** 2 / h.sum())
    return mean, np.where(std > 0, std, 1.0)  # a constant channel (tiny test sets) stays finite


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Tensor:
    t = torch.from_numpy(x).to(torch.float32)  # (N, 3, 32, 32), a fresh copy
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return t.sub_(m).div_(s)
