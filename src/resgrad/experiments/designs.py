"""The residual designs of today, side by side: at initialisation and trained over seeds (issue 21).

Every design is a registry name (``resgrad models``): Transformer units (pre-LN, post-LN,
no skip, and those of ``resgrad.nets.designs``: DeepNorm, Peri-LN, LayerNorm Scaling, Mix-LN,
ReZero, DyT, hyper-connections, mHC) and CNN blocks (the He et al. 2015 BN ResNet and its plain
twin, Fixup, SkipInit, NF-ResNet). The experiment is generic over the names: a design's family
is read from its registered input contract (a sequence model is a Transformer, a conv net a CNN).

- ``init``: per design and depth, one forward and backward pass per seed at initialisation:
  per-unit weight-gradient norms and the residual-stream gradient
  (``transformer.flow_at_init``, as the Transformer study), Amax of the stream-mixing matrices
  (``resgrad.nets.designs.amax``, designs that mix streams), a Signal Propagation Plot (Brock
  et al. 2021 Fig. 1) and, for Transformers, the token cosine across depth (Noci et al. 2022);
- ``lm``: each Transformer design trained as a character-level LM on the offline corpus
  (``resgrad.data.text(None)``) or ``text``, at two depths, over seeds, one optimiser, budget and
  lr for all (``lr_sweep`` gives a design more lrs where its paper asks for one: its best mean is
  reported, and the sweep is stated): final validation loss with a t-interval, steps to a target
  loss, gradient spikes, divergence;
- ``cnn``: each CNN design trained on MNIST-1D (CIFAR-10 with ``data_dir``) at two depths over seeds.

Runs are resumable ``fit`` runs under ``lm/`` and ``cnn/``, fanned out through ``ctx.pool()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataBundle
from ..data import load as load_data
from ..executors import Executor
from ..io import environment, jsonable
from ..nets import build_for
from ..probes.signal_prop import signal_propagation, token_cosine
from ..results.designs import DesignsResult
from ..rundir import RunDir
from ..train import TrainConfig, load_run
from . import degradation as _degradation
from . import driver
from .config import Config as BaseConfig
from .config import check_int, check_number, need
from .designs_catalogue import (
    CNN_DEFAULT,
    TRANSFORMER_DEFAULT,
    available,
    catalogue,
    check_designs,
    family,
    known_designs,
    model_name,
)
from .designs_measures import SPIKE_K, SPIKE_WINDOW
from .designs_train import finish_runs, train_jobs
from .transformer import flow_at_init

__all__ = ["DesignsConfig", "SIZES", "preset", "run", "compute", "KIND", "catalogue", "family", "check_designs",
           "TRANSFORMER_DEFAULT", "CNN_DEFAULT", "measure_init", "known_designs", "model_name", "check_inputs",
           "CIFAR_SUBSET", "CIFAR_LR", "LR_SWEEP", "LR_SWEEP_WHY"]

KIND = "resgrad.designs"  # config.json's kind for a designs run folder
LABEL = "designs"
NEEDS_OUT = False  # the at-initialisation panel alone runs without a folder (training needs one)
Result = DesignsResult

# Xiong et al. 2020 §3 / Vaswani et al. 2017 §5.3: AdamW with beta2 = 0.98 and lr 1e-3, as the
# Transformer study; no warm-up and no decay, so every design starts from the same first step.
LM_RECIPE = TrainConfig(epochs=2, batch_size=32, lr=1e-3, optimizer="adamw", betas=(0.9, 0.98), weight_decay=0.01,
                        milestones=(), device="cpu")
# The default study's recipe for the CNN twins on MNIST-1D (experiments/study.py: lr 0.02, SGD).
CNN_RECIPE = TrainConfig(epochs=6, batch_size=128, lr=0.02, device="cpu")
# CIFAR-10 (``data_dir``): He et al. 2015 §4.2's recipe, as a user of a CIFAR ResNet expects it: SGD lr 0.1,
# momentum 0.9, weight decay 1e-4, batch 128, lr / 10 at 50% and 75% of the steps, and the loader's
# pad-4-crop-flip augmentation (data/cifar10.py). Their 164 epochs of 50k images are replaced by the
# size's epochs on CIFAR_SUBSET. Their ResNet-110 warm-up (lr 0.01 for ~400 steps) is left out: one
# recipe serves every depth, and only the full size trains 110 layers (there at lr 0.1 from the start).
CIFAR_LR = 0.1
# Images (train, test) of CIFAR-10 per size (None: the whole split). quick: as MNIST-1D's quick
# subset. default: 5,000 train (500 a class: the loader's order is class-interleaved, so every
# prefix is balanced) and 1,000 test (binomial sd of an error ~1.5 points): the whole 50k x 2 depths
# x 5 designs x 3 seeds is hours on a CPU; 5,000 x 6 epochs (240 steps a run) measured 0.42-0.50 s
# (20 layers) and 1.26-1.62 s (56 layers) CPU per 128-image step (benchmarks/designs.py --estimate
# --data-dir, 2 shared cores): ~58 min of CNN steps on 2 cores, ~68 min with the LM (a GPU: minutes).
# full: everything. Lift it with ``cifar_subset`` (resgrad designs --cifar-train N --cifar-test N, 0: all).
CIFAR_SUBSET: dict[str, tuple[int | None, int | None]] = {"quick": (256, 128), "default": (5000, 1000),
                                                          "full": (None, None), "panel": (256, 128)}
# The learning-rate sweeps of the sizes: a design gets more lrs only where its paper says it needs
# another one; its lr with the lowest mean final validation loss is reported (and said so).
# - post-LN: Xiong et al. 2020 (arXiv 2002.04745) §3: post-LN's large gradients near the output make it
#   need a learning-rate warm-up (or a smaller lr) to train, where pre-LN trains without one; this
#   recipe has no warm-up for any design, so post-LN is also run at a third of the shared lr.
LR_SWEEP_WHY = {"postln": "Xiong et al. 2020 (arXiv 2002.04745): post-LN needs a learning-rate warm-up or a "
                          "smaller lr to train; the shared recipe has no warm-up, so post-LN also runs at lr/3"}
LR_SWEEP = {"postln": (LM_RECIPE.lr, LM_RECIPE.lr / 3)}


@dataclass
class DesignsConfig(BaseConfig):
    """What the designs experiment measures (``preset(size)`` for the quick/default/full sizes)."""

    size: str = "default"  # the preset this came from (recorded only)
    designs: tuple[str, ...] = ("preln", "postln", "noskip", "plain", "resnet")  # registry names (family names)
    parts: tuple[str, ...] = ("init", "lm", "cnn")  # which measurements run
    text: str | None = None  # a local UTF-8 file for the LM (None: the offline corpus, pydoc_data.topics)
    seq_len: int = 32  # characters per LM window
    lm_n_train: int | None = None  # cut the LM's training windows to this many (None: all)
    lm_n_test: int | None = None  # cut the LM's validation windows (None: all, the corpus's last 10%)
    d_model: int = 32  # width of every Transformer design
    n_heads: int = 4
    init_depths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)  # Transformer layers at initialisation
    cnn_init_depths: tuple[int, ...] = (8, 20, 56, 110)  # CNN layers at initialisation (6n+2)
    init_seeds: tuple[int, ...] = (0, 1)  # initialisations averaged per depth
    init_batch: int = 32  # examples (LM windows, MNIST-1D signals) in the measured pass
    lm_depths: tuple[int, ...] = (6, 24)  # layers of the trained Transformers
    cnn_depths: tuple[int, ...] = (20, 56)  # layers of the trained CNNs (6n+2)
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds per (design, depth)
    lm_train: TrainConfig = field(default_factory=lambda: replace(LM_RECIPE))  # one recipe for every LM design
    lr_sweep: dict[str, tuple[float, ...]] = field(default_factory=dict)  # design -> its lrs (the best is reported)
    cnn_train: TrainConfig = field(default_factory=lambda: replace(CNN_RECIPE))  # one recipe for every CNN
    cnn_data: str = "mnist1d"  # "mnist1d" or "cifar10" (give data_dir)
    data_dir: str | None = None  # CIFAR-10 folder (nothing is downloaded)
    cnn_n_train: int | None = None  # cut the CNN training split (None: all)
    cnn_n_test: int | None = None
    target_loss: float | None = None  # training loss (nats/char) to reach; None: the reference's final x (1 + margin)
    target_design: str = "preln"  # the reference design of the derived target (the first LM design if absent)
    target_margin: float = 0.05  # the derived target: the reference's mean final smoothed loss x (1 + this)
    spike_k: float = SPIKE_K  # a spike: gradient norm > spike_k x the running median
    spike_window: int = SPIKE_WINDOW  # steps in that running median
    level: float = 0.95  # confidence level of the intervals over seeds
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("lm_train", "cnn_train"):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, TrainConfig(**getattr(self, name)))
        self.designs = tuple(str(d).strip().lower() for d in self.designs)
        self.parts = tuple(self.parts)
        for name in ("init_depths", "cnn_init_depths", "init_seeds", "lm_depths", "cnn_depths", "seeds"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.lr_sweep = {str(k): tuple(float(v) for v in vs) for k, vs in dict(self.lr_sweep).items()}
        need(bool(self.designs), "designs", "at least one design name", self.designs)
        need(len(set(self.designs)) == len(self.designs), "designs", "distinct names", list(self.designs))
        need(bool(self.parts) and all(p in ("init", "lm", "cnn") for p in self.parts), "parts",
             "a non-empty subset of init, lm, cnn", list(self.parts))
        for name in ("seq_len", "d_model", "n_heads", "init_batch", "spike_window"):
            check_int(name, getattr(self, name), 2 if name == "seq_len" else 1)
        need(self.d_model % self.n_heads == 0, "d_model", f"a multiple of n_heads ({self.n_heads})", self.d_model)
        for name in ("init_depths", "lm_depths", "cnn_depths", "cnn_init_depths"):
            need(all(d >= 1 for d in getattr(self, name)), name, "layer counts >= 1", list(getattr(self, name)))
        for name in ("cnn_depths", "cnn_init_depths"):
            bad = [d for d in getattr(self, name) if d < 8 or (d - 2) % 6]
            need(not bad, name, "6n+2 layers (8, 14, 20, 32, 44, 56, 110, ...)", bad)
        need(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds", list(self.seeds))
        need(bool(self.init_seeds), "init_seeds", "at least one seed", list(self.init_seeds))
        for d, lrs in self.lr_sweep.items():
            need(d in self.designs, "lr_sweep", f"keys among designs {list(self.designs)}", d)
            need(bool(lrs) and all(v > 0 for v in lrs), f"lr_sweep.{d}", "learning rates > 0", list(lrs))
        check_number("target_margin", self.target_margin, lo=0, rule="a number >= 0")
        check_number("spike_k", self.spike_k, lo=1, open_lo=True, rule="a number > 1")
        check_number("level", self.level, lo=0, hi=1, open_lo=True, open_hi=True, rule="in (0, 1)")
        if self.target_loss is not None:
            check_number("target_loss", self.target_loss, lo=0, open_lo=True, rule="a number > 0 or None")
        need(self.cnn_data in ("mnist1d", "cifar10"), "cnn_data", "'mnist1d' or 'cifar10'", self.cnn_data)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lm_train"], d["cnn_train"] = asdict(self.lm_train), asdict(self.cnn_train)
        return jsonable(d)


Config = DesignsConfig  # the experiment contract: this module's config type


SIZES: dict[str, dict[str, Any]] = {
    # Seconds: tests and a first look. Two seeds (a t-interval needs two), 40 LM steps.
    "quick": {"init_depths": (2, 4), "cnn_init_depths": (8, 14), "init_seeds": (0,), "init_batch": 8,
              "lm_depths": (1, 2), "cnn_depths": (8, 14), "seeds": (0, 1), "seq_len": 16, "lm_n_train": 384,
              "lm_n_test": 128, "lm_train": replace(LM_RECIPE, epochs=2), "cnn_train": replace(CNN_RECIPE, epochs=1),
              "cnn_n_train": 256, "cnn_n_test": 128, "lr_sweep": LR_SWEEP},
    # The sizes: 2..128 layers at initialisation, 6 and 24 trained, three seeds, 150 LM steps
    # (2 epochs of 2,400 windows), post-LN's six runs again at lr/3 (LR_SWEEP). Measured end to end
    # with the pool: 14 min 20 s on 2 CPU cores (benchmarks/README.md), within the 20.
    "default": {"lm_train": replace(LM_RECIPE, epochs=2), "lm_n_train": 2400, "lm_n_test": 1024,
                "lr_sweep": LR_SWEEP},
    # Closer to the papers: five init seeds, longer training, the whole corpus.
    "full": {"init_seeds": (0, 1, 2, 3, 4), "init_batch": 64, "seq_len": 64, "d_model": 64,
             "lm_train": replace(LM_RECIPE, epochs=10), "cnn_train": replace(CNN_RECIPE, epochs=30),
             "cnn_depths": (20, 56, 110), "lr_sweep": LR_SWEEP},
}
# The study's at-initialisation panel: every design at three depths, one seed: ~3 s of CPU (benchmarks/designs.py).
PANEL = {"parts": ("init",), "init_depths": (2, 6, 16), "cnn_init_depths": (8, 20, 32), "init_seeds": (0,),
         "init_batch": 8, "seq_len": 16}


def preset(size: str, *, device: str = "cpu", designs: tuple[str, ...] | None = None, text: str | None = None,
           data_dir: str | None = None, cifar_subset: tuple[int | None, int | None] | None = None) -> DesignsConfig:
    """A named size (``"panel"``: the study's at-initialisation panel); ``designs``: default every
    design this resgrad has; ``text``: a local file for the LM; ``data_dir``: CIFAR-10 for the CNNs,
    trained with He et al.'s recipe (lr 0.1) on the size's :data:`CIFAR_SUBSET`, or on ``cifar_subset``
    (train, test images; None: the whole split). The size's lr sweeps keep only the designs asked for."""
    if size not in (*SIZES, "panel"):
        raise ValueError(f"size must be one of {', '.join(SIZES)}, received {size!r}")
    kw = dict(PANEL if size == "panel" else SIZES[size])
    if designs is None:
        designs = available(TRANSFORMER_DEFAULT + CNN_DEFAULT)
    else:
        check_designs(tuple(designs))
    kw["lr_sweep"] = {d: lrs for d, lrs in dict(kw.get("lr_sweep") or {}).items() if d in designs}
    for name, base in (("lm_train", LM_RECIPE), ("cnn_train", CNN_RECIPE)):
        kw[name] = replace(kw.get(name, base), device=device)
    if text is not None:
        kw["text"] = str(Path(text).expanduser().resolve())
        kw.pop("lm_n_train", None)
        kw.pop("lm_n_test", None)
    if cifar_subset is not None and data_dir is None:
        raise ValueError(f"cifar_subset {cifar_subset} needs data_dir (the CIFAR-10 folder); without it the CNNs "
                         "train on MNIST-1D")
    if data_dir is not None:
        n_train, n_test = CIFAR_SUBSET[size] if cifar_subset is None else cifar_subset
        for what, v in (("train", n_train), ("test", n_test)):
            if v is not None:
                check_int(f"cifar_subset ({what} images)", v, 1)
        kw.update(cnn_data="cifar10", data_dir=str(Path(data_dir).expanduser().resolve()), cnn_n_train=n_train,
                  cnn_n_test=n_test, cnn_train=replace(kw["cnn_train"], lr=CIFAR_LR))
    return DesignsConfig(size=size, designs=tuple(designs), device=device, **kw)


def check_inputs(config: DesignsConfig) -> None:
    """Before anything starts (the driver calls it): CIFAR-10's folder must hold a layout the loader reads
    (listed, never decoded), where a CNN design will load it."""
    if config.cnn_data != "cifar10" or not ({"init", "cnn"} & set(config.parts)):
        return
    if not any(d["family"] == "cnn" for d in catalogue(config.designs)):
        return
    from ..data.cifar10 import _find_source, _source_files  # as driver.check_inputs: the loader's own finder

    try:
        _source_files(*_find_source(config.data_dir))
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"data_dir: {e}") from None


# ---- data and models ------------------------------------------------------------------------


def _lm_spec(config: DesignsConfig) -> dict[str, Any]:
    return jsonable({"data": "text", "data_kwargs": {"path": config.text, "seq_len": config.seq_len},
                     "n_train": config.lm_n_train, "n_test": config.lm_n_test})


def _cnn_spec(config: DesignsConfig) -> dict[str, Any]:
    kw = {"data_dir": config.data_dir} if config.cnn_data == "cifar10" else {}
    return jsonable({"data": config.cnn_data, "data_kwargs": kw, "n_train": config.cnn_n_train,
                     "n_test": config.cnn_n_test})


def _load(spec: dict[str, Any]) -> DataBundle:
    data = load_data(spec["data"], **spec["data_kwargs"])
    if spec["n_train"] is not None or spec["n_test"] is not None:
        data = data.subset(spec["n_train"], spec["n_test"])
    return data


def _kwargs(config: DesignsConfig, fam: str, data: DataBundle) -> dict[str, Any]:
    if fam != "transformer":
        return {}
    return {"d_model": config.d_model, "n_heads": config.n_heads, "task": "lm", "vocab": data.num_classes,
            "context": data.input_shape[0]}


def _build(name: str, depth: int, fam: str, config: DesignsConfig, data: DataBundle, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_for(model_name(name, depth), data.input_shape, data.num_classes, **_kwargs(config, fam, data))


def _amax(model: nn.Module, x: torch.Tensor) -> tuple[float | None, float | None]:
    """(forward, backward) Amax of the product of a model's stream mixings (1, 1 for one stream; None, None
    where this resgrad has no hyper-connection designs)."""
    try:
        from ..nets.designs import amax
    except ImportError:
        return None, None
    try:
        with torch.no_grad():
            got = amax(model, x)
    except (ValueError, TypeError, AttributeError):
        return None, None
    if got is None:
        return None, None
    if isinstance(got, dict):
        return _num(got.get("forward")), _num(got.get("backward"))
    if isinstance(got, (tuple, list)):
        return _num(got[0]), _num(got[1]) if len(got) > 1 else None
    return _num(got), None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _mean_lists(lists: list[list[float | None]]) -> list[float | None]:
    out: list[float | None] = []
    for vals in zip(*lists, strict=True):
        fin = [v for v in vals if v is not None and math.isfinite(v)]
        out.append(math.fsum(fin) / len(fin) if len(fin) == len(vals) else None)
    return out


# ---- at initialisation ----------------------------------------------------------------------


def measure_init(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fam: str) -> dict[str, Any]:
    """Every at-initialisation measure of one built model on one batch (train mode for the gradient)."""
    p, st = flow_at_init(model, x, y)
    spp = signal_propagation(model, x, channel_dim=-1 if fam == "transformer" else 1)
    cos = token_cosine(model, x) if fam == "transformer" else []
    fwd, bwd = _amax(model, x)
    return {"param_norms": p, "stream_norms": st, **spp, "token_cosine": cos, "amax_forward": fwd,
            "amax_backward": bwd}


def _init(config: DesignsConfig, designs: list[dict[str, str]], data: dict[str, DataBundle],
          log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for info in designs:
        fam = info["family"]
        bundle = data[fam]
        n = config.init_batch
        x, y = bundle.x_train[:n].to(config.device), bundle.y_train[:n].to(config.device)
        for depth in (config.init_depths if fam == "transformer" else config.cnn_init_depths):
            got = [measure_init(_build(info["name"], depth, fam, config, bundle, s).to(config.device), x, y, fam)
                   for s in config.init_seeds]
            row: dict[str, Any] = {"design": info["name"], "family": fam, "depth": depth}
            for key in ("param_norms", "stream_norms", "sq_mean", "variance", "branch_variance", "token_cosine"):
                row[key] = _mean_lists([g[key] for g in got])
            for key in ("amax_forward", "amax_backward"):
                vals = [g[key] for g in got]
                row[key] = math.fsum(vals) / len(vals) if all(v is not None for v in vals) else None
            pn = row["param_norms"]
            pairs = len(pn) == 2 * depth and fam == "transformer"
            first = math.hypot(pn[0], pn[1]) if pairs and None not in pn[:2] else pn[0] if pn else None
            last = math.hypot(pn[-2], pn[-1]) if pairs and None not in pn[-2:] else pn[-1] if pn else None
            row["growth"] = _ratio(last, first)
            row["stream_ratio"] = _ratio(row["stream_norms"][0], row["stream_norms"][-1]) if row["stream_norms"] \
                else None
            rows.append(row)
        log(f"  at initialisation: {info['name']} at {', '.join(str(r['depth']) for r in rows if r['design'] == info['name'])} layers")
    return rows


# ---- training -------------------------------------------------------------------------------


def _label(design: str, depth: int, seed: int, lr: float | None) -> str:
    return f"{design}-{depth}" + (f"-lr{lr:g}" if lr is not None else "") + f"-s{seed}"


def _jobs(config: DesignsConfig, designs: list[dict[str, str]], fam: str, data: DataBundle, root: Path
          ) -> list[dict[str, Any]]:
    spec = {**(_lm_spec(config) if fam == "transformer" else _cnn_spec(config)),
            "fingerprint": _degradation.fingerprint(data)}
    recipe = config.lm_train if fam == "transformer" else config.cnn_train
    sub = "lm" if fam == "transformer" else "cnn"
    jobs = []
    for info in designs:
        if info["family"] != fam:
            continue
        name = info["name"]
        lrs = config.lr_sweep.get(name)
        for depth in (config.lm_depths if fam == "transformer" else config.cnn_depths):
            for lr in (lrs or (None,)):
                for seed in config.seeds:
                    train = replace(recipe, seed=seed, lr=recipe.lr if lr is None else lr)
                    label = _label(name, depth, seed, lr)
                    jobs.append({"model": model_name(name, depth), "model_kwargs": _kwargs(config, fam, data),
                                 "seed": seed, "train": asdict(train), "data": spec,
                                 "run_dir": str(root / sub / label), "label": label,
                                 "meta": {"design": name, "family": fam, "depth": depth, "seed": seed,
                                          "lr": train.lr}})
    return jobs


# ---- the experiment -------------------------------------------------------------------------


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What a used folder must match: the config on any device (and evaluation batch size)."""
    out = {k: v for k, v in config.items() if k != "device"}
    for name in ("lm_train", "cnn_train"):
        out[name] = {k: v for k, v in (config.get(name) or {}).items() if k not in ("device", "eval_batch_size")}
    return out


def run(config: DesignsConfig, out: str | Path | RunDir, *, log: Callable[[str], None] | None = print,
        progress: driver.Progress | bool | Callable[[int, int, Any], None] | None = None,
        executor: Executor | str | None = None) -> DesignsResult:
    """Run (or resume) the designs experiment in ``out``; write and return its DesignsResult."""
    if not isinstance(config, DesignsConfig):
        raise TypeError(f"config must be a DesignsConfig, received {type(config).__name__}")
    return driver.run(config, out, executor=executor, log=log, progress=progress)


def compute(config: DesignsConfig, ctx: driver.Context) -> DesignsResult:
    """At initialisation, then the LM and CNN training runs (only the parts asked for)."""
    check_designs(config.designs)
    log = ctx.log
    t0 = time.perf_counter()
    designs = catalogue(config.designs)
    fams = {d["family"] for d in designs}
    data: dict[str, DataBundle] = {}
    if "transformer" in fams and ({"init", "lm"} & set(config.parts)):
        data["transformer"] = _load(_lm_spec(config))
    if "cnn" in fams and ({"init", "cnn"} & set(config.parts)):
        data["cnn"] = _load(_cnn_spec(config))
    timing: dict[str, float] = {}
    init: list[dict[str, Any]] = []
    if "init" in config.parts:
        t = time.perf_counter()
        log(f"designs at initialisation: {len(designs)} design(s), {len(config.init_seeds)} seed(s)")
        init = _init(config, designs, data, log)
        timing["init"] = time.perf_counter() - t
    raw: list[dict[str, Any]] = []
    trained = [p for p in ("lm", "cnn") if p in config.parts]
    if trained:
        if ctx.run_dir is None:
            raise ValueError("training the designs needs a run folder (out=...); for the panel alone use parts=('init',)")
        for part, fam in (("lm", "transformer"), ("cnn", "cnn")):
            if part not in config.parts or fam not in data:
                continue
            t = time.perf_counter()
            jobs = _jobs(config, designs, fam, data[fam], ctx.run_dir.path)
            log(f"training {len(jobs)} {'LM' if part == 'lm' else 'CNN'} runs on {data[fam].name}")
            raw += train_jobs(jobs, data[fam], ctx.pool(), log, ctx.progress)
            timing[part] = time.perf_counter() - t
    streams = {d["name"] for d in designs if int(d.get("streams", 1)) > 1}
    for r in raw:  # the mHC paper's Amax after training (Fig. 3 and 7: the gain grows while training)
        if r["design"] in streams and not r["diverged"]:
            model = load_run(r["run_dir"], device=config.device)[0]
            bundle = data[r["family"]]
            r["amax"] = list(_amax(model, bundle.x_train[: config.init_batch].to(config.device)))
    runs, cells = finish_runs(config, raw)
    params: dict[str, dict[str, int]] = {}
    for r in runs:
        params.setdefault(r["design"], {})[str(r["depth"])] = r["params"]
    notes = []
    if config.lr_sweep:
        notes.append("learning-rate sweeps: " + "; ".join(f"{d}: {', '.join(f'{v:g}' for v in lrs)}"
                                                          for d, lrs in config.lr_sweep.items())
                     + " (the lr with the lowest mean final metric is reported)")
        notes += [f"why {d} is swept: {LR_SWEEP_WHY[d]}" for d in config.lr_sweep if d in LR_SWEEP_WHY]
    else:
        notes.append("every design trains at the same learning rate (no per-design sweep)")
    if "cnn" in data and config.cnn_data == "cifar10":
        n_tr, n_te = len(data["cnn"].y_train), len(data["cnn"].y_test)
        whole = data["cnn"].info.get("counts") or {}  # the source's own counts (50,000 / 10,000 for CIFAR-10)
        notes.append(f"CIFAR-10: {n_tr:,} train / {n_te:,} test images (of the folder's {whole.get('train', n_tr):,} / "
                     f"{whole.get('test', n_te):,}"
                     + (", a class-balanced prefix" if (n_tr, n_te) != (whole.get("train"), whole.get("test")) else "")
                     + f"), He et al. 2015's recipe: SGD lr {config.cnn_train.lr:g}, momentum "
                     f"{config.cnn_train.momentum:g}, weight decay {config.cnn_train.weight_decay:g}, batch "
                     f"{config.cnn_train.batch_size}, lr x {config.cnn_train.gamma:g} at "
                     f"{', '.join(f'{100 * m:g}%' for m in config.cnn_train.milestones) or 'no point'} of the steps, "
                     "pad-crop-flip augmentation, "
                     f"{config.cnn_train.epochs} epoch(s) (theirs: 164 epochs of 50,000): errors sit well above "
                     "the paper's")
    missing = [n for n in (*TRANSFORMER_DEFAULT, *CNN_DEFAULT) if n not in known_designs()]
    if missing:
        notes.append(f"designs not built by this resgrad: {', '.join(missing)}")
    timing["total"] = time.perf_counter() - t0
    return DesignsResult.of(jsonable({
        "config": config.to_dict(), "environment": environment(config.device),
        "designs": [{**d, "params": params.get(d["name"], {})} for d in designs], "init": init, "runs": runs,
        "cells": cells, "data": {k: v.name for k, v in data.items()}, "notes": notes, "timing": timing,
    }))

