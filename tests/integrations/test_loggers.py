"""Loggers for plain loops: values read back from each backend equal plain autograd;
histograms skip NaN/Inf and count them."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from typing import Any

import pytest
import torch
from torch import nn

from resgrad.integrations.loggers import (
    CSVLogger,
    JSONLLogger,
    MLflowLogger,
    WandbLogger,
    make_logger,
    records_to_tensorboard,
)
from resgrad.probes import GradientMonitor


def _monitored_steps(steps: int = 2):
    """A small model trained a few steps under the monitor; the reference grad norms per step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = []
    mon = GradientMonitor(model, activations=True).attach()
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        ref.append({n: float(p.grad.norm()) for n, p in model.named_parameters()})
        mon.step()
        opt.step()
    mon.detach()
    return model, mon, ref


def test_jsonl_and_csv_values_and_histograms(tmp_path):
    model, mon, ref = _monitored_steps()
    with JSONLLogger(tmp_path / "m.jsonl") as jl, CSVLogger(tmp_path / "m.csv") as cl:
        assert jl.write(mon) == 2 and cl.write(mon) == 2
        assert jl.write(mon) == 0  # nothing new: nothing written twice
        model[0].weight.grad[0, 0] = math.nan
        model[0].weight.grad[1, 1] = math.inf
        counts = jl.write_histograms(model, step=1)
    assert counts["0.weight"] == 2 and counts["0.bias"] == 0
    lines = [json.loads(s) for s in (tmp_path / "m.jsonl").read_text().splitlines()]
    metrics = [r for r in lines if "histogram" not in r and "resgrad/grad_norm/0.weight" in r]
    for step, r in enumerate(metrics):
        assert r["step"] == step
        for name, g in ref[step].items():
            assert r[f"resgrad/grad_norm/{name}"] == pytest.approx(g, rel=1e-6)
        assert r["resgrad/nonfinite/total"] == 0
    hist = {r["histogram"]: r for r in lines if "histogram" in r}
    assert sum(hist["resgrad/grad_hist/0.weight"]["counts"]) == model[0].weight.numel() - 2
    assert [r for r in lines if "resgrad/grad_hist/0.weight/nonfinite" in r][0]["resgrad/grad_hist/0.weight/nonfinite"] == 2
    with open(tmp_path / "m.csv") as f:
        rows = list(csv.DictReader(f))
    got = {(int(r["step"]), r["name"]): float(r["value"]) for r in rows}
    assert got[(1, "resgrad/grad_norm/2.bias")] == pytest.approx(ref[1]["2.bias"], rel=1e-6)
    assert (0, "resgrad/act_grad_norm/1") in got


def test_tensorboard_logger_and_export_read_back(tmp_path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    model, mon, ref = _monitored_steps()
    model[2].bias.grad[0] = math.nan
    with make_logger("tensorboard", log_dir=tmp_path / "tb") as tb:
        tb.write(mon)
        tb.write_histograms(model, step=1)
    records_to_tensorboard(mon, tmp_path / "tb2")  # the record export uses the same names
    for d in ("tb", "tb2"):
        acc = ea.EventAccumulator(str(tmp_path / d))
        acc.Reload()
        sc = acc.Scalars("resgrad/grad_norm/0.weight")
        assert [e.step for e in sc] == [0, 1]
        assert sc[1].value == pytest.approx(ref[1]["0.weight"], rel=1e-6)
    acc = ea.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    (h,) = acc.Histograms("resgrad/grad_hist/2.bias")
    assert h.histogram_value.num == model[2].bias.numel() - 1  # the NaN was counted, not binned
    assert acc.Scalars("resgrad/grad_hist/2.bias/nonfinite")[0].value == 1


def test_mlflow_logger_reads_back(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local file store, no server
    from mlflow.tracking import MlflowClient

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    act = nn.ReLU()
    net = nn.Sequential(model, act, nn.Linear(3, 2), act)  # one ReLU called twice: rows "1" and "1#1"
    uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("resgrad-test")
    with mlflow.start_run() as run, GradientMonitor(net, activations=True) as mon:
        net(torch.randn(4, 3)).sum().backward()
        mon.step()
        MLflowLogger(tracking_uri=uri).write(mon)
    client = MlflowClient(tracking_uri=uri)
    hist = client.get_metric_history(run.info.run_id, "resgrad/grad_norm/2.weight")
    assert [m.step for m in hist] == [0]
    assert hist[0].value == pytest.approx(float(net[2].weight.grad.norm()), rel=1e-6)
    keys = client.get_run(run.info.run_id).data.metrics
    assert "resgrad/act_grad_norm/1_1" in keys  # "1#1" is not a valid MLflow key


def test_wandb_missing_or_duck_typed_run():
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ImportError, match=r"pip install 'resgrad\[wandb\]'"):
            WandbLogger()
    else:
        pytest.importorskip("wandb")

    class Run:  # the one method of wandb.sdk.wandb_run.Run the logger calls
        def __init__(self):
            self.calls = []

        def log(self, data, step=None):
            self.calls.append((step, data))

    _, mon, ref = _monitored_steps()
    run = Run()
    WandbLogger(run=run).write(mon)
    assert [s for s, _ in run.calls] == [0, 1]
    assert run.calls[1][1]["resgrad/grad_norm/0.bias"] == pytest.approx(ref[1]["0.bias"], rel=1e-6)
    with pytest.raises(TypeError, match="received object"):
        WandbLogger(run=object())


def test_bad_logger_input(monkeypatch):
    with pytest.raises(ValueError, match="unknown logger 'tb'; choose one of jsonl"):
        make_logger("tb")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"pip install 'resgrad\[mlflow\]'"):
        MLflowLogger(run_id="x")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'resgrad\[tensorboard\]'"):
        make_logger("tensorboard")


def _wandb_history(run_dir, timeout: float = 30.0) -> dict[int, dict[str, Any]]:
    """History rows of an offline run, read from its ``run-*.wandb`` file with wandb's own
    protobuf schema. The file is LevelDB's log format (wandb/sdk/lib: 7-byte ``:W&B``
    header, 32 KiB blocks, records of crc32/length/type); wandb no longer ships a Python
    reader for it, so the framing is read here. Waits for the run's exit record: the
    writer (wandb-core) may still be flushing when ``finish()`` returns."""
    import struct
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while True:
        (path,) = list(run_dir.rglob("run-*.wandb"))
        data = path.read_bytes()
        assert data[:4] == b":W&B", data[:7]
        records, buf, pos = [], b"", 7
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:  # a block's tail too short for a header is zero padding
                pos += left
                continue
            _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if kind == 0:
                pos += left
                continue
            chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
            if kind == 1:  # FULL
                records.append(chunk)
            elif kind == 2:  # FIRST
                buf = chunk
            elif kind == 3:  # MIDDLE
                buf += chunk
            else:  # LAST
                records.append(buf + chunk)
        parsed = []
        for r in records:
            rec = pb.Record()
            rec.ParseFromString(r)
            parsed.append(rec)
        if any(r.WhichOneof("record_type") == "exit" for r in parsed) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows: dict[int, dict[str, Any]] = {}
    for rec in parsed:
        if rec.WhichOneof("record_type") != "history":
            continue
        row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
        rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def test_wandb_offline_run_history_holds_the_norms(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb not installed: pip install 'resgrad[wandb]'")
    for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                 "WANDB_CONFIG_DIR": str(tmp_path / "cfg"), "WANDB_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    model, mon, ref = _monitored_steps()
    model[0].weight.grad[0, 0] = math.nan
    model[0].weight.grad[1, 1] = math.inf
    run = wandb.init(mode="offline", dir=str(tmp_path), project="resgrad-test",
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    try:
        logger = WandbLogger(run=run)
        assert logger.write(mon) == 2
        counts = logger.write_histograms(model, step=1)
    finally:
        run.finish()
        wandb.teardown()  # stops the wandb-core service process this test started
    assert counts["0.weight"] == 2 and counts["2.weight"] == 0
    rows = _wandb_history(tmp_path)
    assert sorted(rows) == [0, 1]
    for step in (0, 1):
        for name, g in ref[step].items():
            assert rows[step][f"resgrad/grad_norm/{name}"] == pytest.approx(g, rel=1e-6), (step, name)
        assert rows[step]["resgrad/nonfinite/total"] == 0
    # The histogram holds the finite values only; the two NaN/Inf are counted beside it.
    assert rows[1]["resgrad/grad_hist/0.weight/_type"] == "histogram"
    assert sum(rows[1]["resgrad/grad_hist/0.weight/values"]) == model[0].weight.numel() - 2
    assert sum(rows[1]["resgrad/grad_hist/2.weight/values"]) == model[2].weight.numel()
    assert rows[1]["resgrad/grad_hist/0.weight/nonfinite"] == 2
    assert rows[1]["resgrad/grad_hist/0.bias/nonfinite"] == 0
