"""What Ray costs on one machine: a sweep of 8 tiny training runs through ``ray`` vs ``local``.

The same grid (plain/residual 8-layer twins x 4 seeds on a small synthetic set) runs
through the local process pool (one worker per core, 1 thread per run) and through a
Ray local cluster (``ray.init()`` started by the executor, 1 CPU per run), each into a
fresh folder. Prints both wall times, their ratio, Ray's start-up seconds (``ray.init``),
and checks that both wrote the same numbers (every run seeds itself from its config).

    python benchmarks/ray_overhead.py           # 8 runs of 3 epochs
    python benchmarks/ray_overhead.py --quick   # 8 runs of 1 epoch: a smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _grid(epochs: int) -> dict:
    return {"depths": [8], "seeds": [0, 1, 2, 3], "datasets": ["synthetic"],
            "data_kwargs": {"synthetic": {"shape": [1, 32], "n_train": 512, "n_test": 128, "seed": 3}},
            "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, "device": "cpu"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 epoch per run (a smoke run of this script)")
    args = ap.parse_args()
    from resgrad.executors import LocalExecutor, cores, make_executor
    from resgrad.experiments.sweep import parse_config, run

    cfg = parse_config(_grid(1 if args.quick else 3))
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="resgrad-bench-ray-") as tmp:
        t = time.perf_counter()
        with LocalExecutor(cores(), threads=1) as ex:
            local = run(cfg, Path(tmp) / "local", executor=ex, log=quiet, progress=False)
        t_local = time.perf_counter() - t

        t = time.perf_counter()
        ex = make_executor("ray", num_cpus=1)
        try:
            ex.start()
            startup = ex.startup_seconds
            ray_res = run(cfg, Path(tmp) / "ray", executor=ex, log=quiet, progress=False)
        finally:
            ex.close()
        t_ray = time.perf_counter() - t
    same = [c.metrics for c in local.cells] == [c.metrics for c in ray_res.cells]
    print(f"sweep of {len(local.runs)} runs on {cores()} cores, 1 thread per run")
    print(f"  {f'local pool ({cores()} workers)':<26} {t_local:8.1f} s")
    print(f"  {'ray local cluster':<26} {t_ray:8.1f} s   (of which ray.init: {startup or 0:.1f} s)")
    print(f"ratio ray / local: {t_ray / t_local:.2f}x; ray start-up {startup or 0:.1f} s")
    print("numbers: " + ("identical" if same else "DIFFER"))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
