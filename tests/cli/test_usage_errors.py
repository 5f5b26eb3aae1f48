"""Usage errors of every command (unknown option, missing argument, a string or a float given to a
number option) are one line naming the option and ``--help``, exit 2, no box and no traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from resgrad.cli import app

runner = CliRunner()
ROOT = typer.main.get_command(app)
COMMANDS = sorted(ROOT.commands)


def _args(name: str) -> list[str]:
    """A placeholder for each required argument, so that parsing reaches the options."""
    return ["x" for p in ROOT.commands[name].params if p.param_type_name == "argument" and p.required]


def _options(name: str, kind: str) -> list[str]:
    return [p.opts[0] for p in ROOT.commands[name].params
            if p.param_type_name == "option" and p.opts[0].startswith("--") and p.bare_type() == kind]


def _one_line(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and "╭" not in res.output and "│" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_every_command_is_covered():
    assert {"diagnose", "flow", "lesion", "models", "paths", "report", "study", "sweep", "train",
            "transformer"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_unknown_option(name):
    line = _one_line(runner.invoke(app, [name, *_args(name), "--no-such-option"]), "--no-such-option",
                     f"resgrad {name} --help")
    assert "No such option" in line


@pytest.mark.parametrize("name", [n for n in COMMANDS if _args(n)])
def test_missing_argument(name):
    arg = next(p for p in ROOT.commands[name].params if p.param_type_name == "argument" and p.required)
    line = _one_line(runner.invoke(app, [name]), "Missing argument", f"resgrad {name} --help")
    assert f"'{(arg.metavar or arg.name).lower()}'" in line.lower(), line  # the argument's metavar or name


@pytest.mark.parametrize("name", [n for n in COMMANDS if _options(n, "int")])
def test_string_or_float_to_an_integer_option(name):
    for opt in _options(name, "int"):
        for bad in ("abc", "1.5"):
            _one_line(runner.invoke(app, [name, *_args(name), opt, bad]), f"'{opt}'", "integer",
                      f"resgrad {name} --help")


@pytest.mark.parametrize("name", [n for n in COMMANDS if _options(n, "float")])
def test_string_to_a_number_option(name):
    for opt in _options(name, "float"):
        _one_line(runner.invoke(app, [name, *_args(name), opt, "abc"]), f"'{opt}'", "number")


def test_unknown_command_and_help_still_work():
    _one_line(runner.invoke(app, ["nosuch"]), "No such command 'nosuch'", "resgrad --help")
    ok = runner.invoke(app, ["diagnose", "--help"])
    assert ok.exit_code == 0 and "Usage:" in ok.output
    ver = runner.invoke(app, ["--version"])
    assert ver.exit_code == 0 and ver.output.startswith("resgrad ")
