"""An adapted layer's ``state_dict`` under the original layer's names.

A view regroups the layer's own modules into Residual units, so torch would name its
tensors by the view's tree (``h.0.attn.branch.norm.weight`` for GPT-2's ``h.0.ln_1.weight``):
a checkpoint saved from an adapted model would not load into the original class, and
``from_pretrained`` re-initialises what it cannot match, silently. So every view gets a
``state_dict`` post-hook and a ``load_state_dict`` pre-hook that translate between the two
trees by tensor identity (the view holds the original's very tensors): saved and loaded
keys are the original's, whatever the view's structure, and stay right when a path tool
moves units (the translation is computed at each call, not once).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["keep_original_names"]


def _entries(m: nn.Module) -> list[tuple[str, Tensor]]:
    """What ``m.state_dict()`` holds, (name, tensor) in its order, without calling it (no hooks)."""
    out = []
    for path, mod in m.named_modules(remove_duplicate=False):
        p = f"{path}." if path else ""
        out.extend((p + n, t) for n, t in mod._parameters.items() if t is not None)
        out.extend((p + n, t) for n, t in mod._buffers.items()
                   if t is not None and n not in mod._non_persistent_buffers_set)
    return out


def _translation(view: nn.Module) -> tuple[dict[str, str | None], list[tuple[str, Tensor]]]:
    """({view name: original name of the same tensor, or None for a tensor only the view
    has}, [(original name, tensor) with no view name of its own]).

    A tensor listed n times in the original and m times in the view pairs its names in
    order; view names beyond n are duplicates (mapped to the first original name, not
    saved), original names beyond m are saved from the original tensor."""
    original: nn.Module = view.__dict__["_resgrad_original"]
    onames: dict[int, list[str]] = {}
    tensors: dict[int, Tensor] = {}
    for n, t in _entries(original):
        onames.setdefault(id(t), []).append(n)
        tensors[id(t)] = t
    seen: dict[int, int] = {}
    v2o: dict[str, str | None] = {}
    for vn, t in _entries(view):
        names = onames.get(id(t))
        k = seen[id(t)] = seen.get(id(t), -1) + 1
        v2o[vn] = None if names is None else names[min(k, len(names) - 1)]
    extra = [(n, tensors[i]) for i, names in onames.items() for n in names[seen.get(i, -1) + 1:]]
    return v2o, extra


def _save_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    v2o, extra = _translation(module)
    emitted: set[str] = set()
    moved = {}
    for vn, on in v2o.items():
        key = prefix + vn
        if key not in state_dict:
            continue
        val = state_dict.pop(key)
        if on is None:
            moved[key] = val  # only the view has it: under its own name
        elif on not in emitted:  # a duplicate view name of one original entry is not saved twice
            emitted.add(on)
            moved[prefix + on] = val
    state_dict.update(moved)
    for on, t in extra:
        state_dict[prefix + on] = t.detach()


def _load_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
               missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
    v2o, extra = _translation(module)
    vals = {prefix + vn: state_dict[prefix + on] for vn, on in v2o.items()
            if on is not None and prefix + on in state_dict}
    for on in {on for on in v2o.values() if on is not None}:
        state_dict.pop(prefix + on, None)
    state_dict.update(vals)
    for on, t in extra:  # original entries no view module holds: loaded into the tensor itself
        key = prefix + on
        if key in state_dict:
            with torch.no_grad():
                t.copy_(state_dict.pop(key))
        elif strict:
            missing_keys.append(key)


def _report_hook(module: nn.Module, incompatible: Any) -> None:
    """A strict load's missing keys, named as the original names them (the error reads them)."""
    v2o, _ = _translation(module)
    for i, key in enumerate(incompatible.missing_keys):
        for vn, on in v2o.items():
            if on is not None and (key == vn or key.endswith("." + vn)):
                incompatible.missing_keys[i] = key[: len(key) - len(vn)] + on
                break


def keep_original_names(view: nn.Module, original: nn.Module) -> None:
    """Make ``view.state_dict()`` / ``view.load_state_dict()`` use ``original``'s keys."""
    view.__dict__["_resgrad_original"] = original  # not a submodule: no second tree
    view.register_state_dict_post_hook(_save_hook)
    view.register_load_state_dict_pre_hook(_load_hook)
    view.register_load_state_dict_post_hook(_report_hook)
