"""The Lightning callback against Lightning's own grad_norm and torch.autograd.grad."""

from __future__ import annotations

import csv
import importlib
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

L = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.utilities import grad_norm  # noqa: E402

from resgrad.integrations.lightning import GradientMonitorCallback  # noqa: E402


def _hooks_left(model: nn.Module) -> list[str]:
    return [f"{n}.{a}" for n, m in model.named_modules()
            for a in ("_forward_hooks", "_forward_pre_hooks") if getattr(m, a, None)]


class _Net(L.LightningModule):
    """Records independent references: Lightning's grad_norm at the same hook, and
    activation gradients by torch.autograd.grad on a hook-free functional copy."""

    def __init__(self, accumulate: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        self.accumulate = accumulate
        self.ref_params: dict[int, dict[str, float]] = {}
        self.ref_act_sq: dict[int, dict[str, float]] = {}

    def training_step(self, batch, i):
        x, y = batch
        # hook-free reference: F.linear on the same weights, scaled like Lightning scales the loss
        w0, b0, w2, b2 = (t.detach() for t in (self.net[0].weight, self.net[0].bias,
                                                self.net[2].weight, self.net[2].bias))
        h = F.linear(x, w0, b0).requires_grad_()
        a = torch.tanh(h)
        o = F.linear(a, w2, b2)
        gh, ga, go = torch.autograd.grad(F.cross_entropy(o, y) / self.accumulate, (h, a, o))
        acc = self.ref_act_sq.setdefault(self.global_step, {"net.0": 0.0, "net.1": 0.0, "net.2": 0.0})
        for k, g in zip(("net.0", "net.1", "net.2"), (gh, ga, go), strict=True):
            acc[k] += float(g.double().pow(2).sum())
        return F.cross_entropy(self.net(x), y)

    def on_before_optimizer_step(self, optimizer):
        norms = grad_norm(self, norm_type=2)  # Lightning's utility: keys "grad_2.0_norm/<name>"
        self.ref_params[self.global_step] = {
            k.split("/", 1)[1]: float(v) for k, v in norms.items() if k != "grad_2.0_norm_total"}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(n=48, bs=8):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=bs)


def _trainer(tmp_path, cb, **kw):
    return L.Trainer(callbacks=[cb], logger=L.loggers.CSVLogger(str(tmp_path)), enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", devices=1, **kw)


def _csv_rows(tmp_path):
    (path,) = list(tmp_path.rglob("metrics.csv"))
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("accumulate", "log_via"), [(1, "loggers"), (2, "loggers"), (2, "log_dict")])
def test_logged_norms_equal_lightning_grad_norm_and_autograd(tmp_path, one_thread, accumulate, log_via):
    torch.manual_seed(0)
    model = _Net(accumulate)
    cb = GradientMonitorCallback(activations=True, log_via=log_via)
    trainer = _trainer(tmp_path, cb, max_steps=6, log_every_n_steps=2, accumulate_grad_batches=accumulate)
    trainer.fit(model, _loader())
    steps = sorted({r["step"] for r in cb.records})
    assert steps == [1, 3, 5]  # exactly where Lightning writes step logs
    logged = {int(r["step"]): r for r in _csv_rows(tmp_path) if r.get("resgrad/grad_norm/net.0.weight")}
    assert sorted(logged) == steps
    for s in steps:
        for name, ref in model.ref_params[s].items():
            assert float(logged[s][f"resgrad/grad_norm/{name}"]) == pytest.approx(ref, rel=1e-5), (s, name)
        for mod, sq in model.ref_act_sq[s].items():
            assert float(logged[s][f"resgrad/act_grad_norm/{mod}"]) == pytest.approx(math.sqrt(sq), rel=1e-5)
        assert float(logged[s]["resgrad/nonfinite/total"]) == 0.0
    df = cb.to_pandas()
    assert set(df["step"]) == set(steps) and not _hooks_left(model)
    # Only log_dict puts them in callback_metrics (what ModelCheckpoint/EarlyStopping read).
    assert ("resgrad/grad_norm/net.0.weight" in trainer.callback_metrics) == (log_via == "log_dict")


def test_every_overrides_log_cadence_and_records_blocks(tmp_path, one_thread):
    import resgrad

    class Res(_Net):
        def __init__(self):
            super().__init__()
            self.net = resgrad.build("resmlp", depth=2, width=8, in_features=5, num_classes=3)

        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

    model = Res()
    cb = GradientMonitorCallback(activations="blocks", every=1)
    _trainer(tmp_path, cb, max_steps=3, log_every_n_steps=50).fit(model, _loader())
    assert sorted({r["step"] for r in cb.records}) == [0, 1, 2]
    assert set(cb.last_metrics) >= {"resgrad/block_grad/0", "resgrad/block_grad/1"}
    assert cb.monitor.block_profile(step=2)[0] == pytest.approx(cb.last_metrics["resgrad/block_grad/0"])


def test_bad_input_fails_before_step_zero(tmp_path):
    with pytest.raises(TypeError, match="unknown GradientMonitor option 'activation'"):
        GradientMonitorCallback(activation=True)
    with pytest.raises(ValueError, match="every must be"):
        GradientMonitorCallback(every=0)
    with pytest.raises(ValueError, match="log_via must be 'loggers' or 'log_dict', received 'csv'"):
        GradientMonitorCallback(log_via="csv")
    model = _Net()
    model.requires_grad_(False)
    trainer = _trainer(tmp_path, GradientMonitorCallback(), max_steps=3)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        trainer.fit(model, _loader())
    assert trainer.global_step == 0


def test_missing_lightning_is_one_line(monkeypatch):
    for mod in ("lightning", "lightning.pytorch", "resgrad.integrations.lightning"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)  # import now fails like an absent package
    with pytest.raises(ImportError, match=r"pip install 'resgrad\[lightning\]'"):
        importlib.import_module("resgrad.integrations.lightning")


def test_state_dict_round_trips_through_a_checkpoint(tmp_path, one_thread):
    """Saved by one Trainer, loaded by another's fit(ckpt_path=...): the same state."""
    torch.manual_seed(0)
    cb = GradientMonitorCallback(activations=True)
    trainer = _trainer(tmp_path / "a", cb, max_steps=4, log_every_n_steps=2)
    trainer.fit(_Net(), _loader())
    saved = cb.state_dict()
    assert saved["step"] == 4 and saved["last_metrics"] == cb.last_metrics and saved["last_metrics"]
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)

    cb2 = GradientMonitorCallback(activations=True)
    assert cb2.state_key == cb.state_key  # Lightning matches callback states by this key
    trainer2 = _trainer(tmp_path / "b", cb2, max_steps=4, log_every_n_steps=2)
    trainer2.fit(_Net(), _loader(), ckpt_path=str(ckpt))  # restores, then max_steps is reached
    # last_metrics can only have come from the checkpoint: trainer2 measured no step.
    assert cb2.records == [] and cb2.state_dict() == saved and cb2.last_metrics == cb.last_metrics
    assert cb2.monitor.state_dict() == {"step": 4}
    with pytest.raises(TypeError, match="received list"):
        cb2.load_state_dict([])


class _Timm(L.LightningModule):
    """A timm ResNet, unadapted; keeps the weights each step trained from."""

    def __init__(self) -> None:
        super().__init__()
        timm = pytest.importorskip("timm")
        torch.manual_seed(0)
        self.net = timm.create_model("resnet10t", num_classes=3)
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def training_step(self, batch, i):
        self.weights[self.global_step] = {k: v.clone() for k, v in self.net.state_dict().items()}
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _images(n=16, bs=8):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=bs)


def test_blocks_of_an_unadapted_timm_resnet(tmp_path, one_thread, recwarn):
    """activations='blocks' finds timm's residual blocks through the adapter registry: one
    block_grad per BasicBlock, equal to torch.autograd.grad at each block's input."""
    import timm

    module = _Timm()
    keys = list(module.state_dict())
    cb = GradientMonitorCallback(activations="blocks")
    trainer = _trainer(tmp_path, cb, max_steps=4, log_every_n_steps=2)
    trainer.fit(module, _images())
    assert not [w for w in recwarn if "compile" in str(w.message)]
    logged = {int(r["step"]): r for r in _csv_rows(tmp_path) if r.get("resgrad/block_grad/0")}
    assert sorted(logged) == [1, 3]
    batches = list(_images())
    for step in (1, 3):
        ref_net = timm.create_model("resnet10t", num_classes=3)
        ref_net.load_state_dict(module.weights[step])
        xs = []
        hs = [b.register_forward_pre_hook(lambda m, a, xs=xs: xs.append(a[0]))
              for b in ref_net.modules() if isinstance(b, timm.models.resnet.BasicBlock)]
        x, y = batches[step % 2]
        loss = F.cross_entropy(ref_net(x), y)
        for h in hs:
            h.remove()
        ref = [float(g.norm()) for g in torch.autograd.grad(loss, xs)]
        assert len(ref) == 4
        got = [float(logged[step][f"resgrad/block_grad/{i}"]) for i in range(4)]
        assert got == pytest.approx(ref, rel=1e-4), step
    assert list(module.state_dict()) == keys and not _hooks_left(module)
