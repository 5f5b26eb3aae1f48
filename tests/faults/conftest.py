"""Shared pieces of the fault-injection suite: tiny runs, CLI subprocesses, root-only mounts."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import resgrad
from resgrad import TrainConfig

SPEC = {"name": "resmlp", "kwargs": {"depth": 3, "width": 16, "in_features": 16, "num_classes": 4}}
STEPS_PER_EPOCH = 6  # 96 examples / batch 16


def data() -> resgrad.DataBundle:
    return resgrad.load_data("synthetic", shape=(16,), num_classes=4, n_train=96, n_test=32, seed=1)


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return resgrad.build("resmlp", **SPEC["kwargs"])


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.05, "device": "cpu", **kw})


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


TRAIN = ["train", "resmlp-3x16", "--data", "synthetic", "--epochs", "3", "--batch-size", "16", "--lr", "0.05",
         "--device", "cpu"]


def cli(*args: str, env: dict | None = None, timeout: int = 180, **kw) -> subprocess.CompletedProcess:
    """``python -m resgrad ARGS`` with the suite's cache, one thread, no colour."""
    return subprocess.run([sys.executable, "-m", "resgrad", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def cli_here(*args: str) -> subprocess.CompletedProcess:
    """``resgrad ARGS`` run in this process (typer's CliRunner: the same root group and one-line
    errors as ``python -m resgrad``), without the ~4 s a fresh interpreter spends importing torch.
    For commands that only read a folder (diagnose, paths); those that train, take signals or
    hold locks keep :func:`cli`. An exception that escaped the command is returned as a traceback
    on stderr, which :func:`one_line` refuses."""
    import traceback

    from typer.testing import CliRunner

    from resgrad.cli import app

    r = CliRunner().invoke(app, list(args))
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "".join(traceback.format_exception(r.exception))
        return subprocess.CompletedProcess(list(args), 1 if r.exit_code == 0 else r.exit_code, r.stdout, err)
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, err)


def popen(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "resgrad", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def one_line(r: subprocess.CompletedProcess) -> str:
    """The error a command printed: exactly one line besides its progress lines, no traceback."""
    err = [line for line in r.stderr.strip().splitlines() if not re.match(r"epoch \d+/\d+ ", line)]
    assert "Traceback" not in r.stderr and len(err) == 1, r.stderr
    return err[0]


@pytest.fixture(autouse=True)
def _suite_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RESGRAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the subprocesses: one thread each on a shared machine
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` (root only; the caller skips otherwise), unmounted on exit."""
    where = Path("/tmp") / f"resgrad-tmpfs-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def can_mount() -> str | None:
    """None when tmpfs mounts work here, else the reason they do not."""
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs (full disk, read-only storage)"
    if shutil.which("mount") is None:
        return "no mount command"
    try:
        with tmpfs("64k"):
            pass
    except (subprocess.CalledProcessError, OSError) as e:
        return f"cannot mount a tmpfs here ({e})"
    return None
