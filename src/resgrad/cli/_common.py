"""What every command shares: option types, device choice, the error boundary."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # _executor imports this module
    from ._executor import ExecutorOptions

__all__ = ["console", "err_console", "DeviceOpt", "SeedOpt", "OutOpt", "DataDirOpt",
           "resolve_device", "UsageError", "CheckFailed", "guarded"]

console = Console()
err_console = Console(stderr=True)

DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto (CUDA when present).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (weights, data order, sampling).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Output folder (default: ./runs/<name>).")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="RESGRAD_DATA", help="Folder holding local datasets (CIFAR-10)."),
]


class UsageError(ValueError):
    """Bad input from the user: exit code 2."""


class CheckFailed(RuntimeError):
    """A check ran and failed (e.g. a non-finite loss): exit code 1."""


def resolve_device(device: str) -> str:
    """``--device`` as the name of a device this machine has (``auto``: CUDA when present).

    The one resolver ``fit`` uses too (:func:`resgrad.train.resolve_device`): cpu, cuda,
    cuda:N (N among the visible GPUs) and mps (when available); anything else is a UsageError line.
    """
    from resgrad.train.device import resolve_device as resolve

    try:
        return str(resolve(device, what="--device"))
    except ValueError as e:
        raise UsageError(str(e)) from None


F = TypeVar("F", bound=Callable)


def guarded(fn: F) -> F:
    """Turn exceptions into one friendly line and an exit code (RESGRAD_DEBUG=1: traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]; rerun the same command to resume")
            raise typer.Exit(130) from None
        except Exception as e:
            if os.environ.get("RESGRAD_DEBUG"):
                raise
            from resgrad.stopping import Preempted

            signum = getattr(e, "signum", None)
            if isinstance(e, Preempted) and isinstance(signum, int):
                # Stopped on SIGTERM/SIGINT/SIGUSR1 after a checkpoint: the shell's code for that signal.
                err_console.print(f"[yellow]{escape(str(e))}[/]", highlight=False, soft_wrap=True)
                sys.stderr.flush()
                raise typer.Exit(128 + signum) from None
            code = 1 if isinstance(e, CheckFailed) else 2 if isinstance(
                e, (ValueError, TypeError, FileNotFoundError, NotImplementedError, KeyError, ImportError)
            ) else 1
            text = e.strerror if isinstance(e, OSError) and e.strerror and e.filename is None else str(e)
            msg = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
            if code == 1 and not isinstance(e, (CheckFailed, OSError)):
                err_console.print("(set RESGRAD_DEBUG=1 to see the traceback)", style="dim")
            sys.stderr.flush()
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def say(msg: str) -> None:
    """One line of progress on the console (no markup guessing, long lines kept whole)."""
    console.print(msg, highlight=False, soft_wrap=True)


def run_and_report(executors: ExecutorOptions, run_dir: Path, run: Callable[..., object]) -> None:
    """Run ``run(log=..., executor=...)`` on the executor the flags describe, then render
    ``run_dir/report.html``; a finished run on read-only storage keeps its old report."""
    from resgrad.report import render

    ex = executors.build(run_dir)
    with ex:
        say(f"training runs: {ex.describe()}")
        result = run(log=say, executor=ex)
    report = run_dir / "report.html"
    try:
        say(f"report: {render(result, report)}")
    except OSError:
        if not report.is_file():
            raise
        say(f"report: {report} (not re-rendered: {run_dir} cannot be written)")
