"""TrainConfig's Transformer recipe (AdamW, linear warm-up), older run folders and studies that
lack fields added later, and the text dataset."""

import json

import pytest
import torch

import resgrad
from resgrad.callbacks import Callback
from resgrad.data import load as load_data
from resgrad.data.text import text
from resgrad.rundir import RunDir
from resgrad.train import TrainConfig, fit


class _Lrs(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, float, tuple]] = []

    def on_before_optimizer_step(self, model, optimizer, step):
        g = optimizer.param_groups[0]
        self.seen.append((type(optimizer).__name__, g["lr"], tuple(g.get("betas", ()))))


def _data():
    return load_data("synthetic", shape=(1, 8), n_train=64, n_test=32)


def test_adamw_with_a_linear_warm_up_steps_the_lr_as_stated():
    cb = _Lrs()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, optimizer="adamw", betas=(0.9, 0.98), weight_decay=0.01,
                      milestones=(), warmup_iters=5, warmup_shape="linear", device="cpu")
    torch.manual_seed(0)
    fit(resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=10), _data(), cfg, callbacks=[cb],
        progress=False)
    assert {s[0] for s in cb.seen} == {"AdamW"} and {s[2] for s in cb.seen} == {(0.9, 0.98)}
    want = [1e-2 * (i + 1) / 5 for i in range(5)] + [1e-2] * 3  # (step + 1) / warmup_iters, then lr
    assert [s[1] for s in cb.seen] == pytest.approx(want, rel=1e-12)


def test_adamw_matches_a_hand_written_loop():
    data = _data()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=3e-3, optimizer="adamw", betas=(0.8, 0.9), weight_decay=0.1,
                      milestones=(), device="cpu")
    torch.manual_seed(0)
    a = resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=10)
    b = resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=10)
    b.load_state_dict(a.state_dict())
    fit(a, data, cfg, progress=False)  # one full batch: the order does not matter
    opt = torch.optim.AdamW(b.parameters(), lr=3e-3, betas=(0.8, 0.9), weight_decay=0.1)
    b.train()
    torch.nn.functional.cross_entropy(b(data.x_train), data.y_train).backward()
    opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [{"optimizer": "lamb"}, {"warmup_shape": "cosine"}, {"betas": (0.9, 1.0)}])
def test_bad_recipe_fields_are_one_line(bad):
    with pytest.raises(ValueError, match="received"):
        TrainConfig(**bad)


def test_a_run_folder_written_before_the_new_fields_resumes(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, device="cpu")
    torch.manual_seed(0)
    model = resgrad.build("resmlp", depth=2, width=8, in_features=8, num_classes=10)
    fit(model, _data(), cfg, out_dir=tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    for k in ("optimizer", "betas", "warmup_shape"):  # as resgrad 0.1 wrote it
        del record["config"][k]
    run.write_config(record)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    mtime = ckpt.stat().st_mtime_ns
    again = fit(model, _data(), cfg, out_dir=tmp_path / "run", progress=False)  # finished: nothing to do
    assert ckpt.stat().st_mtime_ns == mtime and len(again.history) == 1
    with pytest.raises(ValueError, match="optimizer"):  # a field that really differs is still refused
        fit(model, _data(), TrainConfig(epochs=1, batch_size=32, lr=0.05, device="cpu", optimizer="adamw"),
            out_dir=tmp_path / "run", progress=False)


def test_claim_additions_ok_takes_new_fields_and_refuses_changed_ones(tmp_path):
    run = RunDir(tmp_path / "s")
    run.claim({"kind": "k", "config": {"a": 1, "b": {"c": 2}}})
    with pytest.raises(ValueError, match="different config"):
        run.claim({"kind": "k", "config": {"a": 1, "b": {"c": 2}, "new": {"x": 1}}})
    run.claim({"kind": "k", "config": {"a": 1, "b": {"c": 2}, "new": {"x": 1}}}, additions_ok=True)
    assert run.read_config("k")["config"]["new"] == {"x": 1}  # rewritten with the new stage
    with pytest.raises(ValueError, match=r"b\.c: 2 -> 3"):
        run.claim({"kind": "k", "config": {"a": 1, "b": {"c": 3}, "new": {"x": 1}}}, additions_ok=True)


def test_text_windows_are_the_file_shifted_by_one(tmp_path):
    body = ("the quick brown fox jumps over the lazy dog. " * 40).encode()
    p = tmp_path / "t.txt"
    p.write_bytes(body)
    d = text(str(p), seq_len=16, test_fraction=0.25)
    chars = sorted(set(body))
    ids = torch.tensor([chars.index(b) for b in body])
    cut = int(len(body) * 0.75)
    m = (cut - 1) // 16
    torch.testing.assert_close(d.x_train, ids[: m * 16].view(m, 16))
    torch.testing.assert_close(d.y_train, ids[1 : m * 16 + 1].view(m, 16))
    assert d.x_test[0].tolist() == ids[cut : cut + 16].tolist()
    assert d.num_classes == len(chars) and d.info["chars"] == "".join(map(chr, chars))
    assert load_data("text", path=str(p), seq_len=16).num_classes == len(chars)
    with pytest.raises(ValueError, match="too short"):
        text(str(p), seq_len=1000)
    with pytest.raises(FileNotFoundError, match="not found"):
        text(str(tmp_path / "none.txt"))
