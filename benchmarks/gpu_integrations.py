"""CUDA checks of the framework callbacks: fp16 autocast with a GradScaler, before and after clipping.

CPU tests cover bf16 in both Trainers and fp16 + GradScaler in Lightning; accelerate runs
fp16 only on an accelerator, so the HF Trainer's fp16 case is checked here:

  hf_fp16_scaler   Trainer(fp16=True): the pre-clip per-layer norms add up to the Trainer's
                   grad_norm (1e-5 relative), the loss scale was > 1 (the values were
                   unscaled by the monitor, not by luck), the post-clip ones add up to
                   max_grad_norm (1e-4), and step 1's pre-clip norms equal an fp32
                   Trainer's within 2e-2 (fp16 keeps 11 mantissa bits)
  pl_fp16_scaler   Lightning precision="16-mixed": the same against a fp32 Lightning run

    .venv/bin/python benchmarks/gpu_integrations.py             # on a CUDA machine
    .venv/bin/python benchmarks/gpu_integrations.py --cpu-smoke # bf16 on the CPU: the script runs
Writes $OUT/gpu_integrations.json when OUT is set; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CLIP = 1e-2


def _family(h: dict[str, Any], family: str) -> dict[str, float]:
    pre = f"resgrad/{family}/"
    return {k[len(pre):]: v for k, v in h.items() if k.startswith(pre)}


def _total(d: dict[str, float]) -> float:
    return math.sqrt(sum(v * v for v in d.values()))


def _rel(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b)


def hf_check(smoke: bool, tmp: str) -> dict[str, Any]:
    import transformers

    from resgrad.integrations.hf import GradientMonitorCallback

    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ids = torch.randint(0, 256, (16, 32), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": i, "labels": i} for i in ids]

    def run(low: bool) -> tuple[list[dict[str, Any]], Any]:
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(cfg)
        prec = {"bf16": True} if smoke else {"fp16": True}
        args = transformers.TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=16, max_steps=3, logging_steps=1, learning_rate=1e-3,
            max_grad_norm=CLIP, report_to=[], save_strategy="no", use_cpu=smoke, disable_tqdm=True,
            dataloader_num_workers=0, **(prec if low else {}))
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
        GradientMonitorCallback(clip="both", trainer=trainer)
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        trainer.train()
        return [h for h in trainer.state.log_history if "grad_norm" in h], trainer

    logs, trainer = run(True)
    ref, _ = run(False)
    scaler = getattr(trainer.accelerator, "scaler", None)
    scale = float(scaler.get_scale()) if scaler is not None else 1.0
    sums = [abs(_total(_family(h, "grad_norm")) - h["grad_norm"]) / h["grad_norm"] for h in logs]
    posts = [abs(_total(_family(h, "grad_norm_post_clip")) - CLIP) / CLIP for h in logs]
    vs32 = _rel(_family(logs[0], "grad_norm"), _family(ref[0], "grad_norm"))
    ok = (len(logs) == 3 and max(sums) < 1e-5 and max(posts) < 1e-4 and vs32 < 2e-2
          and (smoke or scale > 1))
    return {"pass": ok, "loss_scale": scale, "sum_vs_grad_norm_rel": max(sums),
            "post_vs_max_norm_rel": max(posts), "step1_vs_fp32_rel": vs32}


def pl_check(smoke: bool, tmp: str) -> dict[str, Any]:
    import lightning.pytorch as L

    from resgrad.integrations.lightning import GradientMonitorCallback

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5))

        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Memory(L.loggers.Logger):
        name, version = "memory", 0

        def __init__(self) -> None:
            super().__init__()
            self.logged: dict[int, dict[str, float]] = {}

        def log_hyperparams(self, *a, **k):
            pass

        def log_metrics(self, metrics, step=None):
            self.logged.setdefault(int(step), {}).update(metrics)

    g = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(torch.randn(64, 32, generator=g) * 3, torch.randint(0, 5, (64,), generator=g))

    def run(precision: str) -> tuple[dict[int, dict[str, float]], Any]:
        mem = Memory()
        cb = GradientMonitorCallback(clip="both")
        trainer = L.Trainer(max_steps=3, gradient_clip_val=CLIP, callbacks=[cb], logger=mem, log_every_n_steps=1,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu" if smoke else "gpu", devices=1, precision=precision)
        trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=64))
        return mem.logged, trainer

    logged, trainer = run("bf16-mixed" if smoke else "16-mixed")
    ref, _ = run("32-true")
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    scale = float(scaler.get_scale()) if scaler is not None else 1.0
    posts = [abs(_total(_family(h, "grad_norm_post_clip")) - CLIP) / CLIP for h in logged.values()]
    vs32 = _rel(_family(logged[0], "grad_norm"), _family(ref[0], "grad_norm"))
    ok = len(logged) == 3 and max(posts) < 1e-4 and vs32 < 2e-2 and (smoke or scale > 1)
    return {"pass": ok, "loss_scale": scale, "post_vs_max_norm_rel": max(posts), "step1_vs_fp32_rel": vs32}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="bf16 on the CPU instead of fp16 on CUDA")
    args = ap.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("usage: no CUDA device visible; run on a CUDA machine, or pass --cpu-smoke", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    tmp = tempfile.mkdtemp(prefix="resgrad-gpu-integ-")
    checks: dict[str, Any] = {}
    for name, fn in (("hf_fp16_scaler", hf_check), ("pl_fp16_scaler", pl_check)):
        try:
            checks[name] = fn(args.cpu_smoke, tmp)
        except Exception as e:  # report every check, then fail
            checks[name] = {"pass": False, "error": f"{type(e).__name__}: {e}"}
        print(("PASS " if checks[name]["pass"] else "FAIL ") + name + " " + json.dumps(checks[name]))
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_integrations.json").write_text(json.dumps({"checks": checks}, indent=1))
    ok = all(c["pass"] for c in checks.values())
    print("ALL PASS" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
