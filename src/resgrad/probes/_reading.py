"""GradientMonitor's step schedule (``every``/``schedule`` and ``schedules=`` per quantity)
and its reading side (``records``, ``block_profile``): a mixin of :class:`resgrad.GradientMonitor`."""

from __future__ import annotations

from typing import Any, Literal

from .quantities import StepData

__all__: list[str] = []


class _Schedule:
    """When each quantity is measured."""

    every: int
    schedule: Any
    schedules: dict[str, Any]
    _options_on: list[str]
    _attached: bool
    _arm: dict[str, bool]
    _armed: bool

    def _due(self, step: int) -> bool:
        if self.schedule is not None:
            return bool(self.schedule(step))
        return step % self.every == 0

    def _due_options(self, step: int) -> dict[str, bool]:
        """{quantity option: measured at ``step``?} for the options that are on."""
        default = None
        out = {}
        for opt in self._options_on:
            sch = self.schedules.get(opt)
            if sch is None:
                default = self._due(step) if default is None else default
                out[opt] = default
            else:
                out[opt] = step % sch == 0 if isinstance(sch, int) else bool(sch(step))
        return out

    def _rearm(self, step: int) -> None:
        self._arm = self._due_options(step) if self._attached else {}
        self._armed = any(self._arm.values())


class _Reading:
    """Rows out of the measured steps (reading syncs with the device)."""

    _pending: list[StepData]
    _rows: list[dict[str, Any]]
    _snapshot: Any
    _quantities: list[Any]
    _unit_names: list[str]

    def _flush(self) -> None:
        """Materialise the pending steps whose update norms are not still awaited."""
        waiting = self._snapshot[0] if self._snapshot is not None else None
        keep = []
        for d in self._pending:
            if d is waiting:
                keep.append(d)
            else:
                self._rows.extend(self._materialise(d))
        self._pending = keep

    # ---- reading ---------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        """All measurements as tidy rows (``COLUMNS``); reading syncs with the device."""
        for data in self._pending:
            self._rows.extend(self._materialise(data))
        self._pending.clear()
        return self._rows

    def _materialise(self, d: StepData) -> list[dict[str, Any]]:
        found: dict[str, Any] = {}
        return [r for q in self._quantities for r in q.rows(self, d, found)]

    def block_profile(self, step: int | None = None, at: Literal["input", "output"] = "input") -> list[float | None]:
        """‖∂L/∂x_l‖ per block l at ``step`` (default: the last measured step).

        ``at="input"``: the gradient w.r.t. each block's input; ``"output"``: its output.
        """
        rows = self.records
        steps = [r["step"] for r in rows if r["kind"] == "input" or r["block"] is not None]
        if not steps:
            raise ValueError(
                "no block measurements: create the monitor with activations='blocks' (or True) on a "
                "model with resgrad blocks or residual units resgrad.adapt knows, and call step() after a "
                "backward pass"
            )
        step = max(steps) if step is None else step
        kind = "input" if at == "input" else "activation"
        out: list[float | None] = [None] * len(self._unit_names)
        names = dict(enumerate(self._unit_names))
        for r in rows:
            if r["step"] == step and r["kind"] == kind and r["block"] is not None and r["name"] == names.get(r["block"]):
                out[r["block"]] = r["norm"]
        return out
