"""Residual and Plain blocks: the one contract every resgrad tool relies on.

``Residual``: ``y = post(shortcut(x) + branch(x))``; ``Plain``: ``y = post(branch(x))``.
Both hold the same three named submodules, so a plain net and its residual twin have
identical ``state_dict`` keys and differ only by the skip: the skip is a named submodule, never an
in-place ``out += identity``, so hooks, lesions and the path analysis address branch and skip apart.

Gates change what a block computes without copying weights, and are always restored on exit:

- *lesion*: the branch is removed, ``y = post(shortcut(x))`` (Veit et al. 2016, §4;
  for a Plain block this replaces the block by its shape-matching shortcut);
- *route*: the forward value stays ``shortcut(x) + branch(x)`` but the backward pass
  goes only through the branch or only through the skip, per sample, so a single
  backward pass carries one sampled path per example (Veit et al. 2016, §5).

Gates are only set through :func:`gates`, which restores them on exit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Union

import torch
from torch import Tensor, nn

__all__ = ["Block", "Residual", "Plain", "Scale", "blocks", "residual_blocks", "gates", "Route"]

# "branch" / "skip": every sample; a bool tensor (B,): True = through the branch.
Route = Union[str, Tensor, None]


class Block(nn.Module):
    """Common base of :class:`Residual` and :class:`Plain` (not used directly)."""

    def __init__(
        self,
        branch: nn.Module,
        shortcut: nn.Module | None = None,
        post: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if isinstance(branch, type) or not isinstance(branch, nn.Module):
            raise TypeError(
                f"branch must be an nn.Module instance, received {branch!r}; "
                "instantiate it before passing it"
            )
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()
        self._lesioned = False
        self._route: Route = None

    @property
    def changes_shape(self) -> bool:
        """True for blocks whose shortcut is not the identity (downsampling blocks).

        A shortcut that keeps the shape by construction says so with ``keeps_shape = True``
        (a fixed scale, a stream mixing): such a block is not a downsampling one.
        """
        return not isinstance(self.shortcut, nn.Identity) and not getattr(self.shortcut, "keeps_shape", False)

    @property
    def lesioned(self) -> bool:
        return self._lesioned

    @property
    def route(self) -> Route:
        return self._route

    def extra_repr(self) -> str:
        flags = []
        if self._lesioned:
            flags.append("lesioned")
        if self._route is not None:
            flags.append("routed")
        return ", ".join(flags)


class Residual(Block):
    """``y = post(shortcut(x) + branch(x))``."""

    def forward(self, x: Tensor) -> Tensor:
        s = self.shortcut(x)
        if self._lesioned:
            return self.post(s)
        f = self.branch(x)
        route = self._route
        if route is not None:
            # Same forward value; the detached term passes no gradient (Veit et al. §5).
            if isinstance(route, str):
                if route == "branch":
                    s = s.detach()
                else:
                    f = f.detach()
            else:
                m = route.view(-1, *([1] * (f.dim() - 1)))
                s = torch.where(m, s.detach(), s)
                f = torch.where(m, f, f.detach())
        return self.post(s + f)


class Plain(Block):
    """``y = post(branch(x))``; ``shortcut`` is used only while the block is lesioned."""

    def forward(self, x: Tensor) -> Tensor:
        if self._lesioned:
            return self.post(self.shortcut(x))
        return self.post(self.branch(x))


class Scale(nn.Module):
    """Multiply by a scalar: fixed, or learnable from ``init`` (ReZero, SkipInit)."""

    keeps_shape = True  # as a shortcut (DeepNorm's alpha x) it is no downsampling

    def __init__(self, init: float = 0.0, learnable: bool = True) -> None:
        super().__init__()
        t = torch.tensor(float(init))
        if learnable:
            self.alpha = nn.Parameter(t)
        else:
            self.register_buffer("alpha", t)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.alpha

    def extra_repr(self) -> str:
        learn = isinstance(self.alpha, nn.Parameter)
        return f"alpha={self.alpha.item():g}, learnable={learn}"


def blocks(model: nn.Module) -> list[Block]:
    """All Residual and Plain blocks of ``model``, in registration (= forward) order."""
    return [m for m in model.modules() if isinstance(m, Block)]


def residual_blocks(model: nn.Module) -> list[Residual]:
    """The Residual blocks of ``model`` in registration (= forward) order."""
    return [m for m in model.modules() if isinstance(m, Residual)]


def _check_route(route: Route, block: Block, i: int) -> None:
    if route is None:
        return
    if isinstance(block, Plain):
        raise ValueError(
            f"block {i} is Plain: it has one path, so backward routing does not apply; "
            "route only Residual blocks"
        )
    if isinstance(route, str):
        if route not in ("branch", "skip"):
            raise ValueError(f"route must be 'branch', 'skip' or a bool tensor, received {route!r}")
    elif isinstance(route, Tensor):
        if route.dtype != torch.bool or route.dim() != 1:
            raise ValueError(
                f"a route tensor must be 1-D bool (one entry per sample, True = branch), "
                f"received dtype {route.dtype} shape {tuple(route.shape)}"
            )
    else:
        raise TypeError(f"route must be a str, a bool tensor or None, received {type(route).__name__}")


@contextmanager
def gates(
    model: nn.Module | Sequence[Block],
    *,
    lesion: Iterable[int] = (),
    route: Route | Tensor | Mapping[int, Route] = None,
) -> Iterator[list[Block]]:
    """Set gates on the blocks of ``model`` for the duration of a ``with``.

    ``lesion``: indices into :func:`blocks` whose branch is removed.
    ``route``: ``"branch"``/``"skip"`` for every Residual block, a bool tensor
    ``(n_blocks, B)`` (row i routes block i per sample), or ``{index: route}``.
    Previous gate states are restored on exit, exceptions included.
    """
    bl = list(model) if isinstance(model, Sequence) else blocks(model)
    if not bl:
        raise ValueError(
            "the model has no resgrad blocks (Residual/Plain); build it with resgrad.build "
            "or view a torchvision/Transformer model through resgrad.adapt(model)"
        )
    n = len(bl)
    lesion = sorted(set(int(i) for i in lesion))
    bad = [i for i in lesion if not -n <= i < n]
    if bad:
        raise ValueError(f"lesion indices {bad} out of range for a model with {n} blocks")

    routes: dict[int, Route] = {}
    if isinstance(route, Mapping):
        routes = {int(i): r for i, r in route.items()}
    elif isinstance(route, Tensor) and route.dim() == 2:
        if route.shape[0] != n:
            raise ValueError(f"route tensor has {route.shape[0]} rows, the model has {n} blocks")
        routes = {i: route[i] for i in range(n)}
    elif route is not None:
        routes = {i: route for i, b in enumerate(bl) if isinstance(b, Residual)}
    for i, r in routes.items():
        if not -n <= i < n:
            raise ValueError(f"route index {i} out of range for a model with {n} blocks")
        _check_route(r, bl[i], i)

    saved = [(b._lesioned, b._route) for b in bl]
    try:
        for i in lesion:
            bl[i]._lesioned = True
        for i, r in routes.items():
            bl[i]._route = r
        yield bl
    finally:
        for b, (les, r) in zip(bl, saved, strict=True):
            b._lesioned, b._route = les, r
