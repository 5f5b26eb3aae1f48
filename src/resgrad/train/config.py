"""How to train: :class:`TrainConfig`, a typed record (``resgrad.schema.Record``).

Its defaults are declared once, here; ``resgrad train``'s options are built from them.
:func:`TrainConfig.from_record` reads the ``config`` of a run folder's ``config.json``
strictly: a missing required, unknown or mistyped field is one line naming the file and
the dotted field. Fields added after a folder was written (``optimizer``, ``betas``,
``warmup_shape`` after resgrad 0.1; ``amp``, ``channels_last`` later) are absent there and
read as their defaults, so older folders still load and resume.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .._checks import is_int, is_number, is_positive
from ..io import jsonable
from ..schema import Record, ResultError

__all__ = ["TrainConfig", "RUN_KIND", "FORMAT", "OPTIMIZERS", "WARMUP_SHAPES", "AMP", "FREE_FIELDS", "DEFAULTS"]

RUN_KIND = "resgrad.train"  # config.json["kind"]: what load_run recognises as a run folder
FORMAT = 1  # bump when the checkpoint or config.json layout changes

OPTIMIZERS = ("sgd", "adamw")
WARMUP_SHAPES = ("constant", "linear")
AMP = (None, "bf16")  # mixed precision: bfloat16 needs no loss scaling (its exponent range is float32's)
# Fields that do not change what is trained: a resumed run may differ in them.
FREE_FIELDS = ("device", "checkpoint_every", "checkpoint_steps", "checkpoint_minutes", "eval_batch_size")


@dataclass
class TrainConfig(Record):
    """How to train. The defaults are He et al. 2015's CIFAR-10 recipe (arXiv 1512.03385, §4.2)."""

    epochs: int = 164  # epochs (passes over the training set); 164 x 391 steps ~ the paper's 64k iterations
    batch_size: int = 128  # examples per SGD step ("mini-batch size of 128", §4.2)
    lr: float = 0.1  # peak learning rate (per step of batch_size examples, §4.2)
    momentum: float = 0.9  # SGD momentum coefficient, in [0, 1) (§4.2)
    weight_decay: float = 1e-4  # L2 coefficient (per unit of squared weight), on every parameter, BN included (§4.2)
    nesterov: bool = False  # Nesterov momentum on/off; He et al. use classical momentum
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of all steps where lr *= gamma (32k, 48k of 64k)
    gamma: float = 0.1  # lr multiplier (unitless) at each milestone ("divide it by 10", §4.2)
    warmup_iters: int = 0  # steps run at warmup_lr first (ResNet-110: ~400 iterations, §4.2)
    warmup_lr: float = 0.01  # learning rate during a constant warm-up, then back to lr (not a ramp, §4.2)
    seed: int = 0  # integer seed of the global RNGs at a fresh start, the data order and the block sampling
    device: str = "auto"  # device name: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N", "mps"
    checkpoint_every: int = 1  # epochs between checkpoints; the last epoch is always saved
    checkpoint_steps: int | None = None  # steps between mid-epoch checkpoints too (long epochs); None: none
    checkpoint_minutes: float | None = None  # minutes (wall clock) between mid-epoch checkpoints too; None: none
    eval_batch_size: int = 1000  # test examples per forward pass (memory only, same result)
    max_steps: int | None = None  # SGD steps in all, then stop (smoke runs); the schedule fits them; None: all
    active_blocks: int | None = None  # blocks k: per batch only k random blocks' branches train (Veit et al. 2016 §5.2)
    # Transformers train with Adam and a linear warm-up (Vaswani et al. 2017 §5.3; Xiong et al.
    # 2020, arXiv 2002.04745, §3): "adamw" uses betas and a decoupled weight_decay (momentum,
    # nesterov unused); warmup_shape "linear" ramps lr from lr/warmup_iters to lr over warmup_iters
    # steps (warmup_lr unused), "constant" is He et al.'s fixed warmup_lr.
    optimizer: Literal["sgd", "adamw"] = "sgd"  # name: "sgd" (He et al. 2015) or "adamw" (Loshchilov & Hutter 2019)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decay rates per step (Transformers: (0.9, 0.98))
    warmup_shape: Literal["constant", "linear"] = "constant"  # name: "constant" (He et al. §4.2) or "linear"
    amp: Literal["bf16"] | None = None  # precision: "bf16" runs forward and loss under torch.autocast(bfloat16)
    channels_last: bool = False  # memory format on/off: image nets and batches in torch.channels_last (GPUs)

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]  # JSON gives a list
        validate(self)

    @classmethod
    def from_record(cls, config: Any, *, source: str, where: str = "config") -> TrainConfig:
        """The ``config`` object of a run folder's ``config.json``, checked strictly.

        ``source`` names the file, ``where`` the object's dotted place in it; a bad field
        is one :class:`resgrad.schema.ResultError` line (a ValueError) naming both.
        """
        if not isinstance(config, dict):
            raise ResultError(f"{source}: field {where!r} is not an object of TrainConfig fields; "
                              "restore the file as it was written, or use a new --out folder")
        try:
            return cls._from_dict(config, where, source)
        except ResultError:
            raise
        except ValueError as e:  # a typed value out of its range: validate() names the field
            field, _, why = str(e).partition(" ")
            raise ResultError(f"{source}: field '{where}.{field}' {why}; restore the file as it was written, "
                              "or use a new --out folder") from None

    @classmethod
    def help(cls, name: str) -> str:
        """The comment declared with field ``name`` (its meaning and unit): ``resgrad train``'s option help."""
        if not _HELP:
            for m in re.finditer(r"^    (\w+): [^=\n]+ = [^#\n]+#\s*(.+)$", inspect.getsource(cls), re.M):
                _HELP[m.group(1)] = m.group(2).strip()
        return _HELP[name]


_HELP: dict[str, str] = {}


def _checks() -> list[tuple[str, Callable[[Any], bool], str]]:
    # (field, rule, what it must be): the message reads "<field> must be ..., received <value>".
    def opt(rule: Callable[[Any], bool]) -> Callable[[Any], bool]:
        return lambda v: v is None or rule(v)

    def count(lo: int) -> Callable[[Any], bool]:
        return lambda v: is_int(v) and v >= lo

    return [
        ("epochs", count(1), "an integer >= 1"),
        ("batch_size", count(1), "an integer >= 1"),
        ("lr", is_positive, "a finite number > 0"),
        ("momentum", lambda v: is_number(v) and 0 <= v < 1, "in [0, 1)"),
        ("weight_decay", lambda v: is_number(v) and v >= 0, ">= 0"),
        ("milestones", lambda v: all(0 < m <= 1 for m in v) and list(v) == sorted(v),
         "increasing fractions of training in (0, 1], e.g. (0.5, 0.75)"),
        ("gamma", is_positive, "a finite number > 0"),
        ("warmup_iters", count(0), "an integer >= 0"),
        ("warmup_lr", is_positive, "a finite number > 0"),
        ("seed", count(0), "an integer >= 0"),
        ("device", lambda v: isinstance(v, str) and v.strip() != "", "a string such as 'auto' or 'cpu'"),
        ("checkpoint_every", count(1), "an integer >= 1"),
        ("eval_batch_size", count(1), "an integer >= 1"),
        ("checkpoint_steps", opt(count(1)), "None or an integer >= 1"),
        ("checkpoint_minutes", opt(is_positive), "None or a number > 0"),
        ("max_steps", opt(count(1)), "None or an integer >= 1"),
        ("active_blocks", opt(count(1)), "None (all blocks) or an integer >= 1"),
        ("optimizer", lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        ("betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
        ("warmup_shape", lambda v: v in WARMUP_SHAPES, f"one of {', '.join(WARMUP_SHAPES)}"),
        ("amp", lambda v: v in AMP, f"one of {', '.join(map(repr, AMP))}"),
        ("channels_last", lambda v: isinstance(v, bool), "True or False"),
    ]


_CHECKS = _checks()


def validate(c: TrainConfig) -> None:
    """ValueError ``"<field> must be ..., received <value>"`` for the first field out of range."""
    for name, ok, what in _CHECKS:
        v = getattr(c, name)
        try:
            good = bool(ok(v))
        except TypeError:  # e.g. a milestone that is not a number
            good = False
        if not good:
            raise ValueError(f"{name} must be {what}, received {v!r}")


DEFAULTS: dict[str, Any] = jsonable(dataclasses.asdict(TrainConfig()))  # what an absent field reads as
