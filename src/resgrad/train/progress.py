"""What a run shows while it trains: a rich bar on a terminal, else one plain line per epoch."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "epoch_line"]


def epoch_line(m: dict[str, Any], epochs: int) -> str:
    """One epoch's metrics in one line."""
    return (f"epoch {m['epoch']}/{epochs}  train loss {m['train_loss']:.4f} error {m['train_error']:.2%}  "
            f"test loss {m['test_loss']:.4f} error {m['test_error']:.2%}  lr {m['lr']:.3g}  {m['seconds']:.1f}s")


class Progress:
    """A rich bar on a terminal, else one plain line per epoch (stderr), or nothing.

    ``progress``: None picks the bar on a terminal and lines otherwise; True the bar; False nothing.
    """

    def __init__(self, progress: bool | None, total: int, done: int, epochs: int) -> None:
        tty = sys.stderr.isatty()
        self.mode = "off" if progress is False else "bar" if (progress or tty) else "lines"
        self.epochs = epochs
        self._bar = None
        if self.mode == "bar":
            import rich.progress as rp
            from rich.console import Console

            self._bar = rp.Progress(
                rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                rp.TextColumn("steps"), rp.TimeElapsedColumn(), rp.TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("training", total=total, completed=done)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def epoch_end(self, m: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.console.print(epoch_line(m, self.epochs), highlight=False)
        elif self.mode == "lines":
            print(epoch_line(m, self.epochs), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
