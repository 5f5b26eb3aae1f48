"""A realistic study results dict for the report tests (schemas: docs/results-schema.md and
the module docstrings of experiments/flow.py and experiments/ensemble.py).

The numbers are synthetic but shaped like real runs: BN plain nets whose gradient grows
toward the input, residual twins that stay within a few x, a degradation curve that
matches the MNIST-1D sketch of issue 5, and a 54-block path decomposition.
When a real results.json is saved under tests/report/data/, ``real_results`` loads it.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def _flow() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    rows = []
    for arch in ("plain", "residual"):
        for norm in ("batch", "none"):
            for depth in (20, 56, 110):
                n = (depth - 2) // 6 * 3  # 3 stages of (depth-2)/6 blocks
                if arch == "plain" and norm == "batch":
                    growth = 1.4  # BN plain: explodes toward the input (Philipp et al. 2018)
                elif arch == "plain":
                    growth = 1.0  # He init keeps the variance without BN
                elif norm == "batch":
                    growth = 1.0 + 0.5 / n
                else:
                    growth = math.sqrt(2.0)  # x + F(x) doubles the variance per block
                seeds = []
                for _ in range(3):
                    noise = rng.normal(0, 0.05, n).cumsum()
                    prof = 1e-3 * growth ** np.arange(n)[::-1] * np.exp(noise)
                    seeds.append(prof)
                prof = np.exp(np.mean(np.log(seeds), axis=0))
                ratios = [float(s[0] / s[-1]) for s in seeds]
                slopes = [float(np.polyfit(np.arange(n), np.log10(s), 1)[0]) for s in seeds]
                slope = float(np.mean(slopes))
                half = 4.30 * float(np.std(slopes, ddof=1)) / math.sqrt(3)
                ratio = float(np.exp(np.mean(np.log(ratios))))
                verdict = "exploding" if ratio > 10 else "vanishing" if ratio < 0.1 else "healthy"
                rows.append({
                    "model": f"{arch if arch == 'plain' else 'resnet'}{depth}",
                    "family": "he2015", "arch": arch, "norm": norm, "activation": "relu",
                    "init": "he", "depth": depth, "n_blocks": n, "seeds": [0, 1, 2],
                    "profile": [float(v) for v in prof],
                    "profile_seeds": [[float(v) for v in s] for s in seeds],
                    "ratio_first_last": ratio, "ratio_seeds": ratios,
                    "slope": slope, "slope_ci": [slope - half, slope + half],
                    "verdict": verdict,
                })
    return {
        "experiment": "flow",
        "config": {"families": ["he2015"], "depths": [20, 56, 110], "seeds": 3, "data": "mnist1d"},
        "thresholds": {"vanishing_below": 0.1, "exploding_above": 10.0, "on": "ratio_first_last"},
        "configs": rows,
    }


def _curve(final: float, epochs: int, start: float = 0.9) -> list[float]:
    t = np.arange(1, epochs + 1)
    return list(final + (start - final) * np.exp(-t / 5.0))


def _degradation() -> dict[str, Any]:
    finals = {("plain", 20): (0.026, 0.08), ("plain", 56): (0.49, 0.52), ("plain", 110): (0.80, 0.81),
              ("residual", 20): (0.0, 0.06), ("residual", 56): (0.004, 0.05), ("residual", 110): (0.003, 0.05)}
    runs, table = [], []
    epochs = 30
    for (arch, depth), (tr, te) in finals.items():
        for seed in (0, 1):
            jitter = 0.01 * seed
            trc, tec = _curve(tr + jitter, epochs), _curve(te + jitter, epochs)
            n = (depth - 2) // 6 * 3
            runs.append({
                "model": f"{'plain' if arch == 'plain' else 'resnet'}{depth}", "arch": arch,
                "depth": depth, "seed": seed, "params": 10000 * depth,
                "run_dir": f"runs/{arch}{depth}-s{seed}",
                "history": [{"epoch": i + 1, "train_loss": 2.3 * trc[i], "train_error": trc[i],
                             "test_loss": 2.3 * tec[i], "test_error": tec[i], "lr": 0.1,
                             "seconds": 1.5, "steps": 32 * (i + 1)} for i in range(epochs)],
                "final": {"train_loss": 2.3 * trc[-1], "train_error": trc[-1],
                          "test_loss": 2.3 * tec[-1], "test_error": tec[-1]},
                "grad": [{"epoch": i + 1, "block_norms": [1.0] * n,
                          "ratio_first_last": (1.3 if arch == "plain" else 1.02) ** n / (1 + i / 10)}
                         for i in range(epochs)],
            })
    for depth in (20, 56, 110):
        row: dict[str, Any] = {"depth": depth}
        for arch in ("plain", "residual"):
            f = [r["final"] for r in runs if r["arch"] == arch and r["depth"] == depth]
            row[arch] = {
                "train_error": float(np.mean([x["train_error"] for x in f])),
                "test_error": float(np.mean([x["test_error"] for x in f])),
                "train_error_std": float(np.std([x["train_error"] for x in f], ddof=1)),
                "test_error_std": float(np.std([x["test_error"] for x in f], ddof=1)),
                "n_seeds": len(f),
            }
        table.append(row)
    return {"experiment": "degradation",
            "config": {"depths": [20, 56, 110], "epochs": epochs, "seeds": [0, 1], "data": "mnist1d"},
            "runs": runs, "table": table}


def _shortest_window(values: list[float], mass: float) -> tuple[int, int]:
    total = sum(values)
    best = (0, len(values) - 1)
    for lo in range(len(values)):
        acc = 0.0
        for hi in range(lo, len(values)):
            acc += values[hi]
            if acc >= mass * total:
                if hi - lo < best[1] - best[0]:
                    best = (lo, hi)
                break
    return best


def _ensemble() -> dict[str, Any]:
    n = 54
    counts = [math.comb(n, k) for k in range(n + 1)]
    per_path = [2e-3 * 0.255**k for k in range(n + 1)]
    total = [c * m for c, m in zip(counts, per_path, strict=False)]
    exact = [t * 0.3 * 0.97**k for k, t in enumerate(total)]
    lengths = list(range(0, n + 1, 2))

    def eff(values: list[float]) -> dict[str, Any]:
        lo, hi = _shortest_window(values, 0.9)
        return {"lo": lo, "hi": hi, "mass": 0.9, "share_of_paths": sum(counts[lo:hi + 1]) / 2**n}

    rng = np.random.default_rng(1)
    ds = [17, 35]  # first block of stages 2 and 3 subsample
    res_blocks = [{"block": i, "test_error": 0.05 + (0.2 if i in ds else 0.004 * rng.random()),
                   "downsample": i in ds} for i in range(n)]
    plain_blocks = [{"block": i, "test_error": 0.85 + 0.05 * rng.random(), "downsample": i in ds}
                    for i in range(n)]
    ks = list(range(0, 21, 2))
    return {
        "experiment": "ensemble",
        "model": "resnet110", "plain_model": "plain110", "n_blocks": n, "data": "mnist1d",
        "config": {"samples": 1000, "mass": 0.9, "trials": 5},
        "counts": counts,
        "exact": {"norms": exact, "effective": eff(exact)},
        "sampled": {"lengths": lengths, "mean": [per_path[k] for k in lengths],
                    "std": [0.5 * per_path[k] for k in lengths],
                    "total": [total[k] for k in lengths], "samples": 1000,
                    "effective": eff(total), "bn_mode": "eval"},
        "lesion": {
            "residual": {"model": "resnet110", "baseline_test_error": 0.05, "blocks": res_blocks},
            "plain": {"model": "plain110", "baseline_test_error": 0.5, "blocks": plain_blocks},
        },
        "deletion": {
            "residual": {"k": ks, "mean": [0.05 + 0.55 * (1 - math.exp(-k / 12)) for k in ks],
                         "std": [0.01 * k for k in ks]},
            "plain": {"k": ks, "mean": [0.5 if k == 0 else 0.88 for k in ks], "std": [0.01] * len(ks)},
        },
        "reorder": {"kendall_tau": [1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6],
                    "mean": [0.05, 0.07, 0.1, 0.14, 0.19, 0.3, 0.42],
                    "std": [0.0, 0.01, 0.02, 0.02, 0.03, 0.04, 0.05]},
    }


def make_study() -> dict[str, Any]:
    """A full study results dict (flow + degradation + ensemble + setup)."""
    return {
        "experiment": "study",
        "preset": "default",
        "config": {"preset": "default", "data": "mnist1d", "depths": [20, 56, 110], "epochs": 30,
                   "seeds": [0, 1], "device": "cpu"},
        "environment": {"resgrad": "0.1.0", "python": "3.11.2", "torch": "2.14.1", "numpy": "2.4.6",
                        "platform": "Linux-6.1-x86_64", "processor": "x86_64", "cpu_count": 2,
                        "torch_threads": 2, "device": "cpu", "cuda": None},
        "timing": {"started": "2025-01-01T10:00:00", "finished": "2025-01-01T10:04:30",
                   "seconds": {"flow": 40.2, "degradation": 190.5, "ensemble": 39.3, "total": 270.0}},
        "flow": _flow(),
        "degradation": _degradation(),
        "ensemble": _ensemble(),
    }


@pytest.fixture
def study() -> dict[str, Any]:
    return make_study()


@pytest.fixture(scope="session")
def study_html() -> str:
    """The report of ``make_study()``, rendered once for the tests that only read it."""
    from resgrad.report import to_html

    return to_html(make_study())


@pytest.fixture
def real_results() -> dict[str, Any]:
    """A real results.json saved from a quick run, when one is in tests/report/data/."""
    path = DATA / "study-quick.json"
    if not path.exists():
        pytest.skip(f"no real results saved at {path}")
    return json.loads(path.read_text())


@pytest.fixture
def copy_of():
    return copy.deepcopy
