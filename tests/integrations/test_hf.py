"""The Hugging Face callback: a small GPT-2 from a config, norms checked against plain
autograd and read back from the TensorBoard reporter the Trainer set up."""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from resgrad.integrations.hf import GradientMonitorCallback  # noqa: E402

N, T, V = 8, 12, 64  # examples (one batch holds them all), tokens, vocabulary


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=16, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self):
        self.ids = torch.randint(0, V, (N, T), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class _Snapshots(transformers.TrainerCallback):
    """Reference: weights before each step, and p.grad.norm() at the same hook."""

    def __init__(self):
        self.weights, self.grads = {}, {}

    def on_step_begin(self, args, state, control, model=None, **kw):
        self.weights[state.global_step] = copy.deepcopy(model.state_dict())

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.grads[state.global_step] = {n: float(p.grad.norm()) for n, p in model.named_parameters()}


def _args(tmp_path, **kw):
    base = {"output_dir": str(tmp_path / "out"), "per_device_train_batch_size": N, "max_steps": 4,
            "logging_steps": 2, "learning_rate": 1e-2, "report_to": [], "save_strategy": "no",
            "use_cpu": True, "dataloader_num_workers": 0, "disable_tqdm": True}
    base.update(kw)
    return transformers.TrainingArguments(**base)


def _ref_norms(state_dict, names):
    """torch.autograd.grad of the loss w.r.t. the named modules' outputs and the
    parameters, on a copy. The Trainer divides the summed token loss by the number of
    label tokens in the batch (``num_items_in_batch``, before the causal shift), so the
    reference does too; the parameter norms check that this is the loss it optimised."""
    model = _gpt2()
    model.load_state_dict(state_dict)
    mods = dict(model.named_modules())
    outs = {}
    hs = [mods[n].register_forward_hook(lambda m, a, o, n=n: outs.__setitem__(n, o)) for n in names]
    ids = _Tokens().ids
    loss = model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(ids.numel())).loss
    for h in hs:
        h.remove()
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [outs[n] for n in names] + list(params.values()))
    acts = {n: float(g.norm()) for n, g in zip(names, grads[:len(names)], strict=True)}
    return acts, {n: float(g.norm()) for n, g in zip(params, grads[len(names):], strict=True)}


def test_log_history_and_tensorboard_get_autograd_norms(tmp_path, one_thread, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # transformers 5: no logging_dir
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    model = _gpt2()
    snap = _Snapshots()
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, report_to=["tensorboard"]),
                                   train_dataset=_Tokens(), callbacks=[snap])
    cb = GradientMonitorCallback(activations=True).add_to(trainer)
    cbs = trainer.callback_handler.callbacks
    assert cbs[0] is cb and snap in cbs and len(cbs) == len(set(map(id, cbs)))
    trainer.train()
    # One numbering: the Trainer's global_step after the optimizer step, in records,
    # log_history and TensorBoard alike.
    assert sorted({r["step"] for r in cb.records}) == [2, 4]
    logs = {h["step"]: h for h in trainer.state.log_history if "resgrad/nonfinite/total" in h}
    assert sorted(logs) == [2, 4]
    assert sorted(h["step"] for h in trainer.state.log_history if "loss" in h) == [2, 4]
    names = ["transformer.h.0.ln_1", "transformer.h.1.mlp.c_fc", "transformer.ln_f", "lm_head"]
    for s in (1, 3):  # global_step before the increment, as _Snapshots keys them
        h = logs[s + 1]
        for pname, ref in snap.grads[s].items():
            if pname == "lm_head.weight":  # tied to wte: one parameter, listed once by named_parameters
                continue
            assert h[f"resgrad/grad_norm/{pname}"] == pytest.approx(ref, rel=1e-5), pname
        ref, ref_params = _ref_norms(snap.weights[s], names)
        assert ref_params == pytest.approx(snap.grads[s], rel=1e-4)
        for n in names:
            assert h[f"resgrad/act_grad_norm/{n}"] == pytest.approx(ref[n], rel=1e-4), (s, n)
    # The TensorBoard reporter (added by report_to before our callback) received them too.
    (run,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    acc = ea.EventAccumulator(str(run))
    acc.Reload()
    tag = "train/resgrad/grad_norm/transformer.wte.weight"
    assert tag in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars(tag)] == [2, 4]
    assert acc.Scalars(tag)[0].value == pytest.approx(snap.grads[1]["transformer.wte.weight"], rel=1e-5)


def test_placement_by_argument_and_warning_without_it(tmp_path, one_thread, monkeypatch):
    """``trainer=`` places the callback first; passed in callbacks=[...] with a reporter
    behind which it runs, it warns once (and its norms still reach log_history)."""
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    pytest.importorskip("tensorboard")
    args = _args(tmp_path, max_steps=2, logging_steps=1, report_to=["tensorboard"])
    trainer = transformers.Trainer(model=_gpt2(), args=args, train_dataset=_Tokens())
    before = list(trainer.callback_handler.callbacks)
    cb = GradientMonitorCallback(trainer=trainer)
    assert trainer.callback_handler.callbacks == [cb, *before]
    late = GradientMonitorCallback()
    trainer = transformers.Trainer(model=_gpt2(), args=args, train_dataset=_Tokens(), callbacks=[late])
    with pytest.warns(RuntimeWarning, match="add_to") as got:
        trainer.train()
    assert sum("add_to" in str(w.message) for w in got) == 1
    assert any("resgrad/nonfinite/total" in h for h in trainer.state.log_history)
    with pytest.raises(TypeError, match="needs a transformers.Trainer, received int"):
        GradientMonitorCallback().add_to(3)


def _ref_unit_inputs(state_dict):
    """‖∂L/∂x‖ at each residual unit's input of the plain GPT-2, by torch.autograd.grad:
    unit 2l's input is block l's input, unit 2l+1's is the sum ln_2 reads (x + attn(x))."""
    model = _gpt2()
    model.load_state_dict(state_dict)
    xs = []
    hs = []
    for blk in model.transformer.h:
        hs.append(blk.register_forward_pre_hook(lambda m, a: xs.append(a[0])))
        hs.append(blk.ln_2.register_forward_pre_hook(lambda m, a: xs.append(a[0])))
    ids = _Tokens().ids
    loss = model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(ids.numel())).loss
    for h in hs:
        h.remove()
    return [float(g.norm()) for g in torch.autograd.grad(loss, xs)]


def test_blocks_of_a_plain_gpt2_with_one_step_numbering(tmp_path, one_thread, recwarn):
    """activations='blocks' on an unadapted GPT2LMHeadModel: the units come from the adapter
    registry, hooked on the original modules; records and log_history share step numbers."""
    model = _gpt2()
    keys = list(model.state_dict())
    snap = _Snapshots()
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, logging_first_step=True),
                                   train_dataset=_Tokens(), callbacks=[snap])
    cb = GradientMonitorCallback(activations="blocks", trainer=trainer)
    trainer.train()
    assert not [w for w in recwarn if "compile" in str(w.message)]
    assert sorted({r["step"] for r in cb.records}) == [1, 2, 4]
    logged = {h["step"]: h for h in trainer.state.log_history if "resgrad/block_grad/0" in h}
    assert sorted(logged) == [1, 2, 4] == sorted(h["step"] for h in trainer.state.log_history if "loss" in h)
    for step in (1, 2, 4):
        ref = _ref_unit_inputs(snap.weights[step - 1])
        got = [logged[step][f"resgrad/block_grad/{i}"] for i in range(4)]
        assert got == pytest.approx(ref, rel=1e-4), step
    names = [r["name"] for r in cb.records if r["kind"] == "input" and r["step"] == 4]
    assert names == ["transformer.h.0.attn", "transformer.h.0.mlp", "transformer.h.1.attn", "transformer.h.1.mlp"]
    assert list(model.state_dict()) == keys and type(model.transformer.h[0]).__name__ == "GPT2Block"
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_params_only_every_step_and_blocks(tmp_path, one_thread):
    model = _gpt2()
    cb = GradientMonitorCallback(every=1)
    transformers.Trainer(model=model, args=_args(tmp_path, max_steps=3, logging_steps=10),
                         train_dataset=_Tokens(), callbacks=[cb]).train()
    assert sorted({r["step"] for r in cb.records}) == [1, 2, 3]
    assert {r["kind"] for r in cb.records} == {"param"}
    assert not any(getattr(m, "_forward_hooks", None) for m in model.modules())


def test_bad_input_fails_at_construction(tmp_path):
    with pytest.raises(TypeError, match="unknown GradientMonitor option 'param'"):
        GradientMonitorCallback(param=False)
    model = _gpt2().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        transformers.Trainer(model=model, args=_args(tmp_path), train_dataset=_Tokens(),
                             callbacks=[GradientMonitorCallback()])


def test_missing_transformers_is_one_line(monkeypatch):
    monkeypatch.delitem(sys.modules, "resgrad.integrations.hf", raising=False)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'resgrad\[hf\]'"):
        importlib.import_module("resgrad.integrations.hf")
