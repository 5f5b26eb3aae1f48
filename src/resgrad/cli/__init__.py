"""The ``resgrad`` command: this module only wires the commands, one module each."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from . import (
    designs,
    diagnose,
    flow,
    lesion,
    models,
    paths,
    pretrained,
    report,
    study,
    sweep,
    train,
    transformer,
    watch,
)

# Click's exceptions as typer raises them: typer >= 0.23 vendors click (typer._click), older ones use it.
_click = sys.modules[typer.BadParameter.__module__]


class _OneLineErrors(TyperGroup):
    """The root group, whose usage errors (unknown option, missing argument, a value of the wrong
    type) are one line naming the option and ``--help``, exit 2 -- as resgrad's own errors are --
    instead of typer's boxed panel. Click raises them out of ``main`` with ``standalone_mode=False``."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # the help is shown already
                sys.exit(e.exit_code)
            ctx = e.ctx
            where = ctx.command_path if ctx is not None else (prog_name or "resgrad")
            typer.echo(f"error: {_one_line(e.format_message())}; see {where} --help", err=True)
            sys.exit(e.exit_code)
        except _click.ClickException as e:
            typer.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        # Without standalone mode, click returns typer.Exit's code (help, --version) or the command's value.
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(msg: str) -> str:
    return " ".join(msg.split()).rstrip(".")


app = typer.Typer(
    name="resgrad",
    cls=_OneLineErrors,
    help="Do residual connections solve the vanishing-gradient problem? Measure it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# One line per command, in the order `resgrad --help` shows them: the main job first.
app.command("study")(study.command)
app.command("flow")(flow.command)
app.command("train")(train.command)
app.command("sweep")(sweep.command)
app.command("transformer")(transformer.command)
app.command("designs")(designs.command)
app.command("pretrained")(pretrained.command)
app.command("paths")(paths.command)
app.command("lesion")(lesion.command)
app.command("diagnose")(diagnose.command)
app.command("report")(report.command)
app.command("models")(models.command)
app.command("watch")(watch.command)


def _version(value: bool) -> None:
    if value:
        from resgrad import __version__

        typer.echo(f"resgrad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Do residual connections solve the vanishing-gradient problem? Measure it."""


def main() -> None:
    app()
