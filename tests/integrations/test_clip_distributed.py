"""The framework callbacks on 2 CPU ranks (gloo, started by torchrun): Lightning under DDP
and FSDP2 (ModelParallelStrategy + fully_shard), the HF Trainer under DDP, with gradient
accumulation (2 micro-batches per rank) under DDP. Pre- and
post-clip norms equal a 1-process run on the same global batch, the pre-clip ones add
up to the Trainer's grad_norm and the post-clip ones to the clipping threshold.

Not covered on CPU: the HF Trainer under FSDP2 (with ``use_cpu=True`` transformers 5.25
wraps the model in DDP whatever ``fsdp=`` says)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resgrad

WORKER = Path(__file__).with_name("_dist_integ_worker.py")
TIMEOUT_S = 240
CLIP = 1e-2  # the worker's clipping threshold

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, mode: str, single: bool) -> dict:
    src = str(Path(resgrad.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    if single:
        cmd = [sys.executable, str(WORKER), str(out), mode, "--single"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(out), mode]
    # A session of its own: on a timeout or failure the whole group (torchrun and both
    # ranks) is killed, so no rank outlives the test.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log = proc.communicate(timeout=TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        pytest.fail(f"{mode} timed out after {TIMEOUT_S}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    if proc.returncode:
        pytest.fail(f"{mode} failed (rc {proc.returncode}):\n{log[-4000:]}")
    return json.loads((out / f"{mode}{'_single' if single else ''}.json").read_text())


def _steps(got: dict, mode: str) -> dict:
    if mode == "hf_ddp":
        return dict(enumerate(got["logs"]))
    return {int(k): v for k, v in got["logged"].items()}


def _total(h: dict, family: str) -> float:
    return math.sqrt(sum(v * v for k, v in h.items() if k.startswith(f"resgrad/{family}/")))


@pytest.mark.slow  # 3 x 16 s of torchrun; the monitor's own DDP/FSDP2 reduction is in the default run
@pytest.mark.parametrize("mode", ["pl_ddp", "pl_fsdp", "hf_ddp"])
def test_two_ranks_equal_one_process(mode, tmp_path, one_thread):
    if mode == "pl_fsdp":
        pytest.importorskip("torch.distributed.fsdp", reason="FSDP2")
        from torch.distributed import fsdp

        if not hasattr(fsdp, "fully_shard"):
            pytest.skip("this torch has no FSDP2 fully_shard")
    dist = _run(tmp_path, mode, single=False)
    ref = _run(tmp_path, mode, single=True)
    got, want = _steps(dist, mode), _steps(ref, mode)
    assert sorted(got) == sorted(want) == [0, 1, 2]
    for s, h in got.items():
        assert set(h) == set(want[s])
        pre = {k for k in h if k.startswith("resgrad/grad_norm/")}
        post = {k for k in h if k.startswith("resgrad/grad_norm_post_clip/")}
        assert pre and len(pre) == len(post)
        for k, v in h.items():
            assert v == pytest.approx(want[s][k], rel=1e-5, abs=1e-12), (s, k)
        assert _total(h, "grad_norm") > 10 * CLIP  # clipped
        assert _total(h, "grad_norm_post_clip") == pytest.approx(CLIP, rel=1e-5)
        if mode == "hf_ddp":
            assert _total(h, "grad_norm") == pytest.approx(h["grad_norm"], rel=1e-5)
    if mode == "pl_fsdp":  # the parameters were DTensor shards: the shard path was measured
        assert dist["sharded"] == 6
