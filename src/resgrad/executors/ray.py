"""``ray``: Ray core tasks, on a local cluster or one joined by address.

``address=None`` starts a local cluster for the lifetime of the executor (``ray.init()``),
listening on 127.0.0.1 only;
``"auto"`` joins the cluster this machine belongs to, ``"ray://host:10001"`` a remote one.
Every task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions let small nets
share a GPU). Run folders must be on storage every node sees. A worker that dies is a
system failure: Ray reruns the task (``max_retries``) and it resumes from its run folder's
checkpoint; an exception the task raises is not retried (it would only fail again). A
stop signal to this process cancels every task with ``force=False`` (a running one
checkpoints mid-epoch, a queued one never starts) and raises
:class:`~resgrad.executors.Preempted`.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..stopping import Preempted as _RunPreempted
from ._base import Executor, OnEvent, StopSignals, Task, portable, run_task, stopped

__all__ = ["RayExecutor", "import_ray"]


def import_ray() -> Any:
    """The ``ray`` module, or one ImportError line naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ImportError("the ray executor needs Ray, which is not installed; pip install 'resgrad[ray]'") from None
    return ray


@contextmanager
def _loopback_only() -> Iterator[None]:
    """A cluster that exists for one command listens on 127.0.0.1 only, never on the network.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough in Ray 2.60: on Linux
    ``services.resolve_ip_for_localhost`` turns a loopback address back into the machine's
    network address unless ``ray_constants.ENABLE_RAY_CLUSTER`` is off (the switch Ray itself
    turns off on macOS and Windows, for the same reason: no listening on the network for a
    local instance). Off for the start (its processes inherit the environment variable), then
    restored, so joining a real cluster later in this process is unaffected.
    """
    from ray._private import ray_constants

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    old_env, old_flag = os.environ.get(var), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[var] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old_env


def _call(task: Task, threads: int) -> Any:
    import torch

    # Ray sets OMP_NUM_THREADS from num_cpus; torch's pool may already exist, so set it here too.
    torch.set_num_threads(threads)
    try:
        return run_task(task)
    except Exception as e:
        raise portable(e, task.label) from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to ``host:port`` first: ray.init waits minutes on an address nobody answers."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not 'auto', 'host:port' or 'ray://host:port'; e.g. "
                         "--address auto, or --address ray://head-node:10001")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(f"cannot reach a Ray cluster at {address!r} ({e.strerror or type(e).__name__}); start one "
                         "there with `ray start --head`, check the address, or drop --address for a local "
                         "cluster") from None


class RayExecutor(Executor):
    """Ray core tasks, one per run."""

    kind = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 3, init_kwargs: dict[str, Any] | None = None) -> None:
        for name, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a number >= 0 (per run; fractions share a device), received {v!r}")
        if num_cpus == 0 and num_gpus == 0:
            raise ValueError("a run needs some resources: num_cpus and num_gpus are both 0; give num_cpus=1")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"address must be 'auto', 'host:port' or 'ray://host:port', received {address!r}")
        self.address = address.strip() if address else None
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.init_kwargs = dict(init_kwargs or {})
        self._ray = import_ray()
        self._owned = False  # True when this executor called ray.init (and so shuts it down)
        self.startup_seconds: float | None = None

    def describe(self) -> str:
        where = self.address or "a local cluster"
        return f"ray on {where}, {self.num_cpus:g} CPU + {self.num_gpus:g} GPU per run"

    def start(self) -> None:
        """Start or join the cluster (idempotent; ``map`` calls it)."""
        ray = self._ray
        if self.address and self.address != "auto":
            _check_reachable(self.address)
        if ray.is_initialized():
            return  # joined already (by this executor, or by the caller's own ray.init)
        import time

        t = time.perf_counter()
        kw = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
        try:
            if self.address is None:
                with _loopback_only():
                    ray.init(address=None, **{"_node_ip_address": "127.0.0.1", **kw})
            else:
                ray.init(address=self.address, **kw)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = repr(self.address) if self.address else "a local cluster"
            raise ValueError(f"cannot start or reach Ray at {where} ({first[:160]}); start a cluster with "
                             "`ray start --head` and pass --address auto, or drop --address for a local one") from None
        self._owned = True
        self.startup_seconds = time.perf_counter() - t

    def map(self, tasks: Sequence[Task], *, on_start: OnEvent | None = None,
            on_done: OnEvent | None = None) -> list[Any]:
        ray = self._ray
        self.start()
        threads = max(1, math.floor(self.num_cpus)) if self.num_cpus >= 1 else 1
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
                            retry_exceptions=False)(_call)
        tasks = list(tasks)
        refs = []
        for i, t in enumerate(tasks):
            if on_start:
                on_start(i, t, None)
            refs.append(remote.options(name=f"resgrad:{t.label or i}").remote(t, threads))
        index = {r.hex(): i for i, r in enumerate(refs)}
        results: list[Any] = [None] * len(tasks)
        waiting = list(refs)
        finished = 0
        cancelled = False
        stop = StopSignals(forward=True)
        try:
            with stop:
                while waiting:
                    # A timeout, so a stop signal is acted on while tasks run.
                    done, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
                    if stop.signum is not None and not cancelled:
                        # force=False raises KeyboardInterrupt in a running task by simulating SIGINT
                        # (interrupt_main), which fit's handler turns into a mid-epoch checkpoint;
                        # queued tasks never start.
                        for r in waiting:
                            ray.cancel(r, force=False)
                        cancelled = True
                    for r in done:
                        i = index[r.hex()]
                        try:
                            results[i] = ray.get(r)
                        except ray.exceptions.TaskCancelledError:
                            continue  # stopped (checkpointed) or never started
                        except ray.exceptions.RayTaskError as e:
                            cause = getattr(e, "cause", None)
                            if isinstance(cause, _RunPreempted) or stop.signum is not None and isinstance(
                                    cause, KeyboardInterrupt):
                                stop.signum = stop.signum or getattr(cause, "signum", None) or signal.SIGINT
                                continue
                            raise (cause if isinstance(cause, BaseException) else RuntimeError(str(e))) from None
                        except ray.exceptions.WorkerCrashedError:
                            raise RuntimeError(f"{tasks[i].label}: its Ray worker died {self.max_retries + 1} times "
                                               "(killed, or out of memory?); rerun to resume it, or raise "
                                               "--num-cpus so fewer runs share a node") from None
                        finished += 1
                        if on_done:
                            on_done(i, tasks[i], results[i])
            if stop.signum is not None:
                raise stopped(stop.signum, finished, len(tasks))
        except BaseException:
            if not cancelled:
                for r in waiting:  # nothing left running on the cluster once we give up
                    ray.cancel(r, force=True)
            raise
        return results

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False
