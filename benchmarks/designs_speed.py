"""What does each residual design cost per training step, beside pre-LN?

A character-level LM size (6 layers, d = 128, 4 heads, T = 64, batch 32, vocabulary 96 by
default): forward, cross-entropy, backward, for pre-LN and every design of issue 21, built by
registry name. The designs are interleaved round by round in a shuffled order, in one process, so
machine load hits each alike; each round's time is divided by the pre-LN time of the same round,
and the medians of those ratios are printed.

    python benchmarks/designs_speed.py                       # CPU, one thread, every design
    python benchmarks/designs_speed.py --rounds 30 --designs hc,mhc
    python benchmarks/designs_speed.py --cnn                 # + the CNN designs vs resnet20 (2-D, batch 64)

Goals (issue 21): <= 1.3x pre-LN; hyper-connections (hc, hc-dynamic, mhc) <= 1.5x.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import resgrad
from resgrad.nets.designs import CNN_DESIGNS, DESIGNS, TRANSFORMER_DESIGNS, model_name

__all__ = ["main", "GOALS"]

GOALS = {"hc": 1.5, "hc-dynamic": 1.5, "mhc": 1.5}  # else 1.3


def _step_fn(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    def step() -> float:
        net.zero_grad(set_to_none=True)
        t = time.perf_counter()
        F.cross_entropy(net(x), y).backward()
        return time.perf_counter() - t

    return step


def _nets(args: argparse.Namespace) -> dict[str, tuple]:
    g = torch.Generator().manual_seed(0)
    out = {}
    tok = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
    for d in ["preln"] + [d for d in args.designs if d != "preln"]:
        torch.manual_seed(0)
        net = resgrad.build(model_name(d, args.layers), task="lm", d_model=args.d_model, n_heads=args.heads,
                            vocab=args.vocab, context=args.seq)
        out[d] = (net, tok[:, :-1], tok[:, 1:])
    if args.cnn:
        x = torch.randn(args.cnn_batch, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (args.cnn_batch,), generator=g)
        for d in ("resnet",) + tuple(c for c in CNN_DESIGNS if c != "resnet"):
            torch.manual_seed(0)
            out[f"cnn:{d}"] = (resgrad.build(model_name(d, 20)), x, y)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default=",".join(TRANSFORMER_DESIGNS), help="comma-separated Transformer designs")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: torch's default)")
    ap.add_argument("--cnn", action="store_true", help="also the CNN designs vs resnet20")
    ap.add_argument("--cnn-batch", type=int, default=64)
    args = ap.parse_args(argv)
    args.designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    bad = [d for d in args.designs if d not in DESIGNS or DESIGNS[d].family != "transformer"]
    if bad:
        print(f"designs_speed: {', '.join(bad)} are not Transformer designs; choose from "
              f"{', '.join(TRANSFORMER_DESIGNS)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    nets = _nets(args)
    steps = {k: _step_fn(*v) for k, v in nets.items()}
    for s in steps.values():  # warm-up: allocator, first-call paths
        s()
        s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    ratios: dict[str, list[float]] = {k: [] for k in steps}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(steps)
        rng.shuffle(order)
        got = {k: steps[k]() for k in order}
        for k, t in got.items():
            times[k].append(t)
            base = got["cnn:resnet"] if k.startswith("cnn:") else got["preln"]
            ratios[k].append(t / base)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds; "
          f"LM {args.layers} layers, d={args.d_model}, {args.heads} heads, T={args.seq}, batch {args.batch}")
    print(f"{'design':<14} {'step (median)':>14} {'ratio (median)':>15} {'IQR':>13}  goal")
    fails = 0
    for k in steps:
        r = sorted(ratios[k])
        q1, q3 = r[len(r) // 4], r[(3 * len(r)) // 4]
        goal = GOALS.get(k, 1.3)
        med = statistics.median(r)
        ok = "" if k in ("preln", "cnn:resnet") else ("ok" if med <= goal else "OVER") + f" (<= {goal}x)"
        fails += ok.startswith("OVER")
        print(f"{k:<14} {1e3 * statistics.median(times[k]):>11.1f} ms {med:>14.3f}x {q1:>6.2f}-{q3:<6.2f} {ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
