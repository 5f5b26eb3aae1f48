"""Training throughput of the he2015-cifar10 preset's nets on one GPU, and the preset's projected wall time.

    bash benchmarks/gpu.sh                 # on a CUDA machine (a few minutes on an H100/H200)
    python benchmarks/gpu.py --quick       # anywhere, the CPU included: 2 nets, 2 timed steps (tests the script)

For every net the ``he2015-cifar10`` study preset trains (its degradation stage: plain and
residual twins at each depth, He et al. 2015 §4.2), it times ``resgrad.fit``'s own loop —
batching, the pad-crop-flip augmentation, forward, backward, SGD — in images/s, for
fp32, fp32 + channels_last, bf16 autocast and bf16 + channels_last, and the evaluation
pass's images/s. Inputs are random tensors of CIFAR-10's shape (3x32x32, 10 classes):
nothing is downloaded and CIFAR-10 need not be there; throughput does not depend on the
pixel values.

Projected wall time of the preset's training, per mode: for every run (net x seed),
``epochs x (50,000 / train images/s + 10,000 / eval images/s)``, summed. The flow and
ensemble stages of the study (minutes) are not in it.

Shared GPU: the study's local pool (one worker per core) trains all of the preset's runs at
once, so they share the GPU. In the fastest mode, one process per run (one thread each)
times the same steps with every process started together (a barrier); the wall time from
the common start to the last one's finish, scaled to an epoch (391 steps) plus the runs'
evaluations one after another, is the projection of the preset as ``resgrad study`` runs it.

Device batches: fit keeps the training set on the GPU; its batches (permutation, crops,
flips) must equal the host-resident ones bit for bit.

DDP smoke: ``fit`` through DistributedDataParallel in a one-process group (nccl on CUDA,
gloo on the CPU), a few steps on resnet20: finite losses, config.json records the world
size and backend.

Prints one line per measurement and writes ``$OUT/gpu.json`` when ``OUT`` is set.
Exit code 1 when a check fails (non-finite loss, DDP smoke), 2 without CUDA unless --quick.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import resgrad
from resgrad import Callback, DataBundle, TrainConfig, fit
from resgrad.data.cifar10 import pad_crop_flip
from resgrad.distributed import Dist
from resgrad.experiments.study import preset
from resgrad.nets.registry import twin_names
from resgrad.train import _evaluate, _on_device

CIFAR = (3, 32, 32)
N_TRAIN, N_TEST = 50_000, 10_000  # CIFAR-10's split: what one epoch and one evaluation process
MODES = {  # name -> (TrainConfig.amp, TrainConfig.channels_last)
    "fp32": (None, False),
    "fp32_cl": (None, True),
    "bf16": ("bf16", False),
    "bf16_cl": ("bf16", True),
}


class _Clock(Callback):
    """Wall time from step ``start`` to step ``stop`` (before their optimizer steps), device synchronised.

    With a ``barrier``, every process waits there at step ``start``, so their clocks (CLOCK_MONOTONIC,
    one per machine on Linux) start together.
    """

    def __init__(self, start: int, stop: int, device: torch.device, barrier: Any = None) -> None:
        self.start, self.stop, self.device, self.barrier = start, stop, device, barrier
        self.t0 = self.t1 = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.monotonic()

    def on_before_optimizer_step(self, model, optimizer, step):  # noqa: ANN001 - Callback's signature
        if step == self.start:
            self._now()  # this process's queued work done before it waits for the others
            if self.barrier is not None:
                self.barrier.wait()
            self.t0 = self._now()
        elif step == self.stop:
            self.t1 = self._now()


def random_cifar(n_train: int, n_test: int, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    return DataBundle("cifar10-shaped-random", torch.randn(n_train, *CIFAR, generator=g),
                      torch.randint(0, 10, (n_train,), generator=g), torch.randn(n_test, *CIFAR, generator=g),
                      torch.randint(0, 10, (n_test,), generator=g), 10, pad_crop_flip,
                      {"source": "random tensors of CIFAR-10's shape (throughput only)"})


def time_train(name: str, mode: str, device: torch.device, batch: int, warm: int, steps: int,
               barrier: Any = None) -> dict[str, Any]:
    amp, cl = MODES[mode]
    data = random_cifar((warm + steps + 1) * batch, 2 * batch)  # every timed step inside epoch 1
    torch.manual_seed(0)
    net = resgrad.build_for(name, CIFAR, 10)
    clock = _Clock(warm, warm + steps, device, barrier)
    cfg = TrainConfig(epochs=1, batch_size=batch, max_steps=warm + steps + 1, device=str(device), amp=amp,
                      channels_last=cl, eval_batch_size=batch)
    res = fit(net, data, cfg, callbacks=[clock], progress=False)
    secs = clock.t1 - clock.t0
    return {"images_per_s": steps * batch / secs, "step_ms": 1000 * secs / steps, "t0": clock.t0, "t1": clock.t1,
            "train_loss": res.final["train_loss"], "finite": math.isfinite(res.final["train_loss"])}


def _shared_run(name: str, mode: str, device: str, batch: int, warm: int, steps: int, barrier: Any,
                results: Any) -> None:
    torch.set_num_threads(1)  # the pool's workers: cores // workers threads, one per run here
    try:
        results.put((name, time_train(name, mode, torch.device(device), batch, warm, steps, barrier)))
    except BaseException as e:
        barrier.abort()  # the others must not wait for this one
        results.put((name, {"error": f"{type(e).__name__}: {e}"[:300], "finite": False}))


def time_shared(runs: list[str], mode: str, device: torch.device, batch: int, warm: int,
                steps: int) -> dict[str, Any]:
    """Every run in its own process on one device, timed over the same steps from a common start."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(runs), timeout=600), ctx.Queue()
    procs = [ctx.Process(target=_shared_run, args=(n, mode, str(device), batch, warm, steps, barrier, results))
             for n in runs]
    for p in procs:
        p.start()
    got: dict[str, dict[str, Any]] = {}
    try:
        while len(got) < len(runs):
            try:
                name, r = results.get(timeout=5)
                got[name] = r
            except queue.Empty:
                dead = [n for n, p in zip(runs, procs, strict=True) if p.exitcode not in (None, 0) and n not in got]
                if dead:  # died without a word (killed, out of memory): the others are stuck at the barrier
                    barrier.abort()
                    raise RuntimeError(f"shared run processes died: {dead}") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    bad = {n: r["error"] for n, r in got.items() if "error" in r}
    if bad:
        raise RuntimeError(f"shared runs failed: {bad}")
    wall = max(r["t1"] for r in got.values()) - min(r["t0"] for r in got.values())
    return {"mode": mode, "processes": len(runs), "wall_s": wall, "finite": all(r["finite"] for r in got.values()),
            "images_per_s": {n: r["images_per_s"] for n, r in got.items()},
            "total_images_per_s": len(runs) * steps * batch / wall}


def time_eval(name: str, mode: str, device: torch.device, n: int, batch: int) -> float:
    amp, cl = MODES[mode]
    data = random_cifar(2, n)
    torch.manual_seed(0)
    net = resgrad.build_for(name, CIFAR, 10).to(device)
    if cl:
        net.to(memory_format=torch.channels_last)
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        # fit's own evaluation, in the run's precision and memory format; ends in a host sync
        _evaluate(net, data, batch, device, Dist(), amp, cl)
        return time.perf_counter() - t

    once()  # warm-up (cuDNN autotuning, allocator)
    return n / min(once(), once())


def device_batches(device: torch.device) -> dict[str, Any]:
    """fit keeps the training set on the GPU (train._on_device): its batches must be the host's, bit for bit."""
    if device.type != "cuda":
        return {"pass": True, "skipped": "the data stays on the CPU there"}
    host = random_cifar(1000, 100)
    dev = _on_device(host, device)
    resident = dev.x_train.device.type == "cuda"
    same = []
    for train in (True, False):
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        for (xa, ya), (xb, yb) in zip(host.batches(128, train=train, generator=g1),
                                      dev.batches(128, train=train, generator=g2), strict=True):
            same.append(xb.device.type == "cuda" and torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu()))
    return {"pass": resident and all(same), "resident": resident, "batches_compared": len(same)}


def ddp_smoke(device: torch.device) -> dict[str, Any]:
    """fit through DDP in a one-process group: the nccl (or gloo) path of ``torchrun``, on one device."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1, **kw)
        try:
            torch.manual_seed(0)
            net = resgrad.build_for("resnet20", CIFAR, 10)
            res = fit(net, random_cifar(512, 256), TrainConfig(epochs=2, batch_size=128, device=str(device)),
                      out_dir=f"{tmp}/run", progress=False)
            rec = json.loads(Path(tmp, "run", "config.json").read_text())
            losses = [h["train_loss"] for h in res.history]
        finally:
            dist.destroy_process_group()
    ok = all(math.isfinite(v) for v in losses) and rec["backend"] == backend and rec["world_size"] == 1
    return {"pass": ok, "backend": rec["backend"], "world_size": rec["world_size"], "train_losses": losses}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 nets, 2 timed steps: any device (the CPU included)")
    ap.add_argument("--device", default=None, help="default: cuda when present, else cpu (only with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per net and mode (default 20; quick 2)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.quick:
        print("usage: no CUDA device visible; run on a CUDA machine, or pass --quick", file=sys.stderr)
        return 2

    study = preset("he2015-cifar10", device=str(device))
    deg = study.degradation
    depths = deg.depths[:1] if args.quick else deg.depths
    nets = [n for d in depths for n in twin_names(d, deg.unit)]
    batch = deg.train.batch_size
    warm, steps = (1, args.steps or 2) if args.quick else (5, args.steps or 20)
    modes = ("fp32", "bf16_cl") if args.quick and device.type == "cpu" else tuple(MODES)
    n_eval = 2 * batch if args.quick else 5000

    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "quick": args.quick, "batch_size": batch, "warm_steps": warm,
        "timed_steps": steps, "epochs": deg.train.epochs, "seeds": list(deg.seeds), "nets": {}, "projected_hours": {},
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
    }
    failed = []
    print(f"device {out['device']}, torch {torch.__version__}, batch {batch}, {warm} warm + {steps} timed steps")
    for name in nets:
        out["nets"][name] = {}
        for mode in modes:
            try:
                r = time_train(name, mode, device, batch, warm, steps)
                del r["t0"], r["t1"]
                r["eval_images_per_s"] = time_eval(name, mode, device, n_eval, 1000 if not args.quick else batch)
            except Exception as e:  # one failing mode must not hide the others' figures
                traceback.print_exc()
                r = {"error": f"{type(e).__name__}: {e}"[:300], "finite": False}
            out["nets"][name][mode] = r
            if not r.get("finite"):
                failed.append(f"{name}/{mode}")
            if "error" in r:
                print(f"{name:10s} {mode:8s} FAILED {r['error']}", flush=True)
            else:
                print(f"{name:10s} {mode:8s} train {r['images_per_s']:9.0f} img/s ({r['step_ms']:.1f} ms/step)  "
                      f"eval {r['eval_images_per_s']:9.0f} img/s", flush=True)

    for mode in modes:
        rows = [out["nets"][n][mode] for n in nets]
        if any("error" in r for r in rows):
            continue
        per_run = [N_TRAIN / r["images_per_s"] + N_TEST / r["eval_images_per_s"] for r in rows]
        hours = deg.train.epochs * len(deg.seeds) * sum(per_run) / 3600
        out["projected_hours"][mode] = hours
        scope = "these nets only" if args.quick else f"{len(nets)} nets x {len(deg.seeds)} seed(s)"
        print(f"projected he2015-cifar10 training, {mode}: {hours:.2f} h on this device "
              f"({deg.train.epochs} epochs, {scope}, one run at a time)")

    # The preset as the study runs it: every run at once on this device, in the fastest mode.
    fastest = min(out["projected_hours"], key=out["projected_hours"].get, default=None)
    if fastest is not None:
        try:
            sh = time_shared(nets, fastest, device, batch, warm, steps)
            evals = sum(N_TEST / out["nets"][n][fastest]["eval_images_per_s"] for n in nets)  # one after another
            epoch = math.ceil(N_TRAIN / batch) / steps * sh["wall_s"] + evals
            sh["projected_hours"] = deg.train.epochs * len(deg.seeds) * epoch / 3600
            out["shared"] = sh
            if not sh["finite"]:
                failed.append("shared")
            print(f"shared, {fastest}: {len(nets)} runs at once, {sh['total_images_per_s']:.0f} img/s in all; "
                  f"projected he2015-cifar10 training {sh['projected_hours']:.2f} h on this device "
                  f"({len(deg.seeds)} seed(s) after another, all nets at once)", flush=True)
        except Exception as e:
            traceback.print_exc()
            out["shared"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            failed.append("shared")
            print(f"shared FAILED {out['shared']['error']}", flush=True)

    for check, fn in (("device_batches", device_batches), ("ddp_smoke", ddp_smoke)):
        try:
            out[check] = fn(device)
        except Exception as e:
            traceback.print_exc()
            out[check] = {"pass": False, "error": f"{type(e).__name__}: {e}"[:300]}
        print(("PASS" if out[check]["pass"] else "FAIL") + f" {check} {out[check]}", flush=True)
        if not out[check]["pass"]:
            failed.append(check)

    out["failed"] = failed
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        print(f"wrote {path}")
    print("ALL PASS" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
