"""Pre-clip and post-clip norms in Lightning, against torch.autograd.grad of the
accumulated loss on a copy of the weights and against the clipping formula; under
gradient accumulation, bf16 autocast and fp16 with a GradScaler (CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

L = pytest.importorskip("lightning.pytorch")

from resgrad.integrations.lightning import GradientMonitorCallback  # noqa: E402

N = 24  # examples: one optimizer step sees them all
CLIP = 1e-2  # far below the gradient's norm: every step is clipped


class _Net(L.LightningModule):
    def __init__(self, accumulate: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
        self.accumulate = accumulate
        self.start: dict[int, dict[str, torch.Tensor]] = {}  # weights at the start of each optimizer step

    def on_train_batch_start(self, batch, i):
        if i % self.accumulate == 0:
            self.start[self.global_step] = {k: v.detach().clone() for k, v in self.named_parameters()}

    def training_step(self, batch, i):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _Memory(L.loggers.Logger):
    """A logger that keeps what it is given, by step."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: dict[int, dict[str, float]] = {}

    @property
    def name(self):
        return "memory"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, *a, **k):
        pass

    def log_metrics(self, metrics, step=None):
        self.logged.setdefault(int(step), {}).update(metrics)


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.utils.data.TensorDataset(torch.randn(N, 6, generator=g) * 3, torch.randint(0, 3, (N,), generator=g))


def _autograd(weights: dict[str, torch.Tensor], autocast: torch.dtype | None = None,
              accumulate: int = 1) -> dict[str, float]:
    """‖∂L/∂w‖ of the mean loss over all N examples (what accumulating k equal micro-batches
    of loss/k gives), by torch.autograd.grad on a functional copy: no module, no hook.
    Under autocast the micro-batches are kept (the same low-precision ops as training)."""
    x, y = _data().tensors
    w = {k: v.clone().requires_grad_() for k, v in weights.items()}
    loss = 0
    for xs, ys in zip(x.chunk(accumulate), y.chunk(accumulate), strict=True):
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            h = torch.tanh(F.linear(xs, w["net.0.weight"], w["net.0.bias"]))
            h = torch.tanh(F.linear(h, w["net.2.weight"], w["net.2.bias"]))
            out = F.linear(h, w["net.4.weight"], w["net.4.bias"])
            loss = loss + F.cross_entropy(out, ys) / accumulate
    grads = torch.autograd.grad(loss, list(w.values()))
    return {k: float(g.double().norm()) for k, g in zip(w, grads, strict=True)}


def _fit(accumulate: int, clip: str = "both", steps: int = 3, clip_val: float | None = CLIP, **trainer_kw):
    net = _Net(accumulate)
    mem = _Memory()
    cb = GradientMonitorCallback(clip=clip)
    trainer = L.Trainer(max_steps=steps, accumulate_grad_batches=accumulate, gradient_clip_val=clip_val,
                        callbacks=[cb], logger=mem, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        **trainer_kw)
    trainer.fit(net, torch.utils.data.DataLoader(_data(), batch_size=N // accumulate, shuffle=False))
    return net, mem, cb


def _family(h: dict, family: str) -> dict[str, float]:
    pre = f"resgrad/{family}/"
    return {k[len(pre):]: v for k, v in h.items() if k.startswith(pre)}


@pytest.mark.parametrize("accumulate", [1, 2, 3, 4])
def test_pre_clip_is_the_accumulated_gradient_and_post_clip_is_capped(one_thread, accumulate):
    net, mem, cb = _fit(accumulate)
    assert sorted(mem.logged) == [0, 1, 2]
    names = [n for n, _ in net.named_parameters()]
    for step, h in mem.logged.items():
        pre, post = _family(h, "grad_norm"), _family(h, "grad_norm_post_clip")
        assert sorted(pre) == sorted(post) == sorted(names)
        assert pre == pytest.approx(_autograd(net.start[step]), rel=1e-5), step
        total = math.sqrt(sum(v * v for v in pre.values()))
        assert total > 10 * CLIP
        coef = CLIP / (total + 1e-6)  # torch.nn.utils.clip_grad_norm_
        assert post == pytest.approx({n: v * coef for n, v in pre.items()}, rel=1e-5)
        assert math.sqrt(sum(v * v for v in post.values())) == pytest.approx(CLIP, rel=1e-5)
    for kind in ("param", "param_post_clip"):  # once per optimizer step
        rows = [r for r in cb.records if r["kind"] == kind]
        assert len(rows) == 3 * len(names) and sorted({r["step"] for r in rows}) == [0, 1, 2]
    assert "configure_gradient_clipping" not in net.__dict__  # unwrapped after fit


def test_choices_and_no_clipping(one_thread):
    _, mem, cb = _fit(1, clip="post", steps=1)
    assert _family(mem.logged[0], "grad_norm_post_clip") and not _family(mem.logged[0], "grad_norm")
    assert {r["kind"] for r in cb.records} == {"param_post_clip"}
    _, mem, cb = _fit(1, clip="pre", steps=1)
    assert _family(mem.logged[0], "grad_norm") and not _family(mem.logged[0], "grad_norm_post_clip")
    _, mem, _ = _fit(1, clip="both", steps=2, clip_val=None)  # nothing clips: post == pre
    for h in mem.logged.values():
        assert _family(h, "grad_norm") == pytest.approx(_family(h, "grad_norm_post_clip"), rel=1e-12)
    with pytest.raises(ValueError, match=r"clip must be .*received 'after'"):
        GradientMonitorCallback(clip="after")


def test_bf16_autocast(one_thread):
    """precision='bf16-mixed' on CPU: equal to an autocast autograd reference within 1e-3 and
    to the fp32 one within 5e-2 (bf16 keeps 8 mantissa bits)."""
    net, mem, _ = _fit(2, clip="pre", steps=2, precision="bf16-mixed")
    for step, h in mem.logged.items():
        pre = _family(h, "grad_norm")
        assert pre == pytest.approx(_autograd(net.start[step], torch.bfloat16, 2), rel=1e-3)
        assert pre == pytest.approx(_autograd(net.start[step]), rel=5e-2)


def test_fp16_with_a_grad_scaler_on_cpu(one_thread):
    """fp16 autocast with a GradScaler at 2**12 (CPU): the norms are unscaled, before and after
    clipping; equal to an fp16-autocast reference within 1e-3 (fp16: 11 mantissa bits)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    net, mem, cb = _fit(2, clip="both", steps=2, plugins=[plugin])
    assert cb.monitor.scaler is scaler and scaler.is_enabled() and scaler.get_scale() == 2.0 ** 12
    for step, h in mem.logged.items():
        pre, post = _family(h, "grad_norm"), _family(h, "grad_norm_post_clip")
        ref = _autograd(net.start[step], torch.float16, 2)
        assert pre == pytest.approx(ref, rel=1e-3), step
        assert pre == pytest.approx(_autograd(net.start[step]), rel=1e-2)
        assert math.sqrt(sum(v * v for v in post.values())) == pytest.approx(CLIP, rel=1e-5)


def test_log_dict_route_reaches_callback_metrics(one_thread):
    """log_via='log_dict' with clip='both': logged from inside configure_gradient_clipping,
    both names land in trainer.callback_metrics with the same values the records hold."""
    net = _Net(1)
    cb = GradientMonitorCallback(clip="both", log_via="log_dict")
    trainer = L.Trainer(max_steps=2, gradient_clip_val=CLIP, callbacks=[cb], logger=False, log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(net, torch.utils.data.DataLoader(_data(), batch_size=N))
    got = {k: float(v) for k, v in trainer.callback_metrics.items()}
    last = {(r["kind"], r["name"]): r["norm"] for r in cb.records if r["step"] == 1}
    assert got["resgrad/grad_norm/net.0.weight"] == pytest.approx(last[("param", "net.0.weight")], rel=1e-6)
    assert got["resgrad/grad_norm_post_clip/net.0.weight"] == pytest.approx(
        last[("param_post_clip", "net.0.weight")], rel=1e-6)


class _Manual(_Net):
    def __init__(self) -> None:
        super().__init__(1)
        self.automatic_optimization = False

    def training_step(self, batch, i):
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(super().training_step(batch, i))
        opt.step()


def test_manual_optimization_logs_without_post_clip_and_says_so(one_thread):
    mem = _Memory()
    cb = GradientMonitorCallback(clip="both")
    trainer = L.Trainer(max_steps=2, callbacks=[cb], logger=mem, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.warns(UserWarning, match="no post-clip gradient norms") as got:
        trainer.fit(_Manual(), torch.utils.data.DataLoader(_data(), batch_size=N))
    assert sum("post-clip" in str(w.message) for w in got) == 1
    assert sorted(mem.logged) == [0, 1]
    for h in mem.logged.values():
        assert _family(h, "grad_norm") and not _family(h, "grad_norm_post_clip")
