"""A realistic study results dict for the report tests (schemas: docs/results-schema.md and
the module docstrings of experiments/flow.py and experiments/ensemble.py).

The numbers are synthetic but shaped like real runs: BN plain nets whose gradient grows
toward the input, residual twins that stay within a few x, a degradation curve that
matches the MNIST-1D sketch of issue 5, and a 54-block path decomposition.
``real_results`` is a real quick study saved under tests/report/data/.
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
    """The He et al. family at 9/27/54 blocks (20/56/110 layers), ReLU and sigmoid, 3 seeds."""
    rng = np.random.default_rng(0)
    t95 = 4.303  # Student t, 2 degrees of freedom
    configs, groups = [], []
    for norm in ("none", "batch"):
        for act in ("relu", "sigmoid"):
            for blocks in (9, 27, 54):
                for arch in ("plain", "residual"):
                    if arch == "plain" and norm == "batch":
                        growth = 1.4 if act == "relu" else 1.02  # BN plain ReLU: explodes (Philipp et al. 2018)
                    elif arch == "plain":
                        growth = 1.0 if act == "relu" else 0.3  # sigmoid without BN: vanishes
                    elif norm == "batch":
                        growth = 1.0 + 0.5 / blocks
                    else:
                        growth = math.sqrt(2.0) if act == "relu" else 1.01  # x + F(x) doubles the variance
                    seed_rows = []
                    for seed in (0, 1, 2):
                        k = np.arange(blocks)[::-1]  # blocks crossed backward from the loss, block 0 first
                        log_rms = -3.0 + k * math.log10(growth) + rng.normal(0, 0.02, blocks).cumsum()
                        log_norm = log_rms + 2.5
                        slope = float(np.polyfit(np.arange(blocks), log_rms[::-1], 1)[0])
                        seed_rows.append({
                            "family": "he2015", "arch": arch, "norm": norm, "act": act, "init": "he",
                            "depth": blocks, "layers": 2 * blocks + 2, "seed": seed, "train_steps": 0,
                            "dtype": "float64", "loss": 2.3, "finite": True,
                            "profile": {"log10_norm": list(log_norm), "log10_rms": list(log_rms),
                                        "norm": list(10**log_norm), "rms": list(10**log_rms)},
                            "log10_ratio": float(log_norm[0] - log_norm[-1]),
                            "ratio_first_last": float(10 ** (log_norm[0] - log_norm[-1])),
                            "slope": slope, "group": len(groups),
                        })
                    slopes = [r["slope"] for r in seed_rows]
                    slope = float(np.mean(slopes))
                    half = t95 * float(np.std(slopes, ddof=1)) / math.sqrt(3)
                    ci = [slope - half, slope + half]
                    decades = slope * (blocks - 1)
                    verdict = ("vanishing" if decades <= -1 and ci[1] < 0 else
                               "exploding" if decades >= 1 and ci[0] > 0 else "healthy")
                    lr = float(np.mean([r["log10_ratio"] for r in seed_rows]))
                    groups.append({
                        "family": "he2015", "arch": arch, "norm": norm, "act": act, "init": "he",
                        "depth": blocks, "layers": 2 * blocks + 2, "seeds": [0, 1, 2],
                        "slope": slope, "slope_ci": ci, "decades": decades, "log10_ratio": lr,
                        "ratio_first_last": 10**lr, "verdict": verdict,
                        "profile_log10_rms": list(np.mean([r["profile"]["log10_rms"] for r in seed_rows], axis=0)),
                    })
                    for r in seed_rows:
                        r.update(slope_ci=ci, decades=decades, verdict=verdict)
                    configs += seed_rows
    return {
        "experiment": "flow", "schema_version": 1,
        "config": {"families": ["he2015"], "archs": ["plain", "residual"], "norms": ["none", "batch"],
                   "activations": ["relu", "sigmoid"], "inits": ["he"], "depths": [9, 27, 54],
                   "seeds": [0, 1, 2], "data": "mnist1d", "batch_size": 128, "dtype": "float64"},
        "data": {"name": "mnist1d", "input_shape": [1, 40], "num_classes": 10, "batch_size": 128},
        "conventions": {"ratio": "ratio_first_last = ||dL/dx_0|| / ||dL/dx_{L-1}||; < 1: the gradient shrinks "
                                 "on its way back to the input"},
        "thresholds": {"decades": 1.0, "ci_level": 0.95},
        "configs": configs, "groups": groups,
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
            "config": {"data": "mnist1d", "depths": [20, 56, 110], "unit": "post", "seeds": [0, 1],
                       "train": {"epochs": epochs, "batch_size": 128, "lr": 0.1}, "monitor": True},
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
def study_report(tmp_path_factory) -> Path:
    """The report of ``make_study()``, rendered once for the tests that only read it."""
    from resgrad.report import render

    return render(make_study(), tmp_path_factory.mktemp("study") / "report.html")


@pytest.fixture(scope="session")
def study_html(study_report) -> str:
    return study_report.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def real_report(tmp_path_factory, _real) -> Path:
    """The report of the real quick study, rendered once."""
    from resgrad.report import render

    return render(_real, tmp_path_factory.mktemp("real") / "report.html")


@pytest.fixture(scope="session")
def _real() -> dict[str, Any]:
    return json.loads((DATA / "study-quick.json").read_text(encoding="utf-8"))


@pytest.fixture
def real_results(_real) -> dict[str, Any]:
    """A real ``resgrad study --preset quick`` results.json (MNIST-1D, CPU), saved from a run.

    Regenerate: ``run_study(preset("quick"), DIR)`` and copy DIR/results.json here.
    """
    return copy.deepcopy(_real)


@pytest.fixture
def real_flow(_real) -> dict[str, Any]:
    """Its flow section, as ``resgrad flow`` would write it on its own."""
    return copy.deepcopy(_real["flow"])


@pytest.fixture
def copy_of():
    return copy.deepcopy
