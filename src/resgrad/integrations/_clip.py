"""Before and after gradient clipping: the ``clip=`` option every framework callback shares.

Clipping (``clip_grad_norm_``) multiplies every gradient by one factor, min(1, c/‖g‖), so
after it the per-layer norms of a run whose gradients explode are capped and say nothing
of the explosion. The callbacks therefore measure *before* clipping by default (the
gradient the Trainer's own ``grad_norm`` and Lightning's ``grad_norm`` utility describe),
and after clipping on request, as rows of their own kind so the two cannot be mixed up:

- ``clip="pre"`` (default): ``param`` rows, ``<prefix>/grad_norm/<param>``, before clipping;
- ``clip="post"``: ``param_post_clip`` rows, ``<prefix>/grad_norm_post_clip/<param>``, the
  gradient the optimizer steps with;
- ``clip="both"``: both.

Post-clip norms are one fused norm over the same parameter gradients, taken after the
framework has clipped (and unscaled, under AMP); FSDP2 shards are reduced in one
all-reduce as the monitor does. Nothing is read from the device until the records are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..probes._dtensor import dist_world, reduce_step
from ..probes.names import PREFIX
from ..probes.names import metric_dict as _metric_dict
from ..probes.quantities import ParamGrad
from ..probes.quantities._base import StepData

__all__ = ["CLIP_CHOICES", "POST_KIND", "PostClip", "check_clip", "params_replaced", "metric_dict"]

CLIP_CHOICES = ("pre", "post", "both")
POST_KIND = "param_post_clip"  # row kind of a gradient norm measured after clipping
POST_FAMILY = "grad_norm_post_clip"


def check_clip(clip: Any) -> str:
    """``clip`` itself, or a one-line ValueError naming what was received."""
    if not isinstance(clip, str) or clip not in CLIP_CHOICES:
        raise ValueError(f"clip must be 'pre', 'post' or 'both' (when per-layer gradient norms are "
                         f"measured, relative to gradient clipping), received {clip!r}")
    return clip


def monitor_options(clip: str, options: dict[str, Any]) -> dict[str, Any]:
    """The GradientMonitor options for ``clip``: with ``"post"`` the monitor measures no
    parameter gradients itself (they are taken after clipping by :class:`PostClip`)."""
    opts = dict(options)
    if clip == "post":
        opts["params"] = False
    return opts


def wants_post(clip: str, options: dict[str, Any]) -> bool:
    """Post-clip rows are made when asked for and parameter gradients are measured at all."""
    return clip in ("post", "both") and options.get("params", True) is not False


def metric_dict(rows: Iterable[dict[str, Any]], prefix: str = PREFIX) -> dict[str, float]:
    """:func:`resgrad.probes.names.metric_dict` plus ``<prefix>/grad_norm_post_clip/<param>``
    for post-clip rows (their non-finite counts are the pre-clip rows': not counted twice)."""
    rows = list(rows)
    post = [r for r in rows if r["kind"] == POST_KIND]
    out = _metric_dict([r for r in rows if r["kind"] != POST_KIND], prefix)
    for r in post:
        if r["norm"] is not None:
            out[f"{prefix}/{POST_FAMILY}/{r['name']}"] = float(r["norm"])
    return out


def params_replaced(monitor: Any, model: Any) -> bool:
    """Has ``model`` other parameter objects than ``monitor`` was built on? (FSDP2's
    ``fully_shard`` swaps them for DTensor parameters when the framework prepares the model.)"""
    now = [id(p) for p in model.parameters() if p.requires_grad]
    return now != [id(p) for _, p in monitor._params]


class PostClip:
    """Per-parameter gradient norms of ``monitor``'s parameters after clipping."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self._pending: list[StepData] = []
        self._rows: list[dict[str, Any]] = []
        self._param = ParamGrad()

    def collect(self, step: int) -> None:
        """Take the norms of the gradients as they are now (after clipping), on the device."""
        mon = self.monitor
        data = StepData(step, None, None, [])  # clipping unscales first: no loss scale
        data.collected = {"params"}  # the monitor's rows read what was measured at this step
        self._param.collect(mon, data)
        if data.shards:  # FSDP2: the shards' sums of squares, in one all-reduce
            dev = data.shards[0].to_local().device
            reduce_step(data, torch.zeros((0, 4), dtype=torch.float64, device=dev),
                        dist_world(mon.sync_dist))
            data.shards = []
        self._pending.append(data)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every post-clip row so far (reading syncs with the device)."""
        for d in self._pending:
            for r in self._param.rows(self.monitor, d, {}):
                self._rows.append({**r, "kind": POST_KIND})
        self._pending.clear()
        return self._rows
