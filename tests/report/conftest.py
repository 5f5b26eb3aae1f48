"""Real-shaped results for the report tests.

``study-quick.json`` is a real ``resgrad study --preset quick`` results.json (MNIST-1D,
CPU), read through ``resgrad.results.load`` (which migrates older versions), so the tests
see exactly what the experiments write. A test that needs another situation edits the
typed records (``dataclasses.replace``) rather than inventing field names.

Regenerate: ``run_study(preset("quick"), DIR)`` and copy DIR/results.json here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from resgrad.results import StudyResult, load
from resgrad.results.flow import ShatteringFit, ShatteringRow, Signal, SpectrumRow

DATA = Path(__file__).parent / "data"
STUDY = DATA / "study-quick.json"


def load_study() -> StudyResult:
    r = load(STUDY)
    assert isinstance(r, StudyResult)
    return r


def replace_groups(r: StudyResult, match, **changes) -> StudyResult:
    """``r`` with every flow group for which ``match(group)`` holds changed by ``changes``."""
    groups = [dataclasses.replace(g, **changes) if match(g) else g for g in r.flow.groups]
    return dataclasses.replace(r, flow=dataclasses.replace(r.flow, groups=groups))


def make_signal() -> Signal:
    """A hand-made Signal: plain correlation halving per block, residual+BN decaying as depth^-1/2."""
    depths = [4, 8, 16]
    rows, fits, spectrum = [], [], []
    for arch in ("plain", "residual"):
        for norm in ("none", "batch"):
            nb = [2.0 ** -d if arch == "plain" else d ** -0.5 for d in depths]
            for d, c in zip(depths, nb, strict=True):
                rows.append(ShatteringRow(family="mlp", arch=arch, norm=norm, act="relu", init="he", depth=d,
                                          layers=d + 2, seeds=[0], neighbor=c, neighbor_seeds=[c],
                                          autocorrelation=[1.0, c], points=64))
                spectrum.append(SpectrumRow(family="mlp", arch=arch, norm=norm, act="relu", init="he", depth=d,
                                            layers=d + 2, seeds=[0], examples=8, sigma_max=5.0, sigma_min=0.01,
                                            condition=500.0, log10_mean=-0.3, q10=0.05, median=0.6, q90=3.0,
                                            hist_edges=[-2.0, 0.0, 2.0], hist=[0.5, 0.5]))
            fits.append(ShatteringFit(family="mlp", arch=arch, norm=norm, act="relu", init="he", depths=depths, neighbor=nb,
                                      used=len(depths), floor=0.02,
                                      log2_slope=-1.0 if arch == "plain" else -0.1,
                                      power=-3.0 if arch == "plain" else -0.5))
    return Signal(config={"depths": depths}, seconds=1.0, shattering=rows, spectrum=spectrum, fits=fits)


@pytest.fixture
def study() -> StudyResult:
    """A fresh copy of the real quick study (tests may change it freely)."""
    return load_study()


@pytest.fixture(scope="session")
def _study_once() -> StudyResult:
    return load_study()


@pytest.fixture(scope="session")
def study_report(tmp_path_factory, _study_once) -> Path:
    """The report of the real quick study, rendered once for the tests that only read it."""
    from resgrad.report import render

    return render(_study_once, tmp_path_factory.mktemp("study") / "report.html")


@pytest.fixture(scope="session")
def study_html(study_report) -> str:
    return study_report.read_text(encoding="utf-8")



@pytest.fixture
def signal() -> Signal:
    return make_signal()


@pytest.fixture
def study_file() -> Path:
    """The saved quick study (resgrad 0.1 format or newer)."""
    return STUDY


@pytest.fixture
def copy_groups():
    """``copy_groups(study, match, **changes)``: the study with matching flow groups changed."""
    return replace_groups
