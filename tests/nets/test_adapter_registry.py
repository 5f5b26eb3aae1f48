"""resgrad.register_adapter: users view their own residual blocks; optional packages stay unimported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import resgrad
from resgrad.nets import Residual, adapt, register_adapter, residual_blocks
from resgrad.nets.adapters import _registry, registered

pytestmark = pytest.mark.usefixtures("one_thread")


class MyBlock(nn.Module):
    """A residual block written the usual way: ``relu(x + f(x))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.f(x))


class MySubBlock(MyBlock):
    pass


def my_adapter(b: MyBlock) -> Residual:
    return Residual(b.f, post=nn.ReLU())


@pytest.fixture
def clean_registry():
    saved, builtin = dict(_registry._ADAPTERS), set(_registry._BUILTIN)
    yield
    _registry._ADAPTERS.clear()
    _registry._ADAPTERS.update(saved)
    _registry._BUILTIN.clear()
    _registry._BUILTIN.update(builtin)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), MyBlock(8), MySubBlock(8), nn.Linear(8, 2)).double()


@pytest.mark.usefixtures("clean_registry")
def test_a_registered_block_is_viewed_and_decomposed():
    m = net()
    with pytest.raises(NotImplementedError, match=r"register_adapter\(MyBlock, fn\)"):
        adapt(m)
    resgrad.register_adapter(MyBlock, my_adapter)
    view = adapt(m)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(view(x), m(x))
    assert len(residual_blocks(view)) == 2  # the subclass is viewed by its base's adapter
    assert {id(p) for p in view.parameters()} == {id(p) for p in m.parameters()}
    dec = resgrad.paths.decompose(view, x, lambda o: o.square().sum())
    assert dec.n == 2 and dec.rel_error < 1e-12
    assert f"{__name__}.MyBlock" in registered()


@pytest.mark.usefixtures("clean_registry")
def test_duplicates_replace_and_specific_classes():
    register_adapter(MyBlock, my_adapter)
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        register_adapter(MyBlock, my_adapter)
    calls = []
    register_adapter(MySubBlock, lambda b: calls.append(b) or my_adapter(b))
    adapt(net())
    assert len(calls) == 1  # the most specific class wins
    register_adapter(MyBlock, my_adapter, replace=True)


@pytest.mark.usefixtures("clean_registry")
def test_a_builtin_can_be_overridden():
    calls = []
    register_adapter(nn.TransformerEncoderLayer, lambda layer: calls.append(layer) or Residual(nn.Identity()))
    adapt(nn.TransformerEncoderLayer(8, 2, 16))
    assert len(calls) == 1


@pytest.mark.usefixtures("clean_registry")
def test_bad_registrations_say_what_was_received():
    with pytest.raises(TypeError, match="class, not an instance"):
        register_adapter(MyBlock(2), my_adapter)
    with pytest.raises(TypeError, match="callable"):
        register_adapter(MyBlock, "my_adapter")
    register_adapter(MyBlock, lambda b: b.f)  # returns no Residual unit
    with pytest.raises(ValueError, match="no resgrad.Residual unit"):
        adapt(net())


def test_adapting_torch_models_imports_no_optional_package():
    code = (
        "import sys, torch, resgrad\n"
        "v = resgrad.adapt(torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16), 2, "
        "enable_nested_tensor=False))\n"
        "assert len(resgrad.residual_blocks(v)) == 4\n"
        "print(sorted(m for m in ('transformers', 'timm') if m in sys.modules))\n"
    )
    src = Path(resgrad.__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_adapting_works_when_the_optional_packages_cannot_be_imported(monkeypatch):
    for name in ("transformers", "timm"):
        monkeypatch.setitem(sys.modules, name, None)  # `import transformers` now raises ImportError
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2,
                                enable_nested_tensor=False)
    view = adapt(enc)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(view(x), enc(x), rtol=1e-5, atol=1e-6)
    assert len(residual_blocks(view)) == 4
