"""The README's HF Trainer path to ``resgrad watch``: a TrainerCallback appending each ``on_log``
line to monitor.jsonl; the server reads its norms (equal to the Trainer's log history) and its loss."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from resgrad.integrations.hf import GradientMonitorCallback  # noqa: E402
from resgrad.watch.follow import RunFiles  # noqa: E402

N, T, V = 8, 12, 64


class _Tokens(torch.utils.data.Dataset):
    def __init__(self):
        self.ids = torch.randint(0, V, (N, T), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class WatchFile(transformers.TrainerCallback):
    """The snippet of the README: one JSON line per Trainer log."""

    def __init__(self, path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kw):
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": state.global_step, **(logs or {})}) + "\n")


def test_an_hf_trainer_run_is_watched_through_its_log_lines(tmp_path, one_thread):
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=16, n_layer=2, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=N, max_steps=4, logging_steps=2,
        learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True)
    run = tmp_path / "run"
    run.mkdir()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens())
    GradientMonitorCallback(activations="blocks").add_to(trainer)
    trainer.add_callback(WatchFile(run / "monitor.jsonl"))
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    d = RunFiles(run).data(0)
    assert [[s, k] for s, k, _ in d["losses"]] == [[h["step"], "loss"] for h in history]
    assert [v for _, _, v in d["losses"]] == [h["loss"] for h in history]
    want = {(h["step"], k.split("/", 2)[2]): v for h in history for k, v in h.items()
            if k.startswith("resgrad/grad_norm/")}
    got = {(r[0], r[2]): r[3] for r in d["rows"] if r[1] == "param"}
    assert want and got == want
    assert {r[1] for r in d["rows"]} >= {"param", "input"}
