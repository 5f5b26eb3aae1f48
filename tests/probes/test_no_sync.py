"""Between measured steps GradientMonitor copies nothing from the device to the host.

What is counted, per training step (forward, backward, ``monitor.step()``, the optimizer):

- by a ``TorchDispatchMode``: the aten ops that read a device value on the host or wait for
  it: ``_local_scalar_dense`` (``.item()``, ``bool(t)``, ``float(t)``), ``nonzero``,
  ``masked_select``, ``unique``-style ops with a data-dependent shape, ``equal``,
  ``is_nonzero``, and any ``_to_copy``/``copy_`` whose destination is the CPU from another
  device (on the CPU test machine there is no such copy: a GPU run of benchmarks/gpu.sh
  covers it under ``torch.cuda.set_sync_debug_mode("error")``);
- by a ``TorchFunctionMode``: ``Tensor.item``, ``.tolist``, ``.numpy`` and ``__bool__``/
  ``__float__``/``__int__``/``__index__``, since ``.tolist()`` reads memory without an aten op.

Inside compiled graphs no aten op is dispatched; what could read there would be a graph
break, and the compiled tests run with ``fullgraph=True`` and count graph breaks too.
The counter is proven to count: measured steps on the CPU read their rows (> 0).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import resgrad
from resgrad.probes import GradientMonitor

pytestmark = pytest.mark.usefixtures("one_thread")

aten = torch.ops.aten
_READS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.equal, aten.is_nonzero,
          aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.nonzero_static}
_COPIES = {aten._to_copy, aten.copy_, aten.to}
_METHODS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
            torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


class HostReads:
    """Counts host reads per step: ``with HostReads() as c: c.at(step); ...``; ``c.by_step``."""

    def __init__(self) -> None:
        self.by_step: Counter[int] = Counter()
        self.what: dict[int, Counter[str]] = {}
        self.step = -1
        outer = self

        class _Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                pkt = func.overloadpacket
                if pkt in _READS:
                    outer._count(pkt.__name__)
                elif pkt in _COPIES:
                    src = args[1] if pkt is aten.copy_ else args[0]
                    dst = args[0].device if pkt is aten.copy_ else kwargs.get("device")
                    if (isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst is not None
                            and torch.device(dst).type == "cpu"):
                        outer._count(f"{pkt.__name__}->cpu")
                return func(*args, **kwargs)

        class _Function(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func in _METHODS:
                    outer._count(getattr(func, "__name__", str(func)))
                return func(*args, **(kwargs or {}))

        self._modes = [_Function(), _Dispatch()]

    def _count(self, what: str) -> None:
        self.by_step[self.step] += 1
        self.what.setdefault(self.step, Counter())[what] += 1

    def at(self, step: int) -> None:
        self.step = step

    def __enter__(self) -> HostReads:
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for m in reversed(self._modes):
            m.__exit__(*exc)


def test_the_counter_counts():
    with HostReads() as c:
        c.at(0)
        torch.ones(3).tolist()
        c.at(1)
        _ = torch.ones(2).sum().item()
        c.at(2)
        torch.arange(4).nonzero()
    assert c.by_step[0] >= 1 and c.by_step[1] >= 1 and c.by_step[2] >= 1


ALL = {"params": True, "activations": "all", "weights": True, "updates": True, "split": True, "act_norms": True}


def _train(model, mon, steps, counter=None, fn=None, first=0):
    """Train ``steps`` steps; with ``fn`` (compiled), the counter is on from the end of the
    compiled forward (dynamo refuses to run under a user dispatch mode): backward, the
    monitor's step and the optimizer are counted."""
    compiled = fn is not None
    fn = model if fn is None else fn
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for s in range(first, first + steps):
        x = torch.randn(4, 3, 16, 16, generator=g)
        y = torch.randint(0, 3, (4,), generator=g)
        if counter is not None:
            counter.at(s)
        opt.zero_grad()
        out = fn(x) if compiled else None
        with counter if counter is not None and compiled else contextlib.nullcontext():
            loss = nn.functional.cross_entropy(fn(x) if out is None else out, y)
            loss.backward()
            mon.step(s)
            opt.step()


def _check(c: HostReads, every: int, steps: range) -> None:
    quiet = {s: c.what.get(s) for s in steps if s % every and c.by_step[s]}
    assert not quiet, f"host reads on non-log steps: {quiet}"
    assert all(c.by_step[s] > 0 for s in steps if s % every == 0)  # the rows are read on the CPU


def test_no_host_read_between_log_steps_eager_every_quantity():
    torch.manual_seed(0)
    model = resgrad.build_for("resnet20", (3, 16, 16), 3)
    with GradientMonitor(model, every=3, **ALL) as mon, HostReads() as c:
        _train(model, mon, 7, c)
    _check(c, 3, range(7))
    kinds = {r["kind"] for r in mon.records}
    assert {"param", "activation", "input", "weight", "update", "skip", "branch", "forward", "stream",
            "act_norm"} <= kinds


def test_no_host_read_with_per_quantity_schedules_and_selection():
    torch.manual_seed(0)
    model = resgrad.build_for("resnet20", (3, 16, 16), 3)
    sched = {"params": 2, "split": 4, "weights": 4, "updates": 4}
    with GradientMonitor(model, every=4, schedules=sched, select=["first", "last"], **ALL) as mon, \
            HostReads() as c:
        _train(model, mon, 9, c)
    _check(c, 2, range(9))
    rows = mon.records
    assert {r["step"] for r in rows if r["kind"] == "param"} == {0, 2, 4, 6, 8}
    assert {r["step"] for r in rows if r["kind"] == "branch"} == {0, 4, 8}
    assert {r["block"] for r in rows if r["kind"] == "branch"} == {0, 8}


def test_no_host_read_between_log_steps_foreign_units():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.Flatten(2), nn.Linear(256, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                          nn.Flatten(), nn.Linear(48, 3))
    with GradientMonitor(model, every=2, params=True, activations="blocks", split=True, act_norms=True,
                         weights=True, updates=True) as mon, HostReads() as c:
        _train(model, mon, 5, c)
    _check(c, 2, range(5))
    assert any(r["kind"] == "branch" for r in mon.records)


def test_no_host_read_between_log_steps_compiled():
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = resgrad.build_for("resnet20", (3, 16, 16), 3)
    with GradientMonitor(model, every=2, **ALL) as mon:
        fn = torch.compile(model, fullgraph=True)
        _train(model, mon, 2, fn=fn)  # compile both graphs (measured and not) outside the count
        c = HostReads()
        _train(model, mon, 4, c, fn=fn, first=2)
    _check(c, 2, range(2, 6))
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert {r["step"] for r in mon.records if r["kind"] == "skip"} == {0, 2, 4}


def test_the_hf_callback_adds_no_host_read_between_log_steps(tmp_path):
    transformers = pytest.importorskip("transformers")
    from resgrad.integrations.hf import GradientMonitorCallback

    n, t, v = 8, 12, 64

    class Tokens(torch.utils.data.Dataset):
        def __init__(self):
            self.ids = torch.randint(0, v, (n, t), generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    class Count(transformers.TrainerCallback):
        """Starts the counter at train begin; each step's reads are counted under its step."""

        def __init__(self):
            self.c = HostReads()

        def on_train_begin(self, args, state, control, **kw):
            self.c.__enter__()

        def on_step_begin(self, args, state, control, **kw):
            self.c.at(state.global_step)

        def on_train_end(self, args, state, control, **kw):
            self.c.__exit__(None, None, None)

    def run(with_monitor: bool) -> Counter[int]:
        cfg = transformers.GPT2Config(vocab_size=v, n_positions=t, n_embd=16, n_layer=2, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(cfg)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / f"out{with_monitor}"), per_device_train_batch_size=n, max_steps=6,
            logging_steps=3, learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True)
        count = Count()
        trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[count])
        if with_monitor:
            GradientMonitorCallback(activations="blocks", split=True, act_norms=True, weights=True,
                                    updates=True).add_to(trainer)
        trainer.train()
        return count.c.by_step

    bare, monitored = run(False), run(True)
    # Steps are counted from the Trainer's global_step at step begin: the step logged as
    # global_step 3 runs while global_step is 2.
    logged = {2, 5}
    for s in range(6):
        if s not in logged:
            assert monitored[s] == bare[s], (s, monitored, bare)
    assert sum(monitored[s] for s in logged) > sum(bare[s] for s in logged)  # the callback's reads, counted


def test_the_lightning_callback_adds_no_host_read_between_log_steps(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from resgrad.integrations.lightning import GradientMonitorCallback

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = resgrad.build_for("resnet20", (3, 16, 16), 3)

        def training_step(self, batch, i):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Count(L.Callback):
        def __init__(self):
            self.c = HostReads()

        def on_train_start(self, trainer, pl_module):
            self.c.__enter__()

        def on_train_batch_start(self, trainer, pl_module, batch, i):
            self.c.at(trainer.global_step)

        def on_train_end(self, trainer, pl_module):
            self.c.__exit__(None, None, None)

    def run(with_monitor: bool) -> Counter[int]:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        ds = torch.utils.data.TensorDataset(torch.randn(24, 3, 16, 16, generator=g),
                                            torch.randint(0, 3, (24,), generator=g))
        count = Count()
        cbs = [count] + ([GradientMonitorCallback(every=3, activations="blocks", split=True, act_norms=True,
                                                  weights=True, updates=True)] if with_monitor else [])
        trainer = L.Trainer(callbacks=cbs, logger=L.loggers.CSVLogger(str(tmp_path / f"l{with_monitor}")),
                            enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                            accelerator="cpu", devices=1, max_steps=6, log_every_n_steps=3)
        trainer.fit(Net(), torch.utils.data.DataLoader(ds, batch_size=4))
        return count.c.by_step

    bare, monitored = run(False), run(True)
    for s in range(6):
        if s % 3:
            assert monitored[s] == bare[s], (s, monitored, bare)
    assert monitored[0] + monitored[3] > bare[0] + bare[3]
