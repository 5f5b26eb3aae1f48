"""``resgrad designs`` wall time: the whole experiment through the pool, and the at-initialisation panel.

Runs ``resgrad designs --size SIZE`` (default: the default size) in a fresh folder with the
pool (one worker per core, 1 thread per run) and prints its wall time against the issue's
budget (20 minutes for the default size on 2 CPU cores), with the experiment's own stage
times (init, lm, cnn) from results.json; then times the study's at-initialisation panel
(``experiments.designs.preset("panel")``, no folder) against its ~10 s share of the study.

    python benchmarks/designs.py                  # default size: ~20 min on 2 CPU cores
    python benchmarks/designs.py --size quick     # a smoke run
    python benchmarks/designs.py --estimate       # from per-step CPU times (post-LN's lr sweep counted)
    python benchmarks/designs.py --estimate --data-dir ~/data/cifar10   # the CNNs on CIFAR-10's subset
    taskset -c 0,1 python benchmarks/designs.py   # two cores of a larger machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

BUDGET_S = {"default": 20 * 60, "quick": None, "full": None}  # issue 21: default <= 20 min on 2 cores
PANEL_BUDGET_S = 10.0  # the panel's share of the default study's 300 s


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def panel() -> float:
    """CPU seconds of the study's at-initialisation panel in this process (1 thread)."""
    import torch

    from resgrad.experiments import designs, run

    torch.set_num_threads(1)
    t = time.process_time()
    run(designs.preset("panel"), None, log=None)
    return time.process_time() - t


def estimate(size: str, steps: int = 3, data_dir: str | None = None) -> float:
    """Seconds ``resgrad designs --size SIZE`` should take on the cores available, from each design's measured
    CPU time per training step (``steps`` steps after one warm-up, 1 thread) x its steps x seeds x its swept
    lrs (``lr_sweep``: post-LN's two) / cores. ``data_dir``: the CNNs on that CIFAR-10 folder's subset.

    CPU time (``time.process_time``), not wall time: on a machine shared with other jobs the wall
    time of a step counts the others' share too; the CPU time is what this process used."""
    import torch

    from resgrad.experiments import designs as D
    from resgrad.experiments.designs import _build, _cnn_spec, _lm_spec, _load

    torch.set_num_threads(1)
    c = D.preset(size, data_dir=data_dir)
    data = {"transformer": _load(_lm_spec(c)), "cnn": _load(_cnn_spec(c))}
    total = 0.0
    for info in D.catalogue(c.designs):
        fam = info["family"]
        bundle, recipe = data[fam], (c.lm_train if fam == "transformer" else c.cnn_train)
        per_run = bundle.num_batches(recipe.batch_size) * recipe.epochs
        for depth in (c.lm_depths if fam == "transformer" else c.cnn_depths):
            model = _build(info["name"], depth, fam, c, bundle, 0)
            opt = (torch.optim.AdamW(model.parameters(), 1e-3) if recipe.optimizer == "adamw"
                   else torch.optim.SGD(model.parameters(), recipe.lr, momentum=recipe.momentum))
            x, y = bundle.x_train[: recipe.batch_size], bundle.y_train[: recipe.batch_size]
            for i in range(steps + 1):
                if i == 1:
                    t = time.process_time()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            per = (time.process_time() - t) / steps
            lrs = len(c.lr_sweep.get(info["name"], ())) or 1
            total += per * per_run * len(c.seeds) * lrs
            print(f"  {info['name']}-{depth}: {1000 * per:.0f} ms/step x {per_run} steps x {len(c.seeds)} seeds"
                  + (f" x {lrs} lrs" if lrs > 1 else ""))
    return total / _cores()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default", choices=sorted(BUDGET_S))
    ap.add_argument("--designs", default=None, help="comma-separated designs (default: every design)")
    ap.add_argument("--panel-only", action="store_true", help="time only the study's panel")
    ap.add_argument("--estimate", action="store_true", help="estimate the training time from per-step times only")
    ap.add_argument("--data-dir", default=None, help="a CIFAR-10 folder: the CNNs train on it (as resgrad designs)")
    args = ap.parse_args(argv)
    print(f"machine: {os.uname().nodename}, {_cores()} core(s) available")
    secs = panel()
    print(f"study panel (every design at initialisation): {secs:.1f} s of CPU (budget ~{PANEL_BUDGET_S:g} s)")
    if args.panel_only:
        return 0
    if args.estimate:
        secs = estimate(args.size, data_dir=args.data_dir)
        print(f"estimated training wall time of --size {args.size}"
              + (f" with CIFAR-10 from {args.data_dir}" if args.data_dir else "") + f": {secs:.0f} s on {_cores()} core(s) "
              "(steps only: add evaluation and the init stage)")
        return 0
    with tempfile.TemporaryDirectory(prefix="resgrad-designs-bench-") as tmp:
        out = Path(tmp) / "designs"
        cmd = [sys.executable, "-m", "resgrad", "designs", "--size", args.size, "--device", "cpu", "--out", str(out)]
        if args.designs:
            cmd += ["--designs", args.designs]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
            return proc.returncode
        timing = json.loads((out / "results.json").read_text()).get("timing", {})
    budget = BUDGET_S[args.size]
    print(f"resgrad designs --size {args.size}: {wall:.0f} s wall" + (f" (budget {budget} s)" if budget else ""))
    print("  stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items()))
    return 0 if budget is None or wall <= budget else 1


if __name__ == "__main__":
    sys.exit(main())
