"""What viewing a model through ``resgrad.adapt`` costs: forward + backward, view vs original.

The view runs the original's own layers inside Residual units (plus a Python wrapper per
unit, the attention context set per call, and an out-of-place ``shortcut(x) + branch(x)``
where timm adds in place). For each model the original and its view take a training
step's forward + backward in interleaved rounds (who goes first alternates, so machine
load hits both alike); the figure is the ratio of the medians (the median of per-round
ratios is printed beside it as a check on noise). Goal: <= 1.10x. Models are built from configs /
``pretrained=False`` (nothing downloads); families whose package is missing are skipped.

Run: ``python benchmarks/adapters.py [--threads 1] [--rounds 15] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import resgrad


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _hf_causal(config_name: str, **kw) -> Callable[[], tuple[nn.Module, Callable]]:
    def make():
        import transformers as T

        cfg = getattr(T, config_name)(**kw)
        model = T.AutoModelForCausalLM.from_config(cfg) if config_name != "BertConfig" else T.BertForMaskedLM(cfg)
        ids = torch.randint(cfg.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0))
        return model, lambda m, dev: m(ids.to(dev), labels=ids.to(dev)).loss

    return make


def _images(model_fn: Callable[[], nn.Module], size: int, batch: int):
    def make():
        model = model_fn()
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        y = torch.randint(10, (batch,), generator=torch.Generator().manual_seed(1))

        def step(m, dev):
            out = m(x.to(dev))
            return F.cross_entropy(out.logits if hasattr(out, "logits") else out, y.to(dev))

        return model, step

    return make


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def make():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kw)

    return make


def _hf_vit() -> nn.Module:
    import transformers as T

    return T.ViTForImageClassification(T.ViTConfig(num_hidden_layers=4, hidden_size=128, num_attention_heads=4,
                                                   intermediate_size=512, image_size=32, patch_size=4, num_labels=10))


SMALL_LM = dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, intermediate_size=512, vocab_size=512,
                max_position_embeddings=128)
CASES: dict[str, tuple[str, Callable]] = {
    "hf gpt2 4x128": ("transformers", _hf_causal("GPT2Config", n_layer=4, n_embd=128, n_head=4, vocab_size=512,
                                                 n_positions=128, bos_token_id=0, eos_token_id=0)),
    "hf bert 4x128": ("transformers", _hf_causal("BertConfig", **SMALL_LM)),
    "hf llama 4x128": ("transformers", _hf_causal("LlamaConfig", num_key_value_heads=2, **SMALL_LM)),
    "hf vit 4x128": ("transformers", _images(_hf_vit, 32, 16)),
    "timm resnet18": ("timm", _images(_timm("resnet18"), 64, 16)),
    "timm convnext_atto": ("timm", _images(_timm("convnext_atto"), 64, 16)),
    "timm vit_tiny": ("timm", _images(_timm("vit_tiny_patch16_224", img_size=64, patch_size=8), 64, 16)),
}


def bench(make: Callable, rounds: int, device: str) -> dict:
    torch.manual_seed(0)
    orig, step = make()
    orig = orig.to(device).train()
    view = resgrad.adapt(orig)
    times: dict[str, list[float]] = {"original": [], "view": []}
    for m in (orig, view):  # warm-up
        step(m, device).backward()
    for r in range(rounds):
        order = (("original", orig), ("view", view))
        for name, m in order if r % 2 == 0 else order[::-1]:  # alternate who goes first (drift hits both)
            m.zero_grad(set_to_none=True)
            _sync(device)
            t0 = time.perf_counter()
            step(m, device).backward()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_round = statistics.median(v / o for o, v in zip(times["original"], times["view"], strict=True))
    return {"units": len(resgrad.residual_blocks(view)), **med, "ratio": med["view"] / med["original"],
            "per_round": per_round}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on shared CPUs)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="", help="run the cases whose name contains this text")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"resgrad {resgrad.__version__}, torch {torch.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}; forward+backward, train mode, median of {args.rounds} interleaved rounds")
    print(f"{'model':<20} {'units':>5} {'original':>10} {'view':>10} {'ratio':>7} {'per round':>9}  goal <= 1.10x")
    for name, (package, make) in CASES.items():
        if args.only not in name:
            continue
        try:
            __import__(package)
        except ImportError:
            print(f"{name:<20} skipped: needs {package}")
            continue
        r = bench(make, args.rounds, args.device)
        ok = "ok" if r["ratio"] <= 1.10 else "over"
        print(f"{name:<20} {r['units']:>5} {1e3 * r['original']:>8.1f}ms {1e3 * r['view']:>8.1f}ms "
              f"{r['ratio']:>6.3f}x {r['per_round']:>8.3f}x  {ok}")


if __name__ == "__main__":
    main()
