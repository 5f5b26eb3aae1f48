"""``resgrad pretrained`` on both real models: wall time, CPU time, peak memory, decomposition passes.

Runs the experiment in this process (``--size default``: the issue's bound is 10 min for both
models on 2 cores and 4 GiB peak memory; ``--size study``: the default study's short stage,
budget ~25 s) into a fresh folder and prints, per model, the seconds of each part (load, flow,
stream, paths, removal), the exact decomposition's backward passes (counted: ``(n + 1) / 2 + 1``;
measured: its time over one plain backward's; the bound is ``0.6 n``), and for the whole run
the wall time, the process's CPU time (user + system: on a shared machine, wall time over-counts
and CPU time over 2 is what 2 idle cores would take) and the peak resident memory. Records the
machine (CPU model, cores, load average before and after).

    python benchmarks/pretrained.py                  # --size default
    python benchmarks/pretrained.py --size study     # the study's stage
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default", choices=("quick", "default", "full", "study"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--specs", nargs="*", default=None, help="models (default: both pretrained ones)")
    ap.add_argument("--keep", default=None, help="run folder to keep (default: a temporary one)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from resgrad.experiments import pretrained as ex

    cfg = ex.study_stage("default") if args.size == "study" else ex.preset(args.size)
    if args.specs:
        from dataclasses import replace

        cfg = replace(cfg, specs=tuple(args.specs))
    load0 = os.getloadavg()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = ex.run(cfg, Path(args.keep or tmp) / "pretrained", log=print)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {"size": args.size, "threads": args.threads, "cpu": _cpu_model(), "cores": os.cpu_count(),
           "load_before": load0, "load_after": os.getloadavg(), "wall_s": wall,
           "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), "peak_rss_mib": r1.ru_maxrss / 1024,
           "models": {}}
    for m in res.models:
        row = {"seconds": m.seconds, "layers": m.layers, "units": m.units, "tokens": m.batch.get("tokens")}
        if m.paths is not None:
            n = m.paths.exact["n"]
            row.update(passes_counted=m.paths.passes, passes_measured=m.paths.measured_passes, bound=0.6 * n,
                       rel_error=m.paths.exact["rel_error"])
        if m.removal is not None:
            row["full"] = m.removal.full
        out["models"][m.spec] = row
    out["skipped"] = [s.reason for s in res.skipped]
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
