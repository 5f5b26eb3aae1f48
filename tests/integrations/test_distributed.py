"""DDP and FSDP2 on CPU with 2 gloo processes: the monitor's values equal a
single-process run on the same global batch, with one collective per measured step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import resgrad
from resgrad.probes import GradientMonitor

WORKER = Path(__file__).with_name("_dist_worker.py")
TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(mode: str, out: Path, world: int = 2) -> dict:
    port = _free_port()
    src = str(Path(resgrad.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), str(port), str(out), mode],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    logs = []
    try:
        for p in procs:
            try:
                logs.append(p.communicate(timeout=TIMEOUT_S)[0])
            except subprocess.TimeoutExpired:
                pytest.fail(f"{mode} rank timed out after {TIMEOUT_S}s")
        if any(p.returncode for p in procs):
            pytest.fail(f"{mode} ranks failed:\n" + "\n".join(log[-3000:] for log in logs))
    finally:
        for p in procs:  # never leave a rank behind, whatever happened above
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    return json.loads((out / f"{mode}.json").read_text())


def _single_process() -> tuple[list[dict], list[dict[str, float]]]:
    """The reference: one process, the global batch, plain autograd norms beside it."""
    torch.manual_seed(0)
    model = resgrad.build("resmlp", depth=3, width=16, in_features=8, num_classes=3)
    xs = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))
    ys = torch.randint(0, 3, (2, 16), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    with GradientMonitor(model, activations=True) as mon:
        for step in range(2):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xs[step]), ys[step]).backward()
            grads.append({n: float(p.grad.norm()) for n, p in model.named_parameters()})
            mon.step()
            opt.step()
        return mon.records, grads


def _by_key(rows):
    return {(r["step"], r["kind"], r["name"]): r for r in rows}


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_gloo_ranks_equal_one_process(mode, tmp_path, one_thread):
    if mode == "fsdp":
        try:
            from torch.distributed.fsdp import fully_shard  # noqa: F401
        except ImportError:
            pytest.skip("this torch has no FSDP2 fully_shard")
    got = _run_ranks(mode, tmp_path)
    ref_rows, ref_grads = _single_process()
    ref, dist_rows = _by_key(ref_rows), _by_key(got["rows"])
    assert set(dist_rows) == set(ref)
    for key, r in ref.items():
        assert dist_rows[key]["norm"] == pytest.approx(r["norm"], rel=1e-5), key
        assert dist_rows[key]["numel"] == r["numel"], key
        assert dist_rows[key]["nonfinite"] == r["nonfinite"], key
    for step, grads in enumerate(ref_grads):  # and against plain autograd
        for name, g in grads.items():
            assert dist_rows[(step, "param", name)]["norm"] == pytest.approx(g, rel=1e-5)
    # FSDP2: every gradient is a DTensor shard here, so the shard path was the one measured
    assert got["sharded"] == (len(ref_grads[0]) if mode == "fsdp" else 0)
    assert got["calls"] == [1, 1]  # one all-reduce per measured step, not one per tensor
