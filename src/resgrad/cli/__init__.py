"""The ``resgrad`` command: this module only wires the commands, one module each."""

from __future__ import annotations

import typer

from . import diagnose, flow, lesion, models, paths, report, study, sweep, train, transformer

app = typer.Typer(
    name="resgrad",
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
app.command("paths")(paths.command)
app.command("lesion")(lesion.command)
app.command("diagnose")(diagnose.command)
app.command("report")(report.command)
app.command("models")(models.command)


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
