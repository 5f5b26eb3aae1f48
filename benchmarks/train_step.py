"""What does the block abstraction cost? ResNet-20 training step, resgrad vs a direct net.

resgrad's ResNet-20 (He et al. 2015 §4.2, option A, 2-D, batch 128) against the same
network written here the usual way: a torchvision-style BasicBlock with ``out += identity``
and the option-A shortcut as a lambda layer, no named skip, no gates. Same weights (copied),
same optimizer, same batch; the two alternate A/B, B/A over many rounds in one process so
that machine load and clock drift hit both alike. Prints medians and the ratio.

    python benchmarks/train_step.py                 # CPU, batch 128
    python benchmarks/train_step.py --rounds 30 --threads 0   # torch's default threads
    python benchmarks/train_step.py --device cuda
    python benchmarks/train_step.py --explain       # + the direct net without in-place ops

Goal: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import resgrad

__all__ = ["DirectResNet", "main"]


# ---- the direct implementation (the usual CIFAR ResNet code) ----------------------------


class LambdaLayer(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, inplace: bool = True) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=inplace)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            p = (cout - cin) // 2  # option A: subsample, zero-pad channels (He et al. 2015 §4.2)
            self.downsample = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.inplace:
            out += identity
        else:  # --explain: resgrad's arithmetic (new tensors), the plain module structure
            out = out + identity
        return self.relu(out)


class DirectResNet(nn.Module):
    def __init__(self, n: int = 3, num_classes: int = 10, inplace: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=inplace)
        layers, cin = [], 16
        for s, w in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if s > 0 and j == 0 else 1, inplace))
                cin = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.pool(x).flatten(1))


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Both nets register their tensors in the same order; copy them pairwise."""
    a, b = src.state_dict(), dst.state_dict()
    assert len(a) == len(b), (len(a), len(b))
    with torch.no_grad():
        for (ka, ta), (kb, tb) in zip(a.items(), b.items(), strict=True):
            assert ta.shape == tb.shape, (ka, kb, ta.shape, tb.shape)
            tb.copy_(ta)


# ---- timing ---------------------------------------------------------------------------


def make_step(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def timed(step: Callable[[], None], n: int, sync: Callable[[], None]) -> tuple[float, float]:
    """Seconds per step: wall clock, and this process's CPU time (robust to other load)."""
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="A/B rounds (order alternates)")
    ap.add_argument("--steps", type=int, default=1, help="training steps per model per round")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; 1 keeps CPU time a fair clock on a shared machine (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--explain", action="store_true",
                    help="add the direct net without in-place ops, to split the cost: in-place vs structure")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    ours = resgrad.build("resnet20", dims=2, in_channels=3, num_classes=10).to(dev).train()
    nets = {"resgrad": ours, "direct": DirectResNet().to(dev).train()}
    if args.explain:
        nets["direct_oop"] = DirectResNet(inplace=False).to(dev).train()
    for n in list(nets)[1:]:
        copy_weights(ours, nets[n])
    x = torch.randn(args.batch_size, 3, 32, 32, device=dev)
    y = torch.randint(10, (args.batch_size,), device=dev)
    with torch.no_grad():  # same network: same output (eval mode, so BN stats stay put)
        diff = max((ours.eval()(x) - m.eval()(x)).abs().max().item() for m in nets.values())
    for m in nets.values():
        m.train()
    assert diff < 1e-4, f"the nets disagree by {diff}"

    steps = {k: make_step(m, x, y) for k, m in nets.items()}
    for s in steps.values():  # warm-up: allocator, kernels, autograd caches
        timed(s, 2, sync)
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        for k in (list(steps) if r % 2 == 0 else list(reversed(steps))):
            w, c = timed(steps[k], args.steps, sync)
            wall[k].append(w)
            cpu[k].append(c)

    print(f"ResNet-20 training step, batch {args.batch_size}, {dev}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps} steps, torch {torch.__version__}")
    print(f"  outputs agree to {diff:.1e}")
    clocks = {"wall": wall} if dev.type == "cuda" else {"wall": wall, "cpu": cpu}
    for clock, times in clocks.items():
        base = statistics.median(times["direct"])
        for k, v in times.items():
            paired = statistics.median(a / b for a, b in zip(v, times["direct"], strict=True))
            print(f"  {clock:4s} {k:10s} {statistics.median(v) * 1e3:8.1f} ms/step  ratio to direct "
                  f"{statistics.median(v) / base:.3f} (medians), {paired:.3f} (median per-round ratio)")
    clock = "wall" if dev.type == "cuda" else "cpu"
    r = statistics.median(a / b for a, b in zip(clocks[clock]["resgrad"], clocks[clock]["direct"], strict=True))
    print(f"resgrad/direct ({clock} clock, median per-round ratio): {r:.3f}  (goal <= 1.05)")

if __name__ == "__main__":
    main()
