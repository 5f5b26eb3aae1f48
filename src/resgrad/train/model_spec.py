"""What rebuilds a run's model: the recorded ``model_spec``, checked at the start, and :func:`load_run`."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from ..nets import build, build_for
from ..rundir import RunDir
from .resume import RUN_KIND, check_record, load_checkpoint

__all__ = ["load_run", "build_from_spec", "check_spec"]


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """The model ``{"name", "kwargs"}`` (plus ``"input_shape"``/``"num_classes"``: through build_for) names."""
    kwargs = dict(spec.get("kwargs") or {})
    if "input_shape" in spec:
        return build_for(spec["name"], tuple(spec["input_shape"]), int(spec["num_classes"]), **kwargs)
    return build(spec["name"], **kwargs)


def check_spec(spec: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """``spec`` as JSON, when it rebuilds a model of ``model``'s parameter shapes; a ValueError line otherwise."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"model_spec must be {{'name': registry name, 'kwargs': {{...}}}}, received {spec!r}")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise ValueError(f"model_spec['kwargs'] must be a dict, received {spec['kwargs']!r}")
    try:
        spec = json.loads(json.dumps(spec, allow_nan=False))
    except (TypeError, ValueError):
        raise ValueError(f"model_spec must be JSON-serialisable (it goes into config.json), received {spec!r}") from None
    spec.setdefault("kwargs", {})
    try:  # the meta device allocates nothing, even for ResNet-1202
        with torch.device("meta"):
            ref = build_from_spec(spec)
    except (NotImplementedError, RuntimeError):
        with torch.random.fork_rng(devices=[]):
            ref = build_from_spec(spec)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        odd = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        raise ValueError(f"model_spec {spec} does not rebuild this model (differs at {', '.join(odd[:3])}); "
                         "pass the name and kwargs the model was built with")
    return spec


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a run's model from ``config.json``'s ``model_spec`` with its last weights.

    Returns ``(model in eval mode on device, the config.json dict)``. The config is read
    strictly (one line naming the file and field when it does not match TrainConfig).
    """
    run = RunDir(run_dir)
    record = run.read_config(RUN_KIND)
    check_record(run, record)
    spec = record.get("model_spec")
    if not spec:
        raise ValueError(f"{run.path} records no model_spec, so its model cannot be rebuilt; train with "
                         "`resgrad train` or pass fit(..., model_spec={'name': ..., 'kwargs': {...}})")
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no checkpoint yet: the run stopped before its first "
                                "checkpoint; rerun the same train command to resume it")
    with torch.random.fork_rng(devices=[]):  # building initialises weights: keep the caller's RNG
        model = build_from_spec(spec)
    model.load_state_dict(load_checkpoint(run)["model"])
    return model.to(device).eval(), record
