"""One training run of the designs experiment: the per-step loss and gradient norm, and divergence.

:func:`train_run` is the executor's unit of work (``Task.fn``), the degradation stage's
``train_run`` plus a :class:`StepLog` callback that writes, with every epoch's metrics row,
each step's training loss and total gradient norm (so a resumed run reads them back from
``metrics.jsonl`` and its checkpoint, as an uninterrupted one). A run whose loss goes
non-finite is not an error here: it is returned as diverged, with the step it happened at.

:func:`finish_runs` turns the runs read back into what the result reports: per run the spikes,
steps to the target loss and a thinned loss trace; per (design, depth) a cell over seeds at the
lr :func:`chosen_lr` picks (a swept design's best mean; ``config`` is a ``DesignsConfig``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..callbacks import Callback
from ..data import DataBundle
from ..executors import Executor, Task
from ..nets import build_for
from ..rundir import RunDir
from ..stopping import NonFiniteLoss
from ..train import RUN_KIND, TrainConfig, fit
from . import degradation as _degradation
from . import driver
from .designs_measures import grad_spikes, mean_ci, smoothed, steps_to_target

__all__ = ["StepLog", "train_run", "read_steps", "train_jobs", "read_job", "lm_targets", "chosen_lr", "finish_runs"]


class StepLog(Callback):
    """Each training step's loss and total gradient norm (the 2-norm over every parameter's gradient).

    The trainer's loss is the mean cross-entropy of the model's output; the loss is read back
    here without touching the trainer: a tensor hook on the output receives the gradient of
    that mean, ``(softmax(z) - onehot(y)) / n``, whose one negative entry per position is the
    target ``y``, so ``-log_softmax(z)[y]`` averaged is exactly the loss that stepped.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.loss: list[float | None] = []  # this epoch's, so far
        self.norm: list[float | None] = []
        self._handle: Any = None
        self._pending: float | None = None

    def on_train_start(self, model: nn.Module) -> None:
        self._handle = model.register_forward_hook(self._forward)

    def _forward(self, _m: nn.Module, _a: tuple, out: Any) -> None:
        if not (isinstance(out, Tensor) and out.requires_grad and torch.is_grad_enabled() and _m.training):
            return
        z = out.detach()

        def grad_hook(g: Tensor) -> None:
            y = g.argmin(1, keepdim=True)  # the target: the one class whose gradient entry is negative
            self._pending = float(-F.log_softmax(z.double(), 1).gather(1, y).mean())

        out.register_hook(grad_hook)

    def on_after_backward(self, model: nn.Module, step: int) -> None:
        sq = math.fsum(float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None)
        self.norm.append(math.sqrt(sq) if math.isfinite(sq) else None)
        v = self._pending
        self.loss.append(v if v is not None and math.isfinite(v) else None)
        self._pending = None

    def on_train_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None:
        metrics["step_loss"], metrics["step_grad_norm"] = self.loss, self.norm
        self.loss, self.norm = [], []

    def _release(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_train_end(self, model: nn.Module) -> None:
        self._release()

    def on_exception(self, model: nn.Module, exception: BaseException) -> None:
        self._release()

    def state_dict(self) -> dict[str, Any]:  # a mid-epoch checkpoint carries the epoch's steps so far
        return {"loss": list(self.loss), "norm": list(self.norm)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss, self.norm = list(state.get("loss", [])), list(state.get("norm", []))


def read_steps(rows: list[dict[str, Any]]) -> tuple[list[float | None], list[float | None]]:
    """(per-step training loss, per-step gradient norm) of a run's metrics rows, in step order."""
    loss: list[float | None] = []
    norm: list[float | None] = []
    for r in rows:
        loss += list(r.get("step_loss") or [])
        norm += list(r.get("step_grad_norm") or [])
    return loss, norm


def train_run(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One run (``config`` as ``degradation.train_run``'s), with :class:`StepLog`; never raises on divergence.

    Returns ``diverged`` (bool), ``diverged_step`` (the global step of the non-finite loss, or None)
    and, for a diverged run, the per-step ``loss`` and ``norm`` up to it (a finished run's are in its
    ``metrics.jsonl``).
    """
    data = _degradation._data_for(config["data"])
    name, seed = config["model"], int(config["seed"])
    kwargs = dict(config.get("model_kwargs") or {})
    torch.manual_seed(seed)  # initial weights are part of the run's seed
    model = build_for(name, data.input_shape, data.num_classes, **kwargs)
    spec = {"name": name, "kwargs": kwargs, "input_shape": list(data.input_shape), "num_classes": data.num_classes}
    train = TrainConfig(**config["train"])
    log = StepLog(model)
    try:
        fit(model, data, train, callbacks=[log], out_dir=run_dir, model_spec=spec, progress=config.get("progress"))
    except NonFiniteLoss as e:
        done = RunDir(run_dir).read_metrics() if RunDir(run_dir).has_config() else []
        loss, norm = read_steps(done)
        return {"diverged": True, "diverged_step": e.step, "loss": loss + log.loss, "norm": norm + log.norm,
                "history": done}
    return {"diverged": False, "diverged_step": None}


def train_jobs(jobs: list[dict[str, Any]], data: DataBundle, executor: Executor, log: Callable[[str], None],
           progress: driver.Progress) -> list[dict[str, Any]]:
    """Run ``jobs`` through ``executor`` (the designs' own ``train_run``); each read back from its folder."""
    if not jobs:
        return []
    spec = jobs[0]["data"]
    key = json.dumps({k: spec[k] for k in ("data", "data_kwargs", "n_train", "n_test")}, sort_keys=True)
    mine = key not in _degradation._DATA
    if mine:  # in-process runs train on the bundle given, not a fresh load
        _degradation._DATA[key] = data
    progress = driver.Progress(progress)
    show = progress.bars if executor.in_process else False
    tasks = [Task(fn="resgrad.experiments.designs_train:train_run",
                  config={**{k: v for k, v in j.items() if k not in ("run_dir", "label", "meta")}, "progress": show},
                  run_dir=j["run_dir"], label=j["label"]) for j in jobs]
    params = {j["label"]: _degradation.count_params(j["model"], data, **j["model_kwargs"]) for j in jobs}
    n, done = len(tasks), [0]

    def started(i: int, t: Task, _: Any) -> None:
        log(f"[{i + 1}/{n}] {t.label}: {params[t.label]:,} parameters")

    def finished(i: int, t: Task, out: Any) -> None:
        done[0] += 1
        if (out or {}).get("diverged"):
            log(f"      {t.label} diverged at step {out.get('diverged_step')}")
        progress(done[0], n, t.label)

    todo = tasks if executor.in_process else sorted(tasks, key=lambda t: -params[t.label])  # longest first
    order = {id(t): i for i, t in enumerate(tasks)}
    try:
        got = executor.map(todo, on_start=started, on_done=finished)
    finally:
        if mine:
            _degradation._PRINTS.pop(id(_degradation._DATA.pop(key)), None)
    outs: list[Any] = [None] * n
    for t, g in zip(todo, got, strict=True):
        outs[order[id(t)]] = g
    return [read_job(j, o or {}, params[j["label"]]) for j, o in zip(jobs, outs, strict=True)]


def read_job(job: dict[str, Any], out: dict[str, Any], params: int) -> dict[str, Any]:
    """A run as the parent reports it: a finished one from its folder, a diverged one from what it returned."""
    rd = RunDir(job["run_dir"])
    if out.get("diverged"):
        rows, loss, norm = out.get("history") or [], out.get("loss") or [], out.get("norm") or []
        final = {k: None for k in ("train_loss", "train_error", "test_loss", "test_error")}
    else:
        record = rd.read_config(RUN_KIND)
        params = int(record.get("parameters", params))
        rows = rd.read_metrics()
        total = (record.get("schedule") or {}).get("total_steps")
        if not rows or (total is not None and rows[-1].get("steps") != total):
            raise RuntimeError(f"{rd.path} stopped before its last step: the run did not finish; rerun the command "
                               "to resume it")
        loss, norm = read_steps(rows)
        final = {k: rows[-1].get(k) for k in ("train_loss", "train_error", "test_loss", "test_error")}
    return {**job["meta"], "model": job["model"], "params": params, "run_dir": job["run_dir"], "final": final,
            "curve": [r.get("test_loss") for r in rows], "loss": loss, "norm": norm,
            "diverged": bool(out.get("diverged")), "diverged_step": out.get("diverged_step")}


# ---- what is reported of the runs (designs.compute) ---------------------------------------


def lm_targets(config: Any, runs: list[dict[str, Any]]) -> dict[int, float | None]:
    """The target training loss per LM depth: ``target_loss``, or the reference design's final x (1 + margin)."""
    out: dict[int, float | None] = {}
    lm = [r for r in runs if r["family"] == "transformer"]
    names = list(dict.fromkeys(r["design"] for r in lm))
    ref = config.target_design if config.target_design in names else (names[0] if names else None)
    for depth in config.lm_depths:
        if config.target_loss is not None:
            out[depth] = config.target_loss
            continue
        finals = []
        for r in lm:
            if r["design"] == ref and r["depth"] == depth and not r["diverged"] and r["lr"] == chosen_lr(config, ref, "transformer", lm, depth):
                s = smoothed(r["loss"])
                if s and s[-1] is not None:
                    finals.append(s[-1])
        out[depth] = math.fsum(finals) / len(finals) * (1 + config.target_margin) if finals else None
    return out


def chosen_lr(config: Any, design: str, fam: str, runs: list[dict[str, Any]], depth: int) -> float:
    """The lr a design is reported at: the recipe's, or of its sweep the one with the lowest mean final metric
    (a seed that diverged counts as infinitely bad)."""
    recipe = config.lm_train if fam == "transformer" else config.cnn_train
    lrs = config.lr_sweep.get(design)
    if not lrs:
        return float(recipe.lr)
    metric = "test_loss" if fam == "transformer" else "test_error"
    best, best_v = float(lrs[0]), math.inf
    for lr in lrs:
        rs = [r for r in runs if r["design"] == design and r["depth"] == depth and r["lr"] == lr]
        vals = [r["final"].get(metric) for r in rs]
        v = math.fsum(vals) / len(vals) if vals and all(x is not None for x in vals) else math.inf
        if v < best_v:
            best, best_v = float(lr), v
    return best


def finish_runs(config: Any, runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                              list[dict[str, Any]]]:
    """The reported runs (spikes, steps to target, a thinned loss trace) and the cells over seeds."""
    targets = lm_targets(config, runs)
    out, cells = [], []
    for r in runs:
        target = targets.get(r["depth"]) if r["family"] == "transformer" else None
        s = smoothed(r["loss"])
        every = max(1, len(s) // 100)
        out.append({k: r[k] for k in ("design", "family", "depth", "seed", "lr", "model", "params", "run_dir",
                                      "final", "curve", "diverged", "diverged_step")}
                   | {"amax": r.get("amax", [])}
                   | {"steps": len(r["loss"]),
                      "spikes": grad_spikes(r["norm"], k=config.spike_k, window=config.spike_window),
                      "steps_to_target": steps_to_target(r["loss"], target),
                      "loss_trace": s[every - 1::every]})
    keys = list(dict.fromkeys((r["design"], r["depth"]) for r in out))
    for design, depth in keys:
        fam = next(r["family"] for r in out if r["design"] == design)
        lr = chosen_lr(config, design, fam, out, depth)
        rs = [r for r in out if r["design"] == design and r["depth"] == depth and r["lr"] == lr]
        metric = "test_loss" if fam == "transformer" else "test_error"
        reached = [r["steps_to_target"] for r in rs if r["steps_to_target"] is not None]
        cells.append({"design": design, "family": fam, "depth": depth, "lr": lr, "metric": metric,
                      "final": mean_ci([r["final"][metric] for r in rs], config.level),
                      "target": targets.get(depth) if fam == "transformer" else None,
                      "steps_to_target": mean_ci(reached, config.level), "reached": len(reached),
                      "spikes": mean_ci([len(r["spikes"]) for r in rs], config.level),
                      "diverged": sum(r["diverged"] for r in rs), "n_seeds": len(rs)})
    return out, cells
