"""The resume protocol: what a run folder records, how a rerun checks and continues it.

A run folder (``resgrad.rundir.RunDir`` gives its files) holds ``config.json`` (the run
record: :func:`run_record`), ``metrics.jsonl`` and ``checkpoints/last.pt``. A rerun of
``fit`` on it, in this order (:func:`open_run`):

1. reads ``config.json`` strictly (:func:`check_record`: its format and every TrainConfig field);
2. when only ``epochs`` grew and no step already run changes lr, continues under the longer
   schedule (:func:`grow`); else claims the folder for the same config (``RunDir.claim``
   names any field that differs; the free fields — device, checkpoint cadence, evaluation
   batch — may differ);
3. loads the checkpoint (format checked, checksum verified), checks that ``config.json`` still
   holds the config the checkpoint recorded (:func:`check_config`: a changed file is damage,
   named as such, not a new option), and cuts ``metrics.jsonl`` back to its epochs, every line
   checked against the digests recorded with the checkpoint (``RunDir.read_metrics``);
   without a checkpoint (or with ``resume=False``) starts over in the folder.

Under torchrun rank 0 does all of this while the other ranks wait (:func:`open_shared`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed
from .._checks import is_int
from ..callbacks import Callback
from ..data import DataBundle
from ..io import environment, jsonable
from ..nets import blocks
from ..rundir import DamagedRun, RunDir
from ..schema import ResultError
from .config import DEFAULTS, FORMAT, FREE_FIELDS, RUN_KIND, TrainConfig
from .rng import rng_state
from .schedule import lr_factor, milestone_steps

__all__ = ["RUN_KIND", "FORMAT", "run_record", "check_record", "check_config", "open_run", "open_shared", "grow",
           "comparable", "save_checkpoint", "load_checkpoint", "load_callback_states"]

def run_record(
    config: TrainConfig, device: torch.device, model: nn.Module, data: DataBundle,
    spec: dict | None, schedule: dict, ddp: distributed.Dist | None = None,
) -> dict[str, Any]:
    """What ``config.json`` holds for a run (``config`` with the resolved device)."""
    return {
        "kind": RUN_KIND,
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**asdict(config), "device": str(device)},
        "seed": config.seed,
        "model_spec": spec,
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "blocks": len(blocks(model)),
        "data": {
            "name": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "n_train": len(data.x_train), "n_test": len(data.x_test), "info": data.info,
        },
        "schedule": schedule,
        # Not part of the config compared on resume: the same global batches under any world size.
        "world_size": ddp.world if ddp is not None else 1,
        "backend": ddp.backend if ddp is not None else None,
        "environment": environment(str(device)),
    }


def check_record(run: RunDir, record: dict[str, Any]) -> TrainConfig:
    """The recorded config, read strictly: a newer format, or a missing, unknown or mistyped
    field, is one line naming ``config.json`` and the dotted field."""
    source = str(run.config_path)
    fmt = record.get("format", FORMAT)  # every resgrad so far wrote format 1
    if not is_int(fmt) or fmt < 1:
        raise ResultError(f"{source}: field 'format' is {fmt!r}, expected an integer >= 1; restore the file as it "
                          "was written, or use a new --out folder")
    if fmt > FORMAT:
        raise ResultError(f"{source}: field 'format' is {fmt}, newer than this resgrad reads (format {FORMAT}); "
                          "upgrade resgrad (pip install -U resgrad), or use a new --out folder")
    if "config" not in record:
        raise ResultError(f"{source}: field 'config' is missing (a run record needs it); restore the file as it "
                          "was written, or use a new --out folder")
    return TrainConfig.from_record(record["config"], source=source)


def open_shared(
    run: RunDir, record: dict[str, Any], resume: bool, marks: list[int], ddp: distributed.Dist
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """:func:`open_run` on rank 0; then every rank holds rank 0's checkpoint and kept metrics.

    Rank 0 checks, claims and cuts back the folder while the others wait; it tells them how
    that went (an error there stops every rank with its line), then they read the checkpoint
    and metrics it left (the run folder is on storage every rank sees).
    """
    state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    if ddp.main:
        try:
            state = open_run(run, record, resume, marks)
            if state is not None:
                history = run.keep_metrics(int(state["epoch"]))
        except Exception as e:
            if ddp.active:
                usage = isinstance(e, (ValueError, TypeError, FileNotFoundError))
                ddp.from_main({"failed": (str(e).strip().splitlines() or [type(e).__name__])[0], "usage": usage})
            raise
    if not ddp.active:
        return state, history
    told = ddp.from_main({"failed": None, "resume": state is not None})
    if ddp.main:
        return state, history
    if told["failed"] is not None:
        raise (ValueError if told["usage"] else RuntimeError)(f"rank 0 could not open {run.path}: {told['failed']}")
    if told["resume"]:
        state = load_checkpoint(run)
        history = run.read_metrics()[: int(state["epoch"])]
    return state, history


def open_run(run: RunDir, record: dict[str, Any], resume: bool, marks: list[int]) -> dict[str, Any] | None:
    """Check and prepare the run folder; return the checkpoint to resume from, if any."""
    if resume and not run.has_config() and run.has_checkpoint():
        raise ValueError(f"{run.path} has a checkpoint but no config.json, so it cannot be checked against this "
                         "config; restore config.json, or start over with --no-resume")
    if resume and run.has_config():
        old = run.read_config(RUN_KIND)
        old_config = check_record(run, old)
        if run.has_checkpoint():
            check_config(run, old, load_checkpoint(run))  # before grow(): an edited file is damage, not an option
        grown = grow(run, old, old_config, record, marks)
        run.claim(grown or record, compare=lambda r: comparable(r, record.get("model_spec") is not None),
                  fresh=grown is not None)
        if run.has_checkpoint():
            return load_checkpoint(run)
    # A fresh start: resume=False, or a run killed before its first checkpoint.
    run.need_write()
    run.remove_checkpoint()
    run.claim(record, fresh=True)
    run.rewrite_metrics([])
    return None


def grow(
    run: RunDir, old: dict[str, Any], cfg_old: TrainConfig, new: dict[str, Any], marks: list[int]
) -> dict[str, Any] | None:
    """The record to continue under when ``new`` only trains for longer than ``old``; else None.

    The lr milestones are fractions of all steps, so more epochs move them. Continuing is
    allowed only when every step already run had the same lr under the new schedule (a
    constant lr, or milestones still ahead); otherwise one line says what to pass instead.
    ``cfg_old``: ``old``'s config as :func:`check_record` read it.
    """
    a, b = {**DEFAULTS, **(old.get("config") or {})}, dict(new["config"])
    if a.get("epochs") == b.get("epochs") or not isinstance(a.get("epochs"), int):
        return None
    rest = [k for k in set(a) | set(b) if k not in (*FREE_FIELDS, "epochs") and jsonable(a.get(k)) != jsonable(b.get(k))]
    if rest or jsonable(old.get("data", {}) | {"info": None}) != jsonable(new.get("data", {}) | {"info": None}):
        return None  # other differences: claim() names them
    done = int((old.get("schedule") or {}).get("total_steps", 0))
    if run.has_checkpoint():
        done = int(run.load_checkpoint().get("step", done))
    old_marks = list((old.get("schedule") or {}).get("milestone_steps", milestone_steps(cfg_old, done)))
    cfg_new = TrainConfig(**{**b, "device": "cpu"})
    moved = [s for s in range(done) if lr_factor(cfg_old, old_marks, s) != lr_factor(cfg_new, marks, s)]
    if b["epochs"] < a["epochs"] or moved:
        why = ("fewer epochs than it has" if b["epochs"] < a["epochs"] else
               f"the lr milestones move from steps {old_marks} to {marks}, so step {moved[0]} already ran at "
               "another lr than the longer schedule gives it")
        raise ValueError(f"{run.path} trained with --epochs {a['epochs']}; --epochs {b['epochs']} would change "
                         f"its schedule ({why}); keep --epochs {a['epochs']}, or train the longer run in a new "
                         "--out folder (or here with --no-resume)")
    return {**new, "created": old.get("created"), "grown_from": {"epochs": a["epochs"], "steps": done}}


def _trained(config: dict[str, Any]) -> dict[str, Any]:
    # The fields that decide what is trained (a resumed run may change the free ones).
    return {k: v for k, v in jsonable({**DEFAULTS, **config}).items() if k not in FREE_FIELDS}


def check_config(run: RunDir, record: dict[str, Any], state: dict[str, Any]) -> None:
    """``config.json``'s config must be the one the checkpoint recorded when it was saved.

    A difference is damage (the file was edited or restored from another run), named with
    both files and the fields; never read as if the user had passed the other value. A run
    grown to more epochs (``grown_from``) may hold a checkpoint of its shorter schedule; a
    checkpoint written before it recorded its config is accepted as before.
    """
    saved = state.get("config")
    if not isinstance(saved, dict):
        return
    have, want = _trained(record.get("config") or {}), jsonable(saved)
    grown = record.get("grown_from")
    if have != want and isinstance(grown, dict) and {**have, "epochs": grown.get("epochs")} == want:
        return  # killed after growing config.json, before the first checkpoint of the longer schedule
    if have != want:
        diff = [f"{k}: {want.get(k)!r} in the checkpoint, {have.get(k)!r} in config.json"
                for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
        raise DamagedRun(f"{run.config_path} no longer matches its checkpoint {run.checkpoint_path} "
                         f"({'; '.join(diff)}): the file was changed after the run wrote it; restore it, or start "
                         "over with --no-resume")


def comparable(record: dict[str, Any], spec: bool) -> dict[str, Any]:
    """The part of a run record a rerun must match (``RunDir.claim`` names what differs).

    fit() without a spec: the weights' shapes still must match, checked on load. A field
    added after a run was recorded compares at its default (an older folder resumes).
    """
    given = {**DEFAULTS, **record.get("config", {})}
    cfg = {k: v for k, v in given.items() if k not in FREE_FIELDS}
    data = {k: v for k, v in record.get("data", {}).items() if k != "info"}  # info: local paths
    return {"config": cfg, "data": data, **({"model_spec": record.get("model_spec")} if spec else {})}


# ---- checkpoints ------------------------------------------------------------------


def callback_keys(cbs: Sequence[Callback]) -> list[str]:
    """Each callback's key in a checkpoint: its class name, ``#n`` for the n-th repeat."""
    seen: dict[str, int] = {}
    keys = []
    for cb in cbs:
        name = type(cb).__qualname__
        keys.append(name if name not in seen else f"{name}#{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return keys


_SAFE = (str, int, float, bool, type(None), Tensor)


def _check_loadable(obj: Any, where: str) -> None:
    # torch.load(weights_only=True) refuses arbitrary objects: fail at save time, by name.
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_loadable(k, where)
            _check_loadable(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_loadable(v, f"{where}[{i}]")
    elif not isinstance(obj, _SAFE):
        raise TypeError(f"{where} is a {type(obj).__name__}, which torch.load(weights_only=True) cannot "
                        "read back; keep callback states to tensors, numbers, strings, lists and dicts")


def save_checkpoint(
    run: RunDir, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    epoch: int, step: int, finished: bool, cbs: Sequence[Callback], partial: dict[str, Any] | None = None,
    *, history: Sequence[dict[str, Any]] | None = None, config: TrainConfig | None = None,
) -> None:
    """Write ``checkpoints/last.pt`` atomically: weights, optimizer, schedule, RNG and callback states.

    ``history``: the metrics rows the run computed (their digests are recorded with the
    checkpoint, so every line of metrics.jsonl can be checked); ``config``: the run's config
    (its trained fields are recorded, so config.json can be checked against it).
    """
    cb_states = {}
    for key, cb in zip(callback_keys(cbs), cbs, strict=True):
        s = cb.state_dict()
        _check_loadable(s, f"{key}.state_dict()")
        cb_states[key] = s
    state = {
        "format": FORMAT, "epoch": epoch, "step": step, "finished": finished,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": rng_state(), "callbacks": cb_states,
        "partial": partial,  # None at an epoch's end; else the position inside epoch + 1
    }
    if config is not None:
        state["config"] = _trained(asdict(config))
    rows = None if history is None else [r for r in history if r["epoch"] <= epoch]
    run.save_checkpoint(state, metrics=rows)


def load_checkpoint(run: RunDir) -> dict[str, Any]:
    """The run's checkpoint (checksum verified by RunDir), refused in one line when of another format."""
    state = run.load_checkpoint()
    if state.get("format") != FORMAT:
        raise ValueError(f"{run.checkpoint_path} is not a resgrad checkpoint of format {FORMAT}; "
                         "use a new --out folder")
    return state


def load_callback_states(cbs: Sequence[Callback], saved: dict[str, Any]) -> None:
    """Give each callback its saved state; a callback added since the checkpoint starts fresh."""
    for key, cb in zip(callback_keys(cbs), cbs, strict=True):
        if key in saved:
            cb.load_state_dict(saved[key])
