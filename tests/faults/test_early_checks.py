"""Checks that came too late (issue 24, item 4): every input a run needs is validated before its
first stage, in one line; a model that would not fit in memory is refused with the estimate
(made on the meta device, nothing allocated), unless --force."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

import resgrad
from resgrad.experiments import study
from resgrad.experiments.degradation import DegradationConfig
from resgrad.experiments.driver import check_inputs
from resgrad.train import memory


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resgrad", *args], capture_output=True, text=True, timeout=timeout)


def _error_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# ---- inputs, before the first stage -----------------------------------------------------


def test_a_cifar_study_with_a_missing_data_dir_fails_before_its_first_stage(tmp_path):
    t = time.perf_counter()
    r = _cli("study", "--preset", "he2015-cifar10", "--data-dir", "/nonexistent", "--out", str(tmp_path / "s"))
    took = time.perf_counter() - t
    msg = _error_line(r)
    assert r.returncode == 2 and msg.startswith("error: degradation: CIFAR-10 not found") and "/nonexistent" in msg
    assert not (tmp_path / "s" / "flow").exists()  # the flow stage never started
    assert took < 120, took  # seconds (the interpreter's start on a shared machine), not the flow stage's minutes


def test_a_data_folder_missing_files_is_named_before_any_work(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "data_batch_1").write_bytes(b"")
    config = study.preset("he2015-cifar10", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"^degradation: CIFAR-10 folder .* lacks data_batch_2, .*test_batch"):
        check_inputs(config)
    with pytest.raises(ValueError, match="lacks data_batch_2"):
        resgrad.experiments.run(config, tmp_path / "s", log=None)
    assert not (tmp_path / "s").exists()


def test_a_text_file_is_checked_before_any_work(tmp_path):
    bad = tmp_path / "not-text.bin"
    bad.write_bytes(bytes(range(256)) * 4)
    config = DegradationConfig(data="mnist1d", data_kwargs={"text": str(bad)})
    with pytest.raises(ValueError, match=r"^text file .*not-text.bin.* is not"):
        check_inputs(config)
    with pytest.raises(FileNotFoundError, match="text file .*nothing.txt.* not found"):
        check_inputs(DegradationConfig(data="mnist1d", data_kwargs={"text": str(tmp_path / "nothing.txt")}))


def test_the_offline_presets_pass_the_checks():
    for name in ("quick", "default"):
        check_inputs(study.preset(name))  # nothing to find on disk: MNIST-1D is generated


# ---- the model against memory ------------------------------------------------------------


@pytest.mark.parametrize("name,shape", [("resmlp-64x16", (40,)), ("resnet74", (1, 40)), ("resnet38", (3, 32, 32)),
                                        ("preln-40", (1, 40))])
def test_the_extrapolated_parameter_count_is_the_built_models(monkeypatch, name, shape):
    torch.manual_seed(0)
    real = sum(p.numel() for p in resgrad.build_for(name, shape, 10).parameters())  # a real build, on the CPU
    direct = memory.estimate(name, shape, 10, batch_size=8)
    monkeypatch.setattr(memory, "MAX_META_DEPTH", 20)  # count at two small depths and extrapolate instead
    far = memory.estimate(name, shape, 10, batch_size=8)
    assert far.extrapolated and not direct.extrapolated
    assert far.parameters == direct.parameters == real
    assert far.activation_bytes == direct.activation_bytes > 0


def test_the_activation_count_is_a_real_forward_passes():
    torch.manual_seed(0)
    net = resgrad.build_for("resnet20", (1, 40), 10)
    seen = [0]
    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.__setitem__(0, seen[0] + o.numel())) for m in leaves]
    net.train()
    net(torch.randn(4, 1, 40))
    for h in hooks:
        h.remove()
    est = memory.estimate("resnet20", (1, 40), 10, batch_size=4)
    assert est.activation_bytes == seen[0] * 4  # float32, the whole batch
    n = sum(p.numel() for p in net.parameters())
    assert est.parameters == n and est.state_bytes == n * 4 * 3  # weights, gradients, SGD momentum
    assert memory.estimate("resnet20", (1, 40), 10, batch_size=4, optimizer="adamw").state_bytes == n * 4 * 4


def test_available_memory_is_read_from_proc_meminfo():
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    got = memory.available_bytes("cpu")
    assert got is not None and abs(got - avail) < 0.25 * avail  # read a moment apart on a shared machine


def test_a_model_over_the_free_memory_is_refused_with_the_estimate_unless_forced(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 2**20)  # 10 MB free
    with pytest.raises(ValueError, match=r"^resnet56 would need about .* 853,018 parameters .* at batch 128, but "
                                         r"10 MB is available; .* --force"):
        memory.check_fits("resnet56", (3, 32, 32), 10, batch_size=128, optimizer="sgd", device="cpu")
    est = memory.check_fits("resnet56", (3, 32, 32), 10, batch_size=128, optimizer="sgd", device="cpu", force=True)
    assert est.parameters == 853018
    assert memory.check_fits("resmlp-3x16", (16,), 4, batch_size=16, optimizer="sgd", device="cpu").parameters > 0


# One real process; the other family in-process (the same command and error handling, no second
# interpreter importing torch).
@pytest.mark.parametrize("name, real", [("resmlp-100000000x64", True), ("resnet600002", False)])
def test_train_refuses_a_model_that_cannot_fit_in_one_line(tmp_path, name, real, resgrad_cli):
    t = time.perf_counter()
    args = ("train", name, "--data", "synthetic", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "r"))
    if real:
        r = _cli(*args)
    else:
        code, out, err = resgrad_cli(*args)
        r = subprocess.CompletedProcess(args, code, out, err)
    msg = _error_line(r)
    assert r.returncode == 2 and msg.startswith(f"error: {name} would need about ") and "--force" in msg
    assert "parameters (extrapolated from two small depths)" in msg and "of activations at batch 128" in msg
    assert time.perf_counter() - t < 120 and not (tmp_path / "r").exists()


def test_a_bad_depth_far_too_deep_is_still_the_builders_line(tmp_path):
    with pytest.raises(ValueError, match=r"depth must be 6n\+2 .*received 600001"):
        memory.estimate("resnet600001", (1, 40), 10, batch_size=8)
