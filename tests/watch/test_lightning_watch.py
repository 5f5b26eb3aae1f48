"""The documented Lightning path to ``resgrad watch``: a callback writing the GradientMonitorCallback's
monitor through a JSONLLogger after each batch; the server reads back the monitor's own rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

L = pytest.importorskip("lightning.pytorch")

from resgrad.integrations.lightning import GradientMonitorCallback  # noqa: E402
from resgrad.integrations.loggers import JSONLLogger  # noqa: E402
from resgrad.watch.follow import RunFiles  # noqa: E402


class _Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def training_step(self, batch, i):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class WatchFile(L.Callback):
    """The snippet of the README: the monitor's rows not written yet, after every batch."""

    def __init__(self, cb, path):
        self.cb, self.logger = cb, JSONLLogger(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.cb.monitor is not None:
            self.logger.write(self.cb.monitor)

    def on_train_end(self, trainer, pl_module):
        self.logger.close()


def test_a_lightning_run_is_watched_through_a_jsonl_logger(tmp_path, one_thread):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(48, 5, generator=g), torch.randint(0, 3, (48,), generator=g))
    cb = GradientMonitorCallback(every=2)
    run = tmp_path / "run"
    trainer = L.Trainer(callbacks=[cb, WatchFile(cb, run / "monitor.jsonl")], logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", devices=1,
                        max_epochs=1)
    trainer.fit(_Net(), torch.utils.data.DataLoader(ds, batch_size=8))
    want = {(r["step"], r["name"]): r["norm"] for r in cb.monitor.records if r["kind"] == "param"}
    got = {(r[0], r[2]): r[3] for r in RunFiles(run).data(0)["rows"] if r[1] == "param"}
    assert want and got == want
    assert sorted({s for s, _ in got}) == [0, 2, 4]
