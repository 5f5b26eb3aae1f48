"""The train package's contract: strict config.json reading, CLI defaults from TrainConfig,
the deprecated --checkpoint-every forms, one device resolver, one signal catcher, file sizes."""

import ast
import dataclasses
import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

import resgrad
from resgrad import TrainConfig, fit, load_run
from resgrad._checks import is_int, is_number, is_positive
from resgrad.cli import app
from resgrad.data import synthetic

SRC = Path(resgrad.__file__).parent
runner = CliRunner()


def _data():
    return synthetic((20,), num_classes=4, n_train=96, n_test=32, seed=1)


def _net():
    torch.manual_seed(0)
    return resgrad.build("resmlp", depth=2, width=8, in_features=20, num_classes=4)


SPEC = {"name": "resmlp", "kwargs": {"depth": 2, "width": 8, "in_features": 20, "num_classes": 4}}
CFG = dict(epochs=2, batch_size=32, lr=0.05, device="cpu")


@pytest.fixture
def finished_run(tmp_path):
    """A finished one-run folder and its config.json as a dict."""
    out = tmp_path / "run"
    fit(_net(), _data(), TrainConfig(**CFG), out_dir=out, model_spec=SPEC, progress=False)
    return out, json.loads((out / "config.json").read_text())


def _rewrite(out, record):
    (out / "config.json").write_text(json.dumps(record))


# ---- strict config.json -------------------------------------------------------------


@pytest.mark.parametrize("change, field, says", [
    (lambda c: c.update(bogus=1), "config.bogus", "is not a field of TrainConfig"),
    (lambda c: c.update(lr="fast"), "config.lr", "expected a number"),
    (lambda c: c.update(epochs=True), "config.epochs", "expected an integer"),
    (lambda c: c.update(milestones=[0.5, "x"]), "config.milestones[1]", "expected a number"),
    (lambda c: c.update(optimizer="lbfgs"), "config.optimizer", "expected one of"),
    (lambda c: c.update(epochs=0), "config.epochs", "must be an integer >= 1"),
])
def test_a_bad_field_in_config_json_is_one_line_naming_file_and_field(finished_run, change, field, says):
    out, record = finished_run
    change(record["config"])
    _rewrite(out, record)
    for call in (lambda: fit(_net(), _data(), TrainConfig(**CFG), out_dir=out, model_spec=SPEC, progress=False),
                 lambda: load_run(out)):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert len(msg.splitlines()) == 1, msg
        assert str(out / "config.json") in msg and f"'{field}'" in msg and says in msg, msg


def test_a_newer_format_and_a_missing_config_are_refused_by_name(finished_run):
    out, record = finished_run
    _rewrite(out, {**record, "format": 2})
    with pytest.raises(ValueError, match=r"config\.json: field 'format' is 2, newer than this resgrad reads"):
        load_run(out)
    _rewrite(out, {k: v for k, v in record.items() if k != "config"})
    with pytest.raises(ValueError, match=r"config\.json: field 'config' is missing"):
        fit(_net(), _data(), TrainConfig(**CFG), out_dir=out, model_spec=SPEC, progress=False)


def test_the_cli_says_a_bad_config_json_in_one_line_and_exits_2(tmp_path):
    out = tmp_path / "r"
    base = ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--lr", "0.01", "--out", str(out)]
    assert runner.invoke(app, base).exit_code == 0
    record = json.loads((out / "config.json").read_text())
    record["config"]["weight_decay"] = "lots"
    _rewrite(out, record)
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "config.json" in res.stderr and "'config.weight_decay'" in res.stderr


def test_a_folder_of_older_resgrad_loads_resumes_and_rebuilds(tmp_path):
    # resgrad 0.1 wrote neither optimizer/betas/warmup_shape nor amp/channels_last (nor format,
    # read as 1): absent fields read as their defaults, and the run resumes where it stopped.
    flat = {**CFG, "milestones": ()}  # a constant lr: growing 2 -> 3 epochs moves no milestone
    out = tmp_path / "run"
    fit(_net(), _data(), TrainConfig(**flat), out_dir=out, model_spec=SPEC, progress=False)
    record = json.loads((out / "config.json").read_text())
    for k in ("optimizer", "betas", "warmup_shape", "amp", "channels_last"):
        del record["config"][k]
    del record["format"]
    _rewrite(out, record)
    model, rec = load_run(out)
    assert rec["model_spec"] == SPEC and not model.training
    longer = fit(_net(), _data(), TrainConfig(**{**flat, "epochs": 3}), out_dir=out, model_spec=SPEC,
                 progress=False)
    assert longer.resumed_from == 2 and [h["epoch"] for h in longer.history] == [1, 2, 3]
    ref = fit(_net(), _data(), TrainConfig(**{**flat, "epochs": 3}), progress=False)  # never interrupted
    assert longer.final["test_loss"] == ref.final["test_loss"]
    a, b = longer.model.state_dict(), ref.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_from_record_reads_what_fit_records():
    c = TrainConfig(epochs=3, lr=0.2, milestones=(0.25,), betas=(0.8, 0.9), amp="bf16", device="cpu")
    back = TrainConfig.from_record(json.loads(json.dumps(dataclasses.asdict(c))), source="x.json")
    assert back == c and isinstance(back.milestones, tuple) and isinstance(back.lr, float)


# ---- the CLI's options come from TrainConfig -----------------------------------------

# TrainConfig fields `resgrad train` does not offer (the He et al. recipe is fixed there;
# Python callers and the experiments set them).
NOT_ON_CLI = {"momentum", "weight_decay", "nesterov", "milestones", "gamma", "warmup_lr", "eval_batch_size",
              "optimizer", "betas", "warmup_shape"}


def _train_params():
    return {p.name: p for p in get_command(app).commands["train"].params}


def _differences(params, defaults):
    """The options whose default or help is not TrainConfig's (CONFIG_OPTIONS names them)."""
    from resgrad.cli.train import CONFIG_OPTIONS, checkpoint_option

    bad = []
    for name in CONFIG_OPTIONS:
        default = params[name].default
        if name == "checkpoint_every":  # a string option, for the deprecated 500s/10m forms
            same = checkpoint_option(default) == {"checkpoint_every": defaults[name]}
        else:
            same = default == defaults[name] and type(default) is type(defaults[name])
        if not same or not params[name].help.startswith(TrainConfig.help(name)):
            bad.append(name)
    return bad


def test_every_cli_default_is_the_trainconfig_default():
    from resgrad.cli.train import CONFIG_OPTIONS

    params = _train_params()
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(CONFIG_OPTIONS) | NOT_ON_CLI == set(defaults), "a TrainConfig field is neither offered nor listed"
    assert not set(CONFIG_OPTIONS) & NOT_ON_CLI
    assert _differences(params, defaults) == []
    # and the other way: no option named after a field that CONFIG_OPTIONS does not list
    assert not (set(params) & set(defaults)) - set(CONFIG_OPTIONS)


def test_the_default_check_catches_a_drifted_default():
    # Not vacuous: a TrainConfig default the CLI did not follow is named.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert _differences(_train_params(), {**defaults, "epochs": 165, "lr": 0.2}) == ["epochs", "lr"]
    assert _differences(_train_params(), {**defaults, "checkpoint_every": 2}) == ["checkpoint_every"]


def test_every_field_declares_its_comment():
    for f in dataclasses.fields(TrainConfig):
        assert len(TrainConfig.help(f.name)) > 15, f.name  # KeyError: a field without its comment


# ---- --checkpoint-every 500s is deprecated -------------------------------------------


def _cfg(out):
    return json.loads((out / "config.json").read_text())["config"]


def test_checkpoint_every_steps_form_warns_once_naming_the_new_flag(tmp_path):
    base = ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--device", "cpu"]
    old = runner.invoke(app, [*base, "--checkpoint-every", "3s", "--out", str(tmp_path / "a")])
    assert old.exit_code == 0, old.stderr
    warn = [s for s in old.stderr.splitlines() if "deprecated" in s]
    assert warn == ["warning: --checkpoint-every 3s is deprecated; use --checkpoint-steps 3"], old.stderr
    new = runner.invoke(app, [*base, "--checkpoint-steps", "3", "--out", str(tmp_path / "b")])
    assert new.exit_code == 0 and "deprecated" not in new.stderr
    assert _cfg(tmp_path / "a")["checkpoint_steps"] == _cfg(tmp_path / "b")["checkpoint_steps"] == 3
    mins = runner.invoke(app, [*base, "--checkpoint-every", "2.5m", "--out", str(tmp_path / "c")])
    assert "use --checkpoint-minutes 2.5" in mins.stderr and _cfg(tmp_path / "c")["checkpoint_minutes"] == 2.5


def test_checkpoint_every_in_epochs_does_not_warn_and_a_cadence_given_twice_is_refused(tmp_path):
    import warnings

    from resgrad.cli.train import checkpoint_option

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoint_option("2") == {"checkpoint_every": 2}
    with pytest.warns(DeprecationWarning, match="use --checkpoint-steps 500"):
        assert checkpoint_option("500s") == {"checkpoint_steps": 500}
    res = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--checkpoint-every", "3s",
                              "--checkpoint-steps", "4", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "given twice" in res.stderr


# ---- one device resolver ---------------------------------------------------------------


def test_one_device_resolver_for_fit_and_the_cli():
    from resgrad.cli._common import UsageError
    from resgrad.cli._common import resolve_device as cli_resolve
    from resgrad.train import resolve_device

    has_cuda = torch.cuda.is_available()
    assert resolve_device("auto") == torch.device("cuda" if has_cuda else "cpu")
    assert resolve_device(" CPU ") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    refused = ["tpu", "meta", "xla", "cuda:x", "", "cpu cuda"]
    refused += [] if has_cuda else ["cuda", "cuda:0"]
    refused += [f"cuda:{torch.cuda.device_count()}"] if has_cuda else []
    mps = getattr(torch.backends, "mps", None)
    refused += [] if (mps and mps.is_available()) else ["mps"]
    for d in refused:
        with pytest.raises(ValueError) as e:
            resolve_device(d)
        assert len(str(e.value).splitlines()) == 1 and str(e.value).startswith("device")
        with pytest.raises(UsageError, match="^--device"):
            cli_resolve(d)
    for d in ["auto", "cpu", "CPU", *(["cuda", "cuda:0"] if has_cuda else [])]:
        assert cli_resolve(d) == str(resolve_device(d))  # the CLI passes on what fit would use


def test_fit_refuses_a_device_the_cli_refuses():
    # Before, fit took torch.device("meta") (then failed deep inside) while the CLI refused it.
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda, cuda:N or mps, received 'meta'"):
        fit(_net(), _data(), TrainConfig(epochs=1, device="meta"), progress=False)


# ---- one signal catcher, one exception module, one int check --------------------------


def test_one_signal_catcher_for_train_and_the_executors():
    import resgrad.executors as ex
    import resgrad.stopping as stopping
    import resgrad.train.loop as loop
    from resgrad.executors import _base

    assert ex.StopSignals is stopping.StopSignals is loop.StopSignals
    assert _base.STOP_SIGNALS is stopping.STOP_SIGNALS
    assert {s.name for s in stopping.STOP_SIGNALS} == {"SIGTERM", "SIGINT", "SIGUSR1"}
    assert resgrad.train.Preempted is stopping.Preempted and issubclass(ex.Preempted, resgrad.train.Preempted)
    assert resgrad.train.NonFiniteLoss is stopping.NonFiniteLoss
    train_src = "".join(p.read_text() for p in (SRC / "train").glob("*.py"))
    assert "signal.signal(" not in train_src  # no second catcher inside train


def test_the_catcher_records_or_raises_and_restores_the_handlers():
    from resgrad.stopping import ExecutorPreempted, StopSignals

    before = signal.getsignal(signal.SIGUSR1)
    seen = []
    with StopSignals(forward=True, on_signal=seen.append) as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal: the first one is kept
    assert stop.signum == signal.SIGUSR1 and seen == [signal.SIGUSR1, signal.SIGTERM]
    assert signal.getsignal(signal.SIGUSR1) is before
    with pytest.raises(ExecutorPreempted, match="stopped on SIGTERM; rerun the same command") as e, StopSignals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert e.value.signum == signal.SIGTERM and signal.getsignal(signal.SIGUSR1) is before


def test_preemption_exceptions_survive_a_pickle_round_trip():
    from resgrad.stopping import ExecutorPreempted, NonFiniteLoss, Preempted

    for exc in (Preempted("p", signum=15, epoch=2, step=7), ExecutorPreempted("e", signum=10),
                NonFiniteLoss("n", epoch=1, step=3)):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and vars(back) == vars(exc)


def test_stopping_and_checks_are_torch_free_and_executors_base_skips_train():
    code = ("import importlib.util, sys\n"
            "for name in ('stopping', '_checks'):\n"
            f"    spec = importlib.util.spec_from_file_location(name, {str(SRC)!r} + '/' + name + '.py')\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "assert 'torch' not in sys.modules and not any(m.startswith('resgrad') for m in sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
    # resgrad.train without the package __init__ (which imports torch today): TrainConfig,
    # RUN_KIND and the exceptions come without torch; fit pulls it in on first use.
    code = ("import sys, types\n"
            f"pkg = types.ModuleType('resgrad'); pkg.__path__ = [{str(SRC)!r}]; sys.modules['resgrad'] = pkg\n"
            "from resgrad.train import TrainConfig, RUN_KIND, Preempted\n"
            "TrainConfig(epochs=2)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "from resgrad.train import fit\n"
            "assert 'torch' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    tree = ast.parse((SRC / "executors" / "_base.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "train" not in modules and "stopping" in modules


def test_int_but_not_bool():
    assert is_int(3) and is_int(-1) and not is_int(True) and not is_int(3.0) and not is_int("3")
    assert is_number(2.5) and is_number(2) and not is_number(False) and not is_number(None)
    assert is_positive(1e-9) and not is_positive(0) and not is_positive(float("inf")) and not is_positive(True)
    for bad in (dict(epochs=True), dict(batch_size=False), dict(momentum=True), dict(lr=True)):
        with pytest.raises(ValueError, match="received True|received False"):
            TrainConfig(**bad)
    cli_src = (SRC / "cli" / "train.py").read_text() + (SRC / "cli" / "_common.py").read_text()
    train_src = "".join(p.read_text() for p in (SRC / "train").glob("*.py"))
    # the int-but-not-bool idiom is spelled only in _checks (a bare "is it a bool" check is fine)
    assert not re.findall(r"(?:not |or )isinstance\([^()]*,\s*bool\)", cli_src + train_src)


# ---- files of one sitting ------------------------------------------------------------


def test_no_file_of_train_is_over_500_lines():
    files = sorted((SRC / "train").glob("*.py"))
    assert {p.stem for p in files} >= {"config", "loop", "resume", "rng", "device"}
    for p in files:
        n = len(p.read_text().splitlines())
        assert n <= 500, f"{p.name} has {n} lines"


def test_every_name_importable_from_resgrad_train_is_the_object_not_a_submodule():
    import importlib
    import types

    import resgrad.train as train

    for p in (SRC / "train").glob("*.py"):  # every submodule loaded: none may shadow a public name
        importlib.import_module(f"resgrad.train.{p.stem}" if p.stem != "__init__" else "resgrad.train")
    for name in [*train.__all__, "_evaluate", "_on_device", "_resolve_device"]:
        assert not isinstance(getattr(train, name), types.ModuleType), name
    assert train.evaluate is resgrad.evaluate and train.fit is resgrad.fit and train.load_run is resgrad.load_run
    assert train._on_device is train.device.on_device and train.RUN_KIND == "resgrad.train"
