"""Plain and residual MLPs of any depth and width, one definition for both twins.

A block is pre-activation, ``branch = norm -> act -> Linear``: the plain twin is the
ordinary MLP ``Linear(act(Linear(...)))`` and the residual one is ``x + branch(x)``,
whose Jacobian is ``I + dF/dx`` with nothing applied after the sum (He et al. 2016,
arXiv 1603.05027, Eq. 5). Branch scaling for nets without normalisation: zero-init of
the last layer (Fixup, arXiv 1901.09321; SkipInit, arXiv 2002.10444), a learnable α
initialised to 0 (ReZero, arXiv 2003.04887), or a fixed scale.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from .blocks import Plain, Residual, Scale

__all__ = ["MLP", "ACTIVATIONS", "NORMS", "INITS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
NORMS = ("none", "batch", "layer")
INITS = ("he", "xavier", "orthogonal")
BranchScale = Literal["none", "zero_init_last", "rezero"] | float


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; received {value!r}")


class MLP(nn.Module):
    """Flatten -> Linear stem -> ``depth`` blocks -> norm -> act -> Linear head."""

    def __init__(
        self,
        depth: int = 16,
        width: int = 64,
        *,
        residual: bool = True,
        activation: str = "relu",
        norm: str = "none",
        init: str = "he",
        in_features: int = 40,
        num_classes: int = 10,
        branch_scale: BranchScale = "none",
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth (number of blocks) must be an integer >= 1, received {depth!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an integer >= 1, received {width!r}")
        _choice("activation", activation, ACTIVATIONS)
        _choice("norm", norm, NORMS)
        _choice("init", init, INITS)
        if not isinstance(branch_scale, (int, float)):
            _choice("branch_scale", branch_scale, ("none", "zero_init_last", "rezero"))
        if branch_scale != "none" and not residual:
            raise ValueError("branch_scale applies to residual nets only; use branch_scale='none'")
        act = ACTIVATIONS[activation]
        kind = Residual if residual else Plain

        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width))
        blocks = []
        for _ in range(depth):
            layers: list[nn.Module] = [_norm(norm, width), act(), nn.Linear(width, width)]
            if branch_scale == "rezero":
                layers.append(Scale(0.0, learnable=True))
            elif isinstance(branch_scale, (int, float)):
                layers.append(Scale(float(branch_scale), learnable=False))
            blocks.append(kind(nn.Sequential(*layers)))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(_norm(norm, width), act(), nn.Linear(width, num_classes))

        gain = nn.init.calculate_gain(activation if activation != "gelu" else "relu")
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if init == "he":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                elif init == "xavier":
                    nn.init.xavier_normal_(m.weight, gain=gain)
                else:
                    nn.init.orthogonal_(m.weight, gain=gain)
                nn.init.zeros_(m.bias)
        if branch_scale == "zero_init_last":
            for b in self.blocks:
                lin = [m for m in b.branch if isinstance(m, nn.Linear)][-1]
                nn.init.zeros_(lin.weight)

    def forward(self, x: Tensor) -> Tensor:  # (B, in_features) or (B, 1, in_features)
        return self.head(self.blocks(self.stem(x)))
