"""benchmarks/gpu_monitor.py: the CUDA check script, run here on the CPU (--cpu-smoke)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_monitor.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the script would run")
def test_without_cuda_is_a_one_line_usage_error():
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "usage: no CUDA device visible; run on a CUDA machine, or pass --cpu-smoke"]


@pytest.mark.slow  # about 45 s on 2 shared cores: inductor compiles the model once
def test_cpu_smoke_passes_every_check_and_writes_json(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    p = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--skip-overhead"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((tmp_path / "gpu_monitor.json").read_text())
    assert set(res["checks"]) == {"device_vs_cpu64", "bf16_autocast", "compile_fullgraph", "fsdp2_world1"}
    assert all(c["pass"] for c in res["checks"].values())
    assert sum(line.startswith("PASS ") for line in p.stdout.splitlines()) == 4 and "ALL PASS" in p.stdout
