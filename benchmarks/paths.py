"""Path tools, measured side by side in one run (issue 4 "Done means").

1. Exact decomposition vs one plain backward, for 27- and 54-block nets (1-D ResNet-56
   and ResNet-110 on MNIST-1D-shaped input, batch 128). The DP runs one batched VJP per
   block over all live lengths, about n/2 backward passes in all; goal: ratio <= 0.6 n.
   Reported against the backward alone (the goal) and against forward + backward.
2. Veit's sampling at 1,000 samples per length (ResNet-110: 55 lengths, 55,000 paths):
   vectorised (one random path per example; method "graph": one forward per batch of examples,
   then batched backward passes through its recorded graph; method "gates": a forward and
   a backward per batch, routed by per-sample gates) vs the per-path loop
   (one example and one path per forward+backward). Goal: >= 20x. The full loop takes
   far too long on a CPU, so by default it runs ``--loop-samples`` samples at a few
   lengths spread over 0..n, and its full time is extrapolated: per-sample time is
   interpolated linearly in the length (a short path's backward skips most branches)
   and multiplied by 1,000 samples at every length. The output says so; ``--full-loop``
   runs it all.

3. The same exact decomposition for a 12-layer Hugging Face GPT-2 decoder viewed through
   ``resgrad.adapt`` (24 units: one per attention and per MLP sublayer; width 64, batch
   16 x 64 tokens, next-token cross-entropy, dropout off). Goal: <= 0.6 n backward passes.
   Needs ``resgrad[hf]``; skipped without it.

Weights are at initialisation (timing does not depend on training); BatchNorm is in eval
mode for both parts (the sampling needs it). Timings interleave the compared methods and
take medians. Run: ``python benchmarks/paths.py [--threads 1] [--device cpu] [--parts 1,2,3]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

import resgrad
from resgrad.paths import decompose, sample, sample_loop


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _inputs(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        data = resgrad.load_data("mnist1d")
        x, y = data.x_test[:batch], data.y_test[:batch]
    except Exception:  # no mnist1d package: same shape, random values
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(batch, 1, 40, generator=g), torch.randint(10, (batch,), generator=g)
    return x.to(device), y.to(device)


def bench_decompose(name: str, batch: int, reps: int, device: str, vjp: str) -> dict:
    torch.manual_seed(0)
    model = resgrad.build_for(name, (1, 40), 10).to(device).eval()
    n = len(resgrad.residual_blocks(model))
    x, y = _inputs(batch, device)
    bwd, fwd_bwd, dec = [], [], []
    decompose(model, x, targets=y, vjp=vjp)  # warm-up
    for _ in range(reps):  # interleaved, so a noisy neighbour hurts both alike
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y, reduction="sum")
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        bwd.append(t2 - t1)
        fwd_bwd.append(t2 - t0)
        t0 = time.perf_counter()
        d = decompose(model, x, targets=y, vjp=vjp)
        _sync(device)
        dec.append(time.perf_counter() - t0)
    b, fb, dt = statistics.median(bwd), statistics.median(fwd_bwd), statistics.median(dec)
    return {"model": name, "n": n, "vjp": vjp, "batch": batch, "backward_s": b, "fwd_bwd_s": fb, "decompose_s": dt,
            "ratio_backward": dt / b, "ratio_fwd_bwd": dt / fb, "goal": 0.6 * n, "rel_error": d.rel_error}


def bench_decoder(layers: int, width: int, batch: int, seq: int, reps: int, device: str, vjp: str) -> dict:
    """Part 3: a GPT-2 decoder from a config (nothing downloads), adapted, decomposed."""
    import transformers

    torch.manual_seed(0)
    vocab = 256
    cfg = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 16), vocab_size=vocab,
                                  n_positions=seq, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    model = resgrad.adapt(transformers.GPT2LMHeadModel(cfg).to(device).eval())
    n = len(resgrad.residual_blocks(model))
    ids = torch.randint(vocab, (batch, seq), generator=torch.Generator().manual_seed(1)).to(device)

    def loss(out) -> torch.Tensor:  # next-token prediction, summed
        return F.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")

    bwd, fwd_bwd, dec = [], [], []
    decompose(model, ids, loss, vjp=vjp)  # warm-up
    for _ in range(reps):
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        value = loss(model(ids))
        _sync(device)
        t1 = time.perf_counter()
        value.backward()
        _sync(device)
        t2 = time.perf_counter()
        bwd.append(t2 - t1)
        fwd_bwd.append(t2 - t0)
        t0 = time.perf_counter()
        d = decompose(model, ids, loss, vjp=vjp)
        _sync(device)
        dec.append(time.perf_counter() - t0)
    b, fb, dt = statistics.median(bwd), statistics.median(fwd_bwd), statistics.median(dec)
    return {"model": f"gpt2-{layers}x{width}", "n": n, "vjp": vjp, "batch": f"{batch}x{seq}", "backward_s": b,
            "fwd_bwd_s": fb, "decompose_s": dt, "ratio_backward": dt / b, "ratio_fwd_bwd": dt / fb,
            "goal": 0.6 * n, "rel_error": d.rel_error}


def _row(r: dict) -> str:
    ok = "ok" if r["ratio_backward"] <= r["goal"] else "over"
    return (f"{r['model'] + ' ' + r['vjp']:<18} {r['n']:>3} {r['backward_s']:>8.3f}s {r['fwd_bwd_s']:>8.3f}s "
            f"{r['decompose_s']:>9.3f}s {r['ratio_backward']:>6.1f}x {r['ratio_fwd_bwd']:>8.1f}x {r['goal']:>8.1f}x  "
            f"{r['rel_error']:.1e}  [{ok}: {r['ratio_backward'] / r['n']:.2f} n]")


def bench_sampling(name: str, samples: int, batch: int, loop_lengths: list[int], loop_samples: int,
                   full_loop: bool, device: str) -> dict:
    torch.manual_seed(0)
    model = resgrad.build_for(name, (1, 40), 10).to(device).eval()
    n = len(resgrad.residual_blocks(model))
    x, y = _inputs(1000, device)
    vec = {}
    for method in ("graph", "gates"):
        sample(model, x, targets=y, lengths=[0, n], samples=2, batch_size=batch, method=method)  # warm-up
        vec[method] = sample(model, x, targets=y, samples=samples, batch_size=batch, seed=0, method=method).seconds
    if full_loop:
        loop = sample_loop(model, x, targets=y, samples=samples, seed=1)
        loop_total, per_k = loop.seconds, None
        how = "measured in full"
    else:
        per_k = {}
        for k in loop_lengths:
            r = sample_loop(model, x, targets=y, lengths=[k], samples=loop_samples, seed=1 + k)
            per_k[k] = r.seconds / loop_samples
        ks = sorted(per_k)
        # Piecewise-linear in k between measured lengths (the backward through k branches).
        def at(k: int) -> float:
            for a, b in zip(ks, ks[1:], strict=False):
                if a <= k <= b:
                    return per_k[a] + (per_k[b] - per_k[a]) * (k - a) / (b - a)
            return per_k[ks[0]] if k < ks[0] else per_k[ks[-1]]

        loop_total = sum(at(k) for k in range(n + 1)) * samples
        how = (f"extrapolated from {loop_samples} samples at lengths {ks}: per-sample time interpolated "
               f"linearly in k, times {samples} samples at each of the {n + 1} lengths")
    return {"model": name, "n": n, "samples_per_length": samples, "total_samples": samples * (n + 1),
            "batch": batch, "vectorised_s": vec, "loop_s": loop_total, "loop": how,
            "per_sample_loop_ms": None if per_k is None else {k: 1e3 * v for k, v in per_k.items()},
            "speedup": {m: loop_total / t for m, t in vec.items()}, "goal": 20.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on shared CPUs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128, help="examples in the decomposition benchmark")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--samples", type=int, default=1000, help="sampled paths per length (Veit: 1000)")
    ap.add_argument("--sample-batch", type=int, default=500, help="examples per vectorised backward")
    ap.add_argument("--loop-samples", type=int, default=40, help="loop samples per measured length")
    ap.add_argument("--full-loop", action="store_true", help="run the whole per-path loop (hours on a CPU)")
    ap.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 3 (default 1,2,3)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    torch.set_num_threads(args.threads)
    print(f"resgrad {resgrad.__version__}, torch {torch.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}")

    header = (f"{'model, vjp':<18} {'n':>3} {'backward':>9} {'fwd+bwd':>9} {'decompose':>10} {'/ bwd':>7} "
              f"{'/ fwd+bwd':>9} {'goal 0.6n':>9}  sum check")
    if "1" in parts:
        print("\n1. exact decomposition vs one plain backward (BatchNorm eval, batch "
              f"{args.batch}, median of {args.reps})")
        print(header)
        for name, vjp in itertools.product(("resnet56", "resnet110"), ("loop", "batched")):
            print(_row(bench_decompose(name, args.batch, args.reps, args.device, vjp)))
    if "3" in parts:
        print(f"\n3. exact decomposition of an adapted 12-layer GPT-2 decoder (median of {args.reps})")
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("   skipped: needs transformers (pip install 'resgrad[hf]')")
        else:
            print(header)
            for vjp in ("loop", "batched"):
                print(_row(bench_decoder(12, 64, 16, 64, args.reps, args.device, vjp)))
    if "2" not in parts:
        return

    print(f"\n2. Veit's sampling, {args.samples} samples per length: vectorised vs per-path loop")
    n = 54
    lengths = sorted({0, 9, 18, 27, 36, 45, n})
    r = bench_sampling("resnet110", args.samples, args.sample_batch, lengths, args.loop_samples,
                       args.full_loop, args.device)
    print(f"resnet110: n={r['n']}, {r['total_samples']:,} samples; loop {r['loop_s']:.0f}s ({r['loop']})")
    if r["per_sample_loop_ms"]:
        print("   loop ms per sample by length: "
              + ", ".join(f"k={k}: {v:.1f}" for k, v in r["per_sample_loop_ms"].items()))
    for m, t in r["vectorised_s"].items():
        sp = r["speedup"][m]
        print(f"   vectorised, method={m} (batch {r['batch']}): {t:.1f}s, {1e3 * t / r['total_samples']:.2f} ms "
              f"per sample; speedup {sp:.1f}x (goal >= {r['goal']:.0f}x): {'ok' if sp >= r['goal'] else 'under'}")


if __name__ == "__main__":
    main()
