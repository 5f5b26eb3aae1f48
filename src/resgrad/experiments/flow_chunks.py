"""A flow grid in parts, through an executor: each part a Task writing a FlowChunk, reused after a kill.

The grid's groups go out in ``chunks`` parts (group k, k + chunks, ...: every part gets shallow and
deep nets alike) plus the signal measurement; a part whose results.json validates for the same
config is not measured again. Every measurement seeds itself and runs at ``config.threads``
threads, so the combined result equals the in-process grid's bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..data import load as load_data
from ..executors import Executor, Task
from ..io import jsonable
from ..results import FlowResult
from ..results.flow import FlowChunk
from ..rundir import RunDir
from .flow_summary import combine

__all__ = ["fan_out", "part_key", "unnull"]

TASK = "resgrad.experiments.flow:measure_chunk"  # the Task that measures one part (a worker imports it)


def part_key(comparable: dict[str, Any], part: str, chunk: int, chunks: int) -> dict[str, Any]:
    """The config a part's FlowChunk records: the grid's comparable config and the part's place."""
    return jsonable({"flow": comparable, "part": part, "chunk": chunk, "chunks": chunks})


def unnull(v: Any) -> Any:
    """A part's measurements as measured: JSON's nulls back to NaN."""
    # A raw measurement holds no None: a null in a part's JSON was a NaN/Inf (JSON has none). The
    # combined result nulls them again, so NaN for all of them gives the same FlowResult.
    if v is None:
        return float("nan")
    if isinstance(v, list):
        return [unnull(x) for x in v]
    if isinstance(v, dict):
        return {k: unnull(x) for k, x in v.items()}
    return v


def fan_out(config: Any, run_dir: RunDir, ex: Executor, chunks: int, reuse: bool,
            progress: Callable[[int, int, Any], None], *, grid: list[tuple], comparable: dict[str, Any]) -> FlowResult:
    """Measure ``grid`` (the FlowConfig ``config``'s groups) in parts through ``ex``; combine them.

    ``comparable``: the config's comparable part (what each part records and is reused for).
    """
    t0 = time.perf_counter()
    data = load_data(config.data)
    n = min(chunks, len(grid))
    parts = [("grid", k, n) for k in range(n)] + ([("signal", 0, 1)] if config.signal is not None else [])
    folders = {p: run_dir.sub("chunks").sub(f"{p[0]}-{p[1]:03d}-of-{p[2]:03d}") for p in parts}
    flow_dict = jsonable(asdict(config))
    found: dict[tuple, FlowChunk] = {}
    if reuse:
        for p in parts:
            got = folders[p].finished(FlowChunk, part_key(comparable, *p))  # a part that does not validate is redone
            if got is not None and (p[0] == "signal" or got.groups == list(range(p[1], len(grid), p[2]))):
                found[p] = got
    todo = [p for p in parts if p not in found]
    total = len(grid) * len(config.seeds)
    done = [sum(len(c.configs) for c in found.values())]

    def finished(i: int, t: Task, _: Any) -> None:
        p = todo[i]
        found[p] = folders[p].read_results(FlowChunk)
        done[0] += len(found[p].configs)
        if found[p].configs:
            progress(done[0], total, found[p].configs[-1])

    tasks = [Task(fn=TASK,
                  config={"flow": flow_dict, "part": p[0], "chunk": p[1], "chunks": p[2]},
                  run_dir=str(folders[p].path), label=f"flow {p[0]} {p[1] + 1}/{p[2]}") for p in todo]
    ex.map(tasks, on_done=finished)
    per_group: list[list[dict[str, Any]] | None] = [None] * len(grid)
    for p in parts:
        if p[0] != "grid":
            continue
        rows = unnull(found[p].configs)
        for gi in found[p].groups:
            per_group[gi] = [r for r in rows if r["group"] == gi]
    missing = [gi for gi, g in enumerate(per_group) if not g or len(g) != len(config.seeds)]
    if missing:
        raise RuntimeError(f"{run_dir.path / 'chunks'}: groups {missing[:5]} have no complete measurement; remove "
                           "that folder and rerun")
    signal = None
    if config.signal is not None:
        s = found[("signal", 0, 1)].signal
        signal = None if s is None else dict(s)
    return combine(config, data, grid, per_group, signal, t0)  # type: ignore[arg-type]


