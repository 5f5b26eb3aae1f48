"""The CLI's option defaults are the config fields' defaults: one source, checked here.

Each row names a command's option and the config field it fills. The option's default (as
typer sees it, in the command's signature) must equal the field's declared default; a literal
typed into the CLI that drifts from the config fails here.
"""

import dataclasses
import inspect

import pytest

from resgrad.cli import flow, study, transformer
from resgrad.experiments import transformer as T
from resgrad.experiments.flow import FlowConfig
from resgrad.experiments.study import StudyConfig
from resgrad.experiments.transformer import TransformerConfig

ROWS = [
    (flow.command, "train_steps", FlowConfig, "train_steps"),
    (flow.command, "data", FlowConfig, "data"),
    (flow.command, "threshold", FlowConfig, "threshold_decades"),
    (flow.command, "device", FlowConfig, "device"),
    (study.command, "preset", StudyConfig, "preset"),
    (transformer.command, "size", TransformerConfig, "size"),
]


def _field_default(cls, name):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@pytest.mark.parametrize("command, option, cls, name", ROWS, ids=[f"{r[0].__module__}:{r[1]}" for r in ROWS])
def test_a_cli_default_is_its_config_field_default(command, option, cls, name):
    got = inspect.signature(command).parameters[option].default
    assert got == _field_default(cls, name), f"--{option.replace('_', '-')} defaults to {got!r}, {cls.__name__}.{name} to {_field_default(cls, name)!r}"


def test_the_seq_len_default_is_the_presets():
    assert inspect.signature(transformer.command).parameters["seq_len"].default == \
        inspect.signature(T.preset).parameters["seq_len"].default


def test_the_check_fails_on_a_drifted_default(monkeypatch):
    """The comparison is live: a config whose default moved no longer matches the command."""
    moved = dataclasses.make_dataclass("Moved", [("train_steps", int, dataclasses.field(default=7))])
    assert inspect.signature(flow.command).parameters["train_steps"].default != _field_default(moved, "train_steps")


def test_config_default_reads_factories_and_refuses_unknown_fields():
    from resgrad.experiments.config import default

    assert default(FlowConfig, "threshold_decades") == 2.0
    assert default(StudyConfig, "flow") == FlowConfig()  # a default_factory is called
    with pytest.raises(AttributeError, match="no field 'nope'"):
        default(FlowConfig, "nope")
