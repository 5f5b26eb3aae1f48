"""The ensemble view of a trained residual net and its plain twin (Veit et al. 2016).

Veit, Wilber, Belongie 2016 (arXiv 1605.06431): ``n`` residual blocks unroll into
``2^n`` paths with Binomial(n, 1/2) lengths (§3, §5); almost all gradient comes from short
paths, 5-17 of 54 blocks in ResNet-110 on CIFAR-10, 0.45% of all paths (§5); deleting a
single block barely matters, deleting or reordering many degrades smoothly (§4). This
experiment measures all of it on one trained residual net, with its plain twin beside
it for the lesions:

- ``exact``: the gradient at the first block's input split by path length
  (:func:`resgrad.paths.decompose`; norm of the sum of all paths of each length);
- ``sampled``: Veit's single-path magnitudes, vectorised (:func:`resgrad.paths.sample`),
  ``total = count x mean`` per length;
- ``effective``: the shortest window of lengths holding ``mass`` of the magnitude, from
  both views, with its share of paths; they differ by cancellation (``explanation``);
- ``lesion`` / ``deletion`` / ``reorder``: test error with single blocks deleted, with
  ``k`` random blocks deleted, and after ``k`` random swaps (vs Kendall tau);
- ``short_path`` (when ``config.short_path = k``): a copy of the residual net trained
  with only ``k`` random blocks' branches active per batch (``TrainConfig.active_blocks``,
  Veit §5.2), tested with all blocks, beside the fully trained net.

Models come as objects, run folders (:func:`resgrad.load_run`) or registry names; a name
is trained first through :func:`resgrad.fit` when ``config.train`` is set (else it is
measured at initialisation, and the results say so).

The result is a :class:`resgrad.results.EnsembleResult` (results/ensemble.py defines every
field). Parts not run (``parts``) are None; ``plain`` parts are absent without a plain twin;
``short_path`` needs ``config.short_path`` and a residual net given by name or run folder.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import paths
from ..data import DataBundle
from ..data import load as load_data
from ..io import environment, jsonable
from ..nets import blocks, build_for, residual_blocks
from ..nets.spec import resolve_spec, spec_kind
from ..results import EnsembleResult
from ..rundir import RunDir
from ..train import RUN_KIND, TrainConfig, evaluate, fit, load_run
from . import driver
from .config import Config as BaseConfig
from .config import check_int, check_number, need

__all__ = ["EnsembleConfig", "run", "run_ensemble", "compute", "VEIT2016", "PARTS", "KIND"]

KIND = "resgrad.ensemble"  # config.json's kind for an ensemble run folder
LABEL = "ensemble"
NEEDS_OUT = False  # without a folder nothing is written (and named models are trained without one)
# Model objects and data come from the caller, so a used folder is recomputed, never refused: it
# records what was measured, and the results overwrite it. A caller that knows the inputs are the
# same (a study's stage) passes reuse=True; a finished result of the very same config is returned.
CLAIM = "fresh"
REUSE = False
REUSE_EXACT = True
Result = EnsembleResult

PARTS = ("paths", "lesion", "short")

# Veit et al. 2016 (arXiv 1605.06431): ResNet-110 (54 blocks) on CIFAR-10.
VEIT2016: dict[str, Any] = {
    "source": "Veit, Wilber, Belongie 2016, arXiv 1605.06431",
    "setting": "ResNet-110 (54 blocks) on CIFAR-10; sampled path magnitudes, 1,000 samples per length",
    "n": 54,
    "effective": {"lo": 5, "hi": 17, "quoted": "0.45%", "where": "§5: effective paths 5-17 modules long"},
    "paths_95": {"lo": 19, "hi": 35, "where": "§5: more than 95% of paths go through 19 to 35 modules"},
    "short_path": {"active_blocks": 23, "n": 54, "test_error": 0.0596, "full_test_error": 0.0610,
                   "where": "§5.2: training only 23 random blocks per batch, CIFAR-10 error 5.96% vs 6.10%"},
    "lesion": [
        "§4: deleting any single block other than a downsampling block causes no noticeable change; "
        "deleting a layer of VGG sends the error to chance",
        "§4: error rises smoothly with the number of deleted blocks (about 0.2 at 10 deleted; 20 is severe)",
        "§4: error rises smoothly as blocks are reordered (error vs Kendall tau)",
    ],
}


@dataclass
class EnsembleConfig(BaseConfig):
    """What to measure and how much of it (``preset("quick"|"default")`` for sizes)."""

    residual: str = "resnet110"  # residual net when no model object is given: run folder or registry name
    plain: str | None = "plain110"  # its plain twin (same spec forms); None: no plain lesions
    data: str = "mnist1d"  # dataset when no DataBundle is given (and the run folder names none)
    data_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to resgrad.load_data (cifar10: data_dir)
    train: TrainConfig | None = None  # registry names are trained with this first; None: measured at init
    examples: int = 500  # test examples for the decomposition and the sampling
    samples: int = 1000  # sampled paths per length (Veit et al. §5: 1,000)
    lengths: tuple[int, ...] | None = None  # lengths to sample; None: all 0..n (needed for the sampled window)
    batch_size: int = 500  # examples per sampling backward (one random path each)
    float64: bool = False  # measure paths on a float64 copy of the model (tighter sum check)
    training: bool = False  # BatchNorm mode for the exact decomposition (sampling is always eval)
    mass: float = 0.9  # the effective paths hold this share of the gradient magnitude (issue 4 §4)
    delete_ks: tuple[int, ...] | None = None  # numbers of random blocks to delete; None: ~15 points 0..all
    swap_ks: tuple[int, ...] | None = None  # numbers of random swaps; None: 0, 1, 2, 4, ... up to n
    trials: int = 5  # random draws per k (deletion and reorder)
    eval_examples: int | None = None  # test examples for lesion errors; None: the whole test split
    short_path: int | None = None  # k: also train a copy with k random blocks active per batch (Veit §5.2: 23)
    seed: int = 0  # sampling, deletion and swap draws
    device: str = "cpu"  # where models run ("cpu", "cuda", ...)
    size: str = "default"  # the preset this came from (recorded only)

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        for name in ("examples", "samples", "batch_size", "trials"):
            check_int(name, getattr(self, name), 1)
        need(self.short_path is None or (isinstance(self.short_path, int) and not isinstance(self.short_path, bool)
                                         and self.short_path >= 1),
             "short_path", "None or an integer >= 1 (active blocks)", self.short_path)
        check_number("mass", self.mass, lo=0, hi=1, open_lo=True, rule="in (0, 1]")
        for name in ("lengths", "delete_ks", "swap_ks"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, tuple(int(k) for k in v))

    @classmethod
    def preset(cls, size: str, **overrides: Any) -> EnsembleConfig:
        """``quick``: seconds, for tests and the quick study; ``default``: Veit's 1,000 samples."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, received {size!r}")
        return cls(**{**SIZES[size], "size": size, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "ensemble config") -> EnsembleConfig:
        """Strictly load an EnsembleConfig dict (an unknown or mistyped field is one line naming it)."""
        return cls.from_json(d, source=source)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = None if self.train is None else asdict(self.train)
        return d


Config = EnsembleConfig  # the experiment contract: this module's config type


SIZES: dict[str, dict[str, Any]] = {
    "quick": {"examples": 32, "samples": 20, "batch_size": 128, "trials": 2, "eval_examples": 200},
    "default": {},
}


# ---- models and data ------------------------------------------------------------------


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _resolve(
    spec: str | nn.Module | None, name: str | None, data: DataBundle | None, config: EnsembleConfig,
    out_dir: Path | None, log: Callable[[str], None],
) -> tuple[nn.Module, dict[str, Any], DataBundle | None]:
    """(model on the device, its info, the data a run folder names when none was given)."""
    info: dict[str, Any] = {"name": name, "source": "object", "run_dir": None}
    if isinstance(spec, nn.Module):
        model = spec
        info["name"] = name or type(spec).__name__
    elif isinstance(spec, (str, Path)) and Path(spec).is_dir() and (isinstance(spec, Path) or spec_kind(spec) == "run"):
        model, record = load_run(spec, device=config.device)
        info.update(source="run", run_dir=str(spec), name=name or record.get("model_spec", {}).get("name"))
        if data is None:
            dname = (record.get("data") or {}).get("name") or config.data
            data = load_data(dname, **config.data_kwargs)
    elif isinstance(spec, str):
        if data is None:
            data = load_data(config.data, **config.data_kwargs)
        # The SPEC grammar is nets.spec's; weights drawn from config.seed, so a name measured at init reproduces.
        rm = resolve_spec(spec, input_shape=data.input_shape, num_classes=data.num_classes, seed=config.seed)
        key, model = rm.name.lower(), rm.model
        info["name"] = name or key
        if config.train is not None:
            run = None if out_dir is None else out_dir / "runs" / f"{key}-{data.name}-s{config.train.seed}"
            log(f"training {key} on {data.name} for {config.train.epochs} epochs")
            spec_d = {"name": key, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                      "kwargs": {}}
            torch.manual_seed(config.train.seed)
            model = build_for(key, data.input_shape, data.num_classes)
            model = fit(model, data, config.train, out_dir=run, model_spec=spec_d, progress=False).model
            info.update(source="trained", run_dir=None if run is None else str(run))
        else:
            info["source"] = "initialisation"
    else:
        raise TypeError(
            f"a model must be an nn.Module, a run folder or a registry name, received {type(spec).__name__}"
        )
    model = model.to(config.device)
    info.update(params=_params(model), blocks=len(blocks(model)), residual_blocks=len(residual_blocks(model)))
    return model, info, data


def _check_fits(model: nn.Module, data: DataBundle, name: str) -> None:
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(data.x_test[:2].to(next(model.parameters()).device))
    except Exception as e:  # shape mismatch: say which model and data, in one line
        raise ValueError(
            f"{name} does not accept {data.name} inputs of shape {tuple(data.input_shape)}: "
            f"{str(e).splitlines()[0]}; build the model for this dataset"
        ) from None
    finally:
        model.train(was)
    if out.shape[1] != data.num_classes:  # (B, C) logits, or (B, V, T) token logits
        raise ValueError(
            f"{name} has {out.shape[1]} outputs but {data.name} has {data.num_classes} classes; "
            "build the model for this dataset"
        )


# ---- the measurements -----------------------------------------------------------------


def _window(eff: paths.EffectiveRange) -> dict[str, Any]:
    return eff.to_dict()


def _reference(n: int) -> dict[str, Any]:
    ref = copy.deepcopy(VEIT2016)
    ref["effective"]["share_of_paths"] = paths.fraction(54, 5, 17)
    ref["effective"]["n"] = 54
    ref["paths_95"]["share_of_paths"] = paths.fraction(54, 19, 35)
    lo, hi = paths.path_window(n, 0.95) if n else (0, 0)
    ref["smallest_95"] = {"n": n, "lo": lo, "hi": hi, "share_of_paths": paths.fraction(n, lo, hi)}
    return ref


def _analyse_paths(
    model: nn.Module, name: str, plain: nn.Module | None, data: DataBundle, config: EnsembleConfig,
    log: Callable[[str], None],
) -> dict[str, Any]:
    n = len(residual_blocks(model))
    if n == 0:
        raise ValueError(
            f"{name} has no Residual blocks: a plain net has exactly one path, so there is "
            "nothing to decompose; give a residual net (e.g. resnet110) or view a foreign one through resgrad.adapt"
        )
    m = copy.deepcopy(model).double() if config.float64 else model
    x = data.x_test[: config.examples]
    y = data.y_test[: config.examples].to(config.device)
    # Bound memory: at most ~2^25 numbers per batched VJP (CIFAR-sized inputs, 55 lengths).
    per = max(1, x[:1].numel() * 16)  # the widest block input is about 16x the input here
    chunk = max(1, 2**25 // (per * len(x)))
    log(f"exact decomposition over {n} blocks, {len(x)} examples")
    dec = paths.decompose(m, x, targets=y, training=config.training, chunk=chunk)
    exact = dec.to_dict(config.mass)
    log(f"sampling {config.samples} paths per length (vectorised)")
    s = paths.sample(m, x, targets=y, lengths=config.lengths, samples=config.samples,
                     batch_size=config.batch_size, seed=config.seed)
    sampled = s.to_dict(config.mass)
    out: dict[str, Any] = {
        "n": n, "lengths": list(range(n + 1)), "counts": paths.counts(n),
        "path_fraction": [c / 2**n for c in paths.counts(n)],
        "exact": exact, "sampled": sampled,
        "effective": {"mass": config.mass, "exact": exact["effective"], "sampled": sampled.get("effective"),
                      "explanation": paths.CANCELLATION},
        "reference": _reference(n),
    }
    if plain is not None:
        pm = copy.deepcopy(plain).double() if config.float64 else plain
        if blocks(pm):
            pd = paths.decompose(pm, x, targets=y, training=config.training)
            out["exact_plain"] = {"n": pd.n, "norm": float(pd.norms.sum()),
                                  "example_norm": float(pd.example_norms.sum()), "examples": len(x)}
    return out


def _ks(default_top: int, given: Sequence[int] | None, doubling: bool) -> list[int]:
    if given is not None:
        return sorted(set(int(k) for k in given))
    if doubling:
        ks, k = [0], 1
        while k <= default_top:
            ks.append(k)
            k *= 2
        return ks
    step = max(1, round(default_top / 12))
    return sorted({k for k in (0, 1, 2, *range(0, default_top + 1, step), default_top) if k <= default_top})


def _analyse_lesions(model: nn.Module, name: str, data: DataBundle, config: EnsembleConfig,
                     swaps: bool) -> dict[str, Any]:
    x, y = data.x_test[: config.eval_examples], data.y_test[: config.eval_examples]
    single = paths.single_deletions(model, x, y)
    deletable = sum(not b.changes_shape for b in blocks(model))
    ks = [k for k in _ks(deletable, config.delete_ks, False) if k <= deletable]
    rows = paths.k_deletions(model, x, y, ks, trials=config.trials, seed=config.seed)
    out = {
        "lesion": {"model": name, **single},
        "deletion": {"model": name, "k": [r["k"] for r in rows], "mean": [r["mean"] for r in rows],
                     "std": [r["std"] for r in rows], "errors": [r["errors"] for r in rows],
                     "trials": config.trials},
    }
    if swaps and paths.swap_groups(model, x):
        n = len(blocks(model))
        rr = paths.reorder_curve(model, x, y, _ks(n, config.swap_ks, True), trials=config.trials, seed=config.seed)
        out["reorder"] = {"model": name, "swaps": [r["swaps"] for r in rr], "kendall_tau": [r["mean_tau"] for r in rr],
                          "mean": [r["mean"] for r in rr], "std": [r["std"] for r in rr],
                          "trials": [r["trials"] for r in rr]}
    return out


def _short_path(
    spec: nn.Module | str, info: dict[str, Any], data: DataBundle, config: EnsembleConfig, out: Path | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train a copy of the residual net with ``config.short_path`` active blocks (Veit §5.2)."""
    k = int(config.short_path)
    if isinstance(spec, nn.Module):
        raise ValueError(
            "short-path training rebuilds the residual net from scratch: give it as a registry name or a run "
            "folder, not a model object (or set short_path=None)"
        )
    if info["source"] == "run":
        record = RunDir(spec).read_config(RUN_KIND)
        model_spec = record["model_spec"]
        known = {f.name for f in fields(TrainConfig)}
        recorded = {k: v for k, v in record["config"].items() if k in known}
        train = config.train or TrainConfig(**{**recorded, "device": config.device})
    else:
        model_spec = {"name": info["name"], "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                      "kwargs": {}}
        train = config.train
    if train is None:
        raise ValueError("short-path training needs a recipe: set EnsembleConfig.train (a TrainConfig)")
    train = replace(train, active_blocks=k)
    name = model_spec["name"]
    run = None if out is None else out / "runs" / f"{name}-short{k}-{data.name}-s{train.seed}"
    log(f"short-path training: {name} with {k} random blocks active per batch, {train.epochs} epochs")
    torch.manual_seed(train.seed)
    model = build_for(name, tuple(model_spec["input_shape"]), int(model_spec["num_classes"]),
                      **(model_spec.get("kwargs") or {}))
    fitted = fit(model, data, train, out_dir=run, model_spec=model_spec, progress=False).model
    as_trained = evaluate(fitted, data)["error"]
    recal = _bn_recalibrated(fitted, data)
    return {"active_blocks": k, "n": len(residual_blocks(fitted)),
            "test_error": evaluate(recal, data)["error"] if recal is not None else as_trained,
            "test_error_as_trained": as_trained, "bn_recalibrated": recal is not None,
            "full_test_error": info.get("test_error"), "epochs": train.epochs,
            "run_dir": None if run is None else str(run)}


def _bn_recalibrated(model: nn.Module, data: DataBundle, batch_size: int = 500) -> nn.Module | None:
    """A copy whose BatchNorm statistics are re-estimated with every block active.

    Training with k of n blocks leaves running statistics of the k-block nets; with all
    blocks on, the activations differ, so the statistics are re-estimated over the
    training set (a cumulative average) before testing. None when there is no BatchNorm.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return None
    copy_ = copy.deepcopy(model)
    device = next(copy_.parameters()).device
    for m in copy_.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the pass
    copy_.train()
    with torch.no_grad():
        for i in range(0, len(data.x_train), batch_size):
            copy_(data.x_train[i : i + batch_size].to(device))
    return copy_.eval()


def run(
    config: EnsembleConfig | None = None,
    out: str | Path | RunDir | None = None,
    *,
    residual: nn.Module | str | None = None,
    plain: nn.Module | str | None = None,
    data: DataBundle | None = None,
    names: tuple[str | None, str | None] | None = None,
    parts: Sequence[str] = PARTS,
    log: Callable[[str], None] | None = None,
) -> EnsembleResult:
    """Measure the ensemble view; with ``out``, a run folder (``config.json``, ``results.json``).

    ``residual``/``plain``: model objects, run folders or registry names (default: the
    config's). ``data``: a DataBundle (default: the run folder's dataset or
    ``config.data``). ``names``: display names for the two models. ``parts``: any of
    ``"paths"``, ``"lesion"`` and ``"short"`` (the last only when ``config.short_path``).
    """
    config = EnsembleConfig() if config is None else config
    if not isinstance(config, EnsembleConfig):
        raise TypeError(f"config must be an EnsembleConfig, received {type(config).__name__}")
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"parts must be a non-empty subset of {', '.join(PARTS)}, received {list(parts)}")
    return driver.run(config, out, log=log, residual=residual, plain=plain, data=data, names=names,
                      parts=tuple(parts))


def compute(config: EnsembleConfig, ctx: driver.Context) -> EnsembleResult:
    """The measurements on ``ctx.input("residual")`` and ``ctx.input("plain")`` (default: the
    config's), with ``data``, ``names`` and ``parts`` from ``ctx.inputs``; trained models go
    under ``ctx.run_dir/runs`` when there is a folder."""
    residual, plain, data = ctx.input("residual"), ctx.input("plain"), ctx.input("data")
    names, parts, log = ctx.input("names"), ctx.input("parts", PARTS), ctx.log
    out = None if ctx.run_dir is None else ctx.run_dir.path
    t0 = ctx.started
    res_name, plain_name = names or (None, None)
    residual = config.residual if residual is None else residual
    plain = config.plain if plain is None else plain
    res_model, res_info, data = _resolve(residual, res_name, data, config, out, log)
    pl_model, pl_info = None, None
    if plain is not None:
        pl_model, pl_info, data = _resolve(plain, plain_name, data, config, out, log)
    assert data is not None  # _resolve loads it for names and run folders
    notes = []
    for info, model in ((res_info, res_model), (pl_info, pl_model)):
        if model is None:
            continue
        _check_fits(model, data, info["name"])
        info["test_error"] = evaluate(model, data)["error"]
        if info["source"] == "initialisation":
            notes.append(f"{info['name']} is untrained (weights at initialisation); Veit et al. measured trained "
                         "nets: give a run folder, or train it first (EnsembleConfig.train, `--epochs`)")
    results: dict[str, Any] = {
        "config": config.to_dict(),
        "environment": environment(config.device), "model": res_info["name"],
        "plain_model": None if pl_info is None else pl_info["name"], "data": data.name,
        "models": {"residual": res_info, **({"plain": pl_info} if pl_info else {})},
    }
    timing: dict[str, float] = {}
    if "paths" in parts:
        t = time.perf_counter()
        results.update(_analyse_paths(res_model, res_info["name"], pl_model, data, config, log))
        notes.append(paths.NOTE)
        timing["paths"] = time.perf_counter() - t
    if "lesion" in parts:
        t = time.perf_counter()
        log("lesions: single blocks, k random blocks, reordering")
        les = {"residual": _analyse_lesions(res_model, res_info["name"], data, config, swaps=True)}
        if pl_model is not None and blocks(pl_model):
            les["plain"] = _analyse_lesions(pl_model, pl_info["name"], data, config, swaps=True)
        results["lesion"] = {k: v["lesion"] for k, v in les.items()}
        results["deletion"] = {k: v["deletion"] for k, v in les.items()}
        if "reorder" in les["residual"]:
            results["reorder"] = dict(les["residual"]["reorder"])
            if "plain" in les and "reorder" in les["plain"]:
                results["reorder"]["plain"] = les["plain"]["reorder"]
        results.setdefault("reference", _reference(len(residual_blocks(res_model))))
        timing["lesion"] = time.perf_counter() - t
    if "short" in parts and config.short_path is not None:
        t = time.perf_counter()
        results["short_path"] = _short_path(residual, res_info, data, config, out, log)
        results.setdefault("reference", _reference(len(residual_blocks(res_model))))
        timing["short"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0
    results["notes"] = notes
    results["timing"] = timing
    return EnsembleResult.of(jsonable(results))


def run_ensemble(config: EnsembleConfig | None = None, out_dir: str | Path | None = None, **kw: Any) -> EnsembleResult:
    """The ensemble experiment (the name of resgrad 0.1; same as :func:`run`)."""
    return run(config, out_dir, **kw)
