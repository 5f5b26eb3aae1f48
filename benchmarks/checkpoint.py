"""What does a mid-epoch checkpoint cost? ResNet-110's full training state, saved and verified.

On SIGTERM, ``fit`` finishes the step in flight and writes a mid-epoch checkpoint (model,
SGD momentum buffers, scheduler, RNG states, the epoch's partial losses) through
``RunDir.save_checkpoint``: ``torch.save`` to a temp file, its SHA-256 into
``last.pt.sha256``, fsync, rename. Slurm sends SIGKILL 30 s after SIGTERM by default
(``KillWait``), so the step plus this save must fit well inside that. Prints the median
seconds of save and of load (checksum verified) over a few rounds, and the file size.

    python benchmarks/checkpoint.py                 # ResNet-110, 1-D (MNIST-1D) and 2-D (CIFAR-10)
    python benchmarks/checkpoint.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import resgrad
from resgrad.rundir import RunDir

__all__ = ["main"]


def _state(model: torch.nn.Module) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():  # momentum buffers exist after one step: the real size
        p.grad = torch.zeros_like(p)
    opt.step()
    return {"format": 1, "epoch": 3, "step": 1234, "finished": False, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()},
            "partial": {"pos": 100, "losses": torch.zeros(391)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for label, shape in (("ResNet-110, 1-D (MNIST-1D)", (1, 40)), ("ResNet-110, 2-D (CIFAR-10)", (3, 32, 32))):
        state = _state(resgrad.build_for("resnet110", shape, 10))
        save, load = [], []
        with tempfile.TemporaryDirectory() as d:
            run = RunDir(d)
            for _ in range(args.rounds):
                t = time.perf_counter()
                run.save_checkpoint(state)
                save.append(time.perf_counter() - t)
                t = time.perf_counter()
                run.load_checkpoint()
                load.append(time.perf_counter() - t)
            size = run.checkpoint_path.stat().st_size
        print(f"{label}: save {statistics.median(save):.3f} s, load+verify {statistics.median(load):.3f} s, "
              f"{size / 2**20:.1f} MiB (median of {args.rounds})")


if __name__ == "__main__":
    main()
