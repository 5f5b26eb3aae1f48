"""The driver, through a tiny experiment defined here (docs/architecture.md shows the same one).

The experiment: the input gradient of a chain of ``depth`` linear layers whose weights are
``scale`` times the identity, plain (``y = W x`` per layer) and residual (``y = x + W x``), for
``L = sum(output)``. The closed form: ``‖∂L/∂x‖ = scale^depth * sqrt(width)`` plain and
``(1 + scale)^depth * sqrt(width)`` residual, which the test checks the measurement against.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from resgrad.experiments import driver, register
from resgrad.experiments.config import Config as BaseConfig
from resgrad.experiments.config import ConfigError, check_int, check_number
from resgrad.rundir import RunLocked
from resgrad.schema import Result as BaseResult

# ---- the experiment: what a new experiment module holds ---------------------------------

KIND = "resgrad.test-chain"
LABEL = "chain"
CALLS: list[int] = []  # compute calls, so a test can see a reuse


@dataclass
class ChainConfig(BaseConfig):
    """A chain of linear layers at ``scale`` x identity."""

    depth: int = 8  # layers
    width: int = 4  # features per layer
    scale: float = 0.5  # each layer's weight is scale x the identity (dimensionless)
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_int("depth", self.depth, 1)
        check_int("width", self.width, 1)
        check_number("scale", self.scale, lo=0, open_lo=True, rule="a number > 0")


@dataclass
class ChainResult(BaseResult):
    SCHEMA = "resgrad.test-chain"
    EXPERIMENT = "test-chain"

    config: dict
    plain: float  # ‖∂L/∂x‖ of the plain chain
    residual: float  # ‖∂L/∂x‖ of the residual chain
    seconds: float


Config, Result = ChainConfig, ChainResult


class _Skip(nn.Module):
    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


def _chain(c: ChainConfig, residual: bool) -> nn.Module:
    layers = []
    for _ in range(c.depth):
        lin = nn.Linear(c.width, c.width, bias=False)
        nn.init.eye_(lin.weight)
        lin.weight.data.mul_(c.scale)
        layers.append(_Skip(lin) if residual else lin)
    return nn.Sequential(*layers).double()


def compute(config: ChainConfig, ctx: driver.Context) -> ChainResult:
    CALLS.append(1)
    norms = {}
    for arch in ("plain", "residual"):
        x = torch.ones(config.width, dtype=torch.float64, requires_grad=True)
        _chain(config, arch == "residual")(x).sum().backward()
        norms[arch] = float(x.grad.norm())
        ctx.progress(len(norms), 2, arch)
    ctx.log(f"chain of {config.depth}: plain {norms['plain']:.3g}, residual {norms['residual']:.3g}")
    return ChainResult(config=config.to_dict(), plain=norms["plain"], residual=norms["residual"],
                       seconds=ctx.elapsed())


register(KIND, __name__)  # the one registration line (experiments/__init__.py holds the library's)

# ---- the tests ------------------------------------------------------------------------------


def test_the_measurement_is_the_closed_form():
    c = ChainConfig(depth=10, width=9, scale=0.5)
    r = compute(c, driver.Context(run_dir=None))
    assert r.plain == pytest.approx(0.5 ** 10 * 3, rel=1e-12)
    assert r.residual == pytest.approx(1.5 ** 10 * 3, rel=1e-12)


def test_lock_claim_reuse_and_refusal_through_the_driver(tmp_path):
    out = tmp_path / "chain"
    lines, ticks = [], []
    CALLS.clear()
    first = driver.run(ChainConfig(), out, log=lines.append, progress=lambda i, n, what: ticks.append((i, n, what)))
    assert CALLS == [1] and ticks == [(1, 2, "plain"), (2, 2, "residual")]
    assert first.residual == pytest.approx(1.5 ** 8 * 2, rel=1e-12)
    record = json.loads((out / "config.json").read_text())
    assert record["kind"] == KIND and record["config"] == ChainConfig().to_dict() and record["config_version"] == 1
    assert ChainResult.from_json(json.loads((out / "results.json").read_text())) == first  # written, atomically

    again = driver.run(ChainConfig(), out, log=lines.append)  # reused: compute is not called again
    assert CALLS == [1] and again == first and lines[-1] == f"chain already finished in {out}"
    third = driver.run(ChainConfig(), out, log=None, reuse=False)  # reuse=False recomputes
    assert CALLS == [1, 1] and (third.plain, third.residual) == (first.plain, first.residual)

    with pytest.raises(ValueError, match=r"different config \(depth: 8 -> 3\)"):
        driver.run(ChainConfig(depth=3), out, log=None)
    assert ChainConfig.load(out / "config.json") == ChainConfig()  # the folder still holds the first config

    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from resgrad.rundir import RunDir\n"
        f"with RunDir({str(out)!r}).locked():\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            driver.run(ChainConfig(), out, log=None)
    finally:
        holder.kill()
        holder.wait(30)
    assert driver.run(ChainConfig(), out, log=None) == third  # the lock went with its holder; reused


def test_an_executor_given_by_name_is_closed_one_given_is_left_open(tmp_path, monkeypatch):
    from resgrad.executors import LocalExecutor

    closed = []
    monkeypatch.setattr(LocalExecutor, "close", lambda self: closed.append(self))
    seen = []
    monkeypatch.setattr(sys.modules[__name__], "compute",
                        lambda c, ctx: seen.append(ctx.executor) or ChainResult(config=c.to_dict(), plain=0.0,
                                                                                residual=0.0, seconds=0.0))
    driver.run(ChainConfig(), tmp_path / "a", executor="local", log=None)
    assert len(seen) == 1 and isinstance(seen[0], LocalExecutor) and closed == [seen[0]]
    mine = LocalExecutor(1)
    driver.run(ChainConfig(), tmp_path / "b", executor=mine, log=None)
    assert seen[1] is mine and closed == [seen[0]]  # left open for its owner


def test_the_experiment_is_found_from_its_config_type_and_needs_a_folder():
    assert driver.experiment(ChainConfig()) is sys.modules[__name__]
    assert driver.experiment(KIND) is sys.modules[__name__]
    with pytest.raises(ValueError, match="pass out="):
        driver.run(ChainConfig(), None, log=None)  # NEEDS_OUT defaults to True
    with pytest.raises(TypeError, match="no experiment takes a dict"):
        driver.run({"depth": 3}, None)


def test_strict_loading_names_the_file_and_the_dotted_field(tmp_path):
    from resgrad.experiments.flow import FlowConfig
    from resgrad.experiments.study import preset

    ok = FlowConfig().to_dict()
    assert FlowConfig.from_json(ok) == FlowConfig()
    with pytest.raises(ConfigError, match=r"^f.json: field 'depthz' is not a field of FlowConfig"):
        FlowConfig.from_json({**ok, "depthz": [4]}, source="f.json")
    bad = {**ok, "signal": {**ok["signal"], "depths": [2, "x"]}}
    with pytest.raises(ConfigError, match=r"^f.json: field 'signal.depths\[1\]' is \"x\", expected an integer"):
        FlowConfig.from_json(bad, source="f.json")
    with pytest.raises(ConfigError, match=r"^f.json: depths must be integers >= 2"):  # a rule of __post_init__
        FlowConfig.from_json({**ok, "depths": [1]}, source="f.json")
    with pytest.raises(ConfigError, match="newer than this resgrad reads"):
        FlowConfig.from_json(ok, source="f.json", version=2)
    study = preset("quick").to_dict()
    study["degradation"]["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"field 'degradation.train.lr' is \"fast\", expected a number"):
        type(preset("quick")).from_json(study, source="s.json")
    assert type(preset("quick")).from_json(preset("quick").to_dict()) == preset("quick")  # nested, round trip
    with pytest.raises(ConfigError, match=r"field 'spec' is missing"):
        from resgrad.experiments.diagnose import DiagnoseConfig

        DiagnoseConfig.from_json({})
