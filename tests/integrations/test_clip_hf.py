"""Pre-clip and post-clip norms in the Hugging Face Trainer, against the Trainer's own
logged ``grad_norm`` (the pre-clip total it gets from ``clip_grad_norm_``) and against
plain ``torch.autograd.grad`` of the loss on a copy of the weights, with and without
gradient accumulation and under bf16 autocast."""

from __future__ import annotations

import copy
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from resgrad.integrations.hf import GradientMonitorCallback  # noqa: E402

N, T, V = 12, 10, 48  # examples (one optimizer step sees them all), tokens, vocabulary
MAX_NORM = 1e-2  # well below the gradient's norm (about 3): every step is clipped


def _gpt2() -> transformers.GPT2LMHeadModel:
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=16, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, V, (N, T), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class _Weights(transformers.TrainerCallback):
    """The weights at the start of each optimizer step (keyed by global_step before it)."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_begin(self, args, state, control, model=None, **kw):
        self.at[state.global_step] = copy.deepcopy(model.state_dict())


def _autograd_norms(state_dict: dict[str, torch.Tensor], bf16: bool = False) -> dict[str, float]:
    """‖∂L/∂w‖ of the whole-dataset loss (summed token loss / label tokens, the Trainer's
    normalisation with num_items_in_batch), by torch.autograd.grad on a hook-free copy."""
    model = _gpt2()
    model.load_state_dict(state_dict)
    ids = _Tokens().ids
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(ids.numel())).loss
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()))
    return {n: float(g.double().norm()) for n, g in zip(params, grads, strict=True)}


def _train(tmp_path, clip: str, accumulate: int = 1, steps: int = 3, callbacks_list: bool = False,
           **args_kw):
    model = _gpt2()
    weights = _Weights()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=N // accumulate,
        gradient_accumulation_steps=accumulate, max_steps=steps, logging_steps=1,
        learning_rate=1e-2, max_grad_norm=MAX_NORM, report_to=[], save_strategy="no",
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, **args_kw)
    cb = GradientMonitorCallback(clip=clip)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens(),
                                   callbacks=[weights, *([cb] if callbacks_list else [])])
    if not callbacks_list:
        cb.add_to(trainer)
    trainer.train()
    logs = {h["step"]: h for h in trainer.state.log_history if "grad_norm" in h}
    return cb, logs, weights, trainer


def _family(h: dict, family: str) -> dict[str, float]:
    pre = f"resgrad/{family}/"
    return {k[len(pre):]: v for k, v in h.items() if k.startswith(pre)}


@pytest.mark.parametrize("accumulate", [1, 2, 3, 4])
def test_pre_clip_norms_add_up_to_the_trainers_grad_norm(tmp_path, one_thread, accumulate):
    cb, logs, weights, trainer = _train(tmp_path, "both", accumulate=accumulate)
    assert sorted(logs) == [1, 2, 3]
    names = [n for n, _ in trainer.model.named_parameters()]
    for step, h in logs.items():
        pre, post = _family(h, "grad_norm"), _family(h, "grad_norm_post_clip")
        assert sorted(pre) == sorted(post) == sorted(names)
        total = math.sqrt(sum(v * v for v in pre.values()))
        assert h["grad_norm"] > 10 * MAX_NORM  # the step was clipped
        assert total == pytest.approx(h["grad_norm"], rel=1e-5), step
        # clip_grad_norm_ scales every gradient by max_norm / (total + 1e-6)
        coef = MAX_NORM / (h["grad_norm"] + 1e-6)
        assert post == pytest.approx({n: v * coef for n, v in pre.items()}, rel=1e-5)
        assert math.sqrt(sum(v * v for v in post.values())) == pytest.approx(MAX_NORM, rel=1e-5)
        # the accumulated gradient: that of the loss over the whole step's examples
        assert pre == pytest.approx(_autograd_norms(weights.at[step - 1]), rel=1e-4), step
    # measured once per optimizer step: one row per parameter and kind, at steps 1..3
    for kind in ("param", "param_post_clip"):
        rows = [r for r in cb.records if r["kind"] == kind]
        assert sorted({r["step"] for r in rows}) == [1, 2, 3]
        assert len(rows) == 3 * len(names)


def test_clip_choices_name_their_rows(tmp_path, one_thread):
    cb, logs, _, _ = _train(tmp_path / "pre", "pre", steps=1)
    assert _family(logs[1], "grad_norm") and not _family(logs[1], "grad_norm_post_clip")
    assert {r["kind"] for r in cb.records} == {"param"}
    pre = _family(logs[1], "grad_norm")
    cb, logs, _, _ = _train(tmp_path / "post", "post", steps=1)
    post = _family(logs[1], "grad_norm_post_clip")
    assert post and not _family(logs[1], "grad_norm")
    assert {r["kind"] for r in cb.records} == {"param_post_clip"}
    assert math.sqrt(sum(v * v for v in post.values())) == pytest.approx(MAX_NORM, rel=1e-5)
    assert math.sqrt(sum(v * v for v in pre.values())) == pytest.approx(logs[1]["grad_norm"], rel=1e-5)
    with pytest.raises(ValueError, match=r"clip must be 'pre', 'post' or 'both'.*received 'before'"):
        GradientMonitorCallback(clip="before")


def test_callbacks_list_wraps_the_class_and_unwraps_it(tmp_path, one_thread):
    """Passed in callbacks=[...] (no Trainer known): Accelerator.clip_grad_norm_ is wrapped
    for train() only, and acts on this model's parameters only."""
    accelerate = pytest.importorskip("accelerate")
    before = accelerate.Accelerator.__dict__["clip_grad_norm_"]
    cb, logs, _, _ = _train(tmp_path, "pre", steps=2, callbacks_list=True)
    assert accelerate.Accelerator.__dict__["clip_grad_norm_"] is before
    for h in logs.values():
        total = math.sqrt(sum(v * v for v in _family(h, "grad_norm").values()))
        assert total == pytest.approx(h["grad_norm"], rel=1e-5)


def test_no_clipping_max_grad_norm_zero(tmp_path, one_thread):
    """max_grad_norm=0: the Trainer still calls clip_grad_norm_ (with inf) for grad_norm;
    pre and post are then the same gradient."""
    model = _gpt2()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=N, max_steps=2, logging_steps=1,
        max_grad_norm=0.0, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens())
    GradientMonitorCallback(clip="both", trainer=trainer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "grad_norm" in h]
    assert len(logs) == 2
    for h in logs:
        pre, post = _family(h, "grad_norm"), _family(h, "grad_norm_post_clip")
        assert pre == pytest.approx(post, rel=1e-12)
        assert math.sqrt(sum(v * v for v in pre.values())) == pytest.approx(h["grad_norm"], rel=1e-5)


def test_bf16_autocast(tmp_path, one_thread):
    """bf16 autocast on CPU: no loss scale. The per-layer norms add up to the Trainer's
    grad_norm (the same bf16-autocast gradients) within 1e-5, equal an autocast autograd
    reference within 1e-3 and the fp32 reference within 5e-2 (bf16 has 8 mantissa bits)."""
    cb, logs, weights, _ = _train(tmp_path, "pre", steps=2, bf16=True)
    assert sorted(logs) == [1, 2]
    for step, h in logs.items():
        pre = _family(h, "grad_norm")
        assert math.sqrt(sum(v * v for v in pre.values())) == pytest.approx(h["grad_norm"], rel=1e-5)
        assert pre == pytest.approx(_autograd_norms(weights.at[step - 1], bf16=True), rel=1e-3)
        assert pre == pytest.approx(_autograd_norms(weights.at[step - 1]), rel=5e-2)


def test_the_wrapper_is_removed_and_another_clip_route_is_said(tmp_path, one_thread, monkeypatch):
    """After train() the accelerator is as it was. Should the Trainer clip without
    Accelerator.clip_grad_norm_ (here: torch's own, as its mixed-mesh path does), the rows
    measured after it are labelled post-clip, with one warning, never as pre-clip."""
    model = _gpt2()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=N, max_steps=2, logging_steps=1,
        max_grad_norm=MAX_NORM, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens())
    cb = GradientMonitorCallback(trainer=trainer)
    trainer.train()
    assert "clip_grad_norm_" not in vars(trainer.accelerator)
    trainer = transformers.Trainer(model=_gpt2(), args=args, train_dataset=_Tokens())
    monkeypatch.setattr(trainer, "_clip_grad_norm", lambda m: torch.nn.utils.clip_grad_norm_(
        m.parameters(), trainer.args.max_grad_norm))
    cb = GradientMonitorCallback(trainer=trainer)
    with pytest.warns(RuntimeWarning, match="without Accelerator.clip_grad_norm_") as got:
        trainer.train()
    assert sum("clip_grad_norm_" in str(w.message) for w in got) == 1
    logs = [h for h in trainer.state.log_history if "grad_norm" in h]
    assert len(logs) == 2
    for h in logs:
        assert not _family(h, "grad_norm")
        assert math.sqrt(sum(v * v for v in _family(h, "grad_norm_post_clip").values())) == pytest.approx(
            MAX_NORM, rel=1e-5)
    assert {r["kind"] for r in cb.records} == {"param_post_clip"}
