"""The default study fanned out over the cores vs one run after another: wall time, same numbers.

Runs ``resgrad study`` (default preset; ``--quick``: the quick preset) three times, each in
a fresh folder, in one script so the machine's load hits them alike:

- ``--workers 1``: one run after another in one process, 1 thread per run;
- the default: one worker process per core, 1 thread per run;
- "old serial": ``--workers 1 --threads 2``, one run after another with 2 threads each
  (the mode before runs fanned out; its training numbers differ in the last bits, since
  a CPU reduction's result depends on the thread count).

Prints each wall time, the speed-up of the default over ``--workers 1`` (goal >= 1.5x on 2
cores) and over the old serial mode, and checks that ``--workers 1`` and the default wrote
identical numbers (every float of results.json except timings, hosts and paths).

    python benchmarks/study.py            # default preset: ~5 min per study on 2 CPU cores
    python benchmarks/study.py --quick    # the quick preset: a smoke run
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
from typing import Any

__all__ = ["main", "numbers"]

# Keys whose values are when/where, not what was measured.
_NOT_NUMBERS = {"timing", "environment", "wall_time_s", "seconds", "run_dir", "created"}


def numbers(doc: Any) -> Any:
    """``doc`` without timings, hosts and run folders: what must be equal between worker counts."""
    if isinstance(doc, dict):
        return {k: numbers(v) for k, v in doc.items() if k not in _NOT_NUMBERS}
    if isinstance(doc, list):
        return [numbers(v) for v in doc]
    return doc


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}.{k}: only in one"
            d = _first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def _study(preset: str, out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "resgrad", "study", "--preset", preset, "--device", "cpu", "--out", str(out), *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the quick preset (a smoke run of this script)")
    ap.add_argument("--keep", type=Path, default=None, help="write the three study folders here (default: a temp dir)")
    args = ap.parse_args()
    from resgrad.executors import cores

    preset = "quick" if args.quick else "default"
    modes = [("--workers 1 (1 thread per run)", ["--workers", "1"]),
             (f"default ({cores()} workers x 1 thread)", []),
             ("old serial (--workers 1 --threads 2)", ["--workers", "1", "--threads", "2"])]
    with tempfile.TemporaryDirectory(prefix="resgrad-bench-study-") as tmp:
        root = args.keep or Path(tmp)
        env = os.environ.get("RESGRAD_CACHE")
        print(f"resgrad study --preset {preset} on {cores()} cores (cache: {env or 'default'})", flush=True)
        walls = {}
        for i, (name, extra) in enumerate(modes):
            walls[name] = _study(preset, root / f"mode{i}", extra)
            print(f"  {name:<40} {walls[name]:8.1f} s", flush=True)
        docs = [numbers(json.loads((root / f"mode{i}" / "results.json").read_text())) for i in range(3)]
    one, default, old = (walls[m[0]] for m in modes)
    print(f"speed-up of the default over --workers 1: {one / default:.2f}x (goal >= 1.5x on 2 cores)")
    print(f"speed-up of the default over the old serial mode: {old / default:.2f}x")
    diff = _first_difference(docs[0], docs[1])
    print("numbers of --workers 1 and the default: " + ("identical (every float)" if diff is None else
                                                        f"DIFFER at {diff}"))
    diff_old = _first_difference(docs[0], docs[2])
    print("numbers of the old serial mode (2 threads): " + ("identical" if diff_old is None else
                                                            f"differ (expected: thread count), first at {diff_old}"))
    if diff is not None:
        sys.exit(1)


if __name__ == "__main__":
    main()
