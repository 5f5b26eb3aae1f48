"""Leaves stay leaves: the torch-free layers import no torch, and the package's torch names load lazily.

Each check runs in a fresh interpreter, where nothing has imported torch yet (this test process may have).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "report" / "data"


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("module", ["resgrad", "resgrad.results", "resgrad.verdicts", "resgrad.report",
                                    "resgrad.stats", "resgrad.io", "resgrad.schema"])
def test_importing_a_torch_free_layer_imports_no_torch(module):
    out = _run(f"import sys, {module}; print('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3])")
    assert out.startswith("False"), f"import {module} imported torch: {out}"


def test_rendering_a_finished_study_imports_no_torch(tmp_path):
    code = (f"import sys, json\n"
            f"from resgrad.report import render, findings\n"
            f"from resgrad.results import load\n"
            f"r = load({str(DATA / 'study-quick.json')!r})\n"
            f"render(r, {str(tmp_path / 'report.html')!r})\n"
            f"render(load({str(DATA / 'transformer-quick.json')!r}), {str(tmp_path / 't.html')!r})\n"
            f"print(len(findings(r)), 'torch' in sys.modules)")
    n, torch = _run(code).split()
    assert int(n) > 5 and torch == "False"
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_the_package_names_load_on_first_use_and_stay_listed():
    out = _run("import sys, resgrad\n"
               "names = set(dir(resgrad))\n"
               "print(all(n in names for n in resgrad.__all__), 'torch' in sys.modules, resgrad.__version__ != '')\n"
               "from resgrad import build, GradientMonitor, fit, TrainConfig, load_data, paths\n"
               "import torch\n"
               "print(isinstance(build('plain20'), torch.nn.Module), callable(fit), paths.__name__, resgrad.nets.__name__)")
    first, second = out.splitlines()
    assert first == "True False True"
    assert second == "True True resgrad.paths resgrad.nets"


def test_an_unknown_name_is_an_attribute_error():
    out = _run("import resgrad\ntry:\n    resgrad.no_such_name\nexcept AttributeError as e:\n    print(e)")
    assert "no_such_name" in out


def test_the_version_has_a_torch_free_home():
    from resgrad import __version__
    from resgrad._version import __version__ as v

    assert v == __version__
    out = _run("import sys\nfrom resgrad._version import __version__\n"
               "print(sorted(m for m in sys.modules if m.startswith('resgrad')))")
    assert out == "['resgrad', 'resgrad._version']"
