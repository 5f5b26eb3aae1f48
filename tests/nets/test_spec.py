"""resgrad.nets.spec: every SPEC form through ``resgrad.build`` is the model the library and the
CLI build; every registry name's registered input contract; bad specs fail in one line."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from typer.testing import CliRunner

import resgrad
from resgrad.cli import app
from resgrad.io import read_json
from resgrad.nets import registry
from resgrad.nets.spec import resolve_spec, spec_kind

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def same_model(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    """Same class, same parameter count, same weights and the same output on ``x``."""
    assert type(a) is type(b)
    assert n_params(a) == n_params(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    with torch.no_grad():
        oa, ob = a.eval()(x), b.eval()(x)
    oa, ob = (getattr(o, "logits", o) for o in (oa, ob))
    torch.testing.assert_close(oa, ob, rtol=0, atol=0)


def seeded(make, seed: int = 0):
    torch.manual_seed(seed)
    return make()


# ---- every form, against the library that defines it ---------------------------------


def test_registry_name_fitted_to_data_is_the_he_net():
    from resgrad.nets import he_net

    got = resgrad.build("resnet20", input_shape=(1, 40), num_classes=10, seed=0)
    ref = seeded(lambda: he_net(20, residual=True, unit="post", block="basic", shortcut="A", dims=1, in_channels=1,
                                num_classes=10))
    same_model(got, ref, torch.randn(3, 1, 40))
    # Without a shape it is the builder called as before: He et al.'s 2-D, 3-channel CIFAR net.
    with torch.device("meta"):
        assert n_params(resgrad.build("resnet56")) == 853_018


def test_build_leaves_the_callers_random_state_alone():
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    resgrad.build("resmlp-4x64", input_shape=(1, 40), num_classes=10, seed=0)
    assert torch.equal(torch.rand(3), want)
    a = resgrad.build("resmlp-4x64", input_shape=(1, 40), num_classes=10, seed=1)
    b = resgrad.build("resmlp-4x64", input_shape=(1, 40), num_classes=10, seed=1)
    c = resgrad.build("resmlp-4x64", input_shape=(1, 40), num_classes=10, seed=2)
    same_model(a, b, torch.randn(2, 1, 40))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_torchvision_form_is_torchvisions_model():
    tv = pytest.importorskip("torchvision")
    got = resgrad.build("torchvision:resnet18", num_classes=7, seed=0)
    ref = seeded(lambda: tv.models.resnet18(weights=None, num_classes=7))
    same_model(got, ref, torch.randn(1, 3, 32, 32))


def test_timm_form_is_timms_model():
    timm = pytest.importorskip("timm")
    got = resgrad.build("timm:resnet18", num_classes=5, seed=0)
    ref = seeded(lambda: timm.create_model("resnet18", pretrained=False, num_classes=5))
    same_model(got, ref, torch.randn(1, 3, 32, 32))


def test_hf_form_is_the_small_config_the_commands_document():
    T = pytest.importorskip("transformers")
    got = resgrad.build("hf:gpt2", layers=3, width=32, vocab=100, seed=0)
    cfg = T.GPT2Config(n_layer=3, n_embd=32, n_head=2, n_inner=128, vocab_size=100, bos_token_id=99, eos_token_id=99)
    ref = seeded(lambda: T.GPT2LMHeadModel(cfg))
    same_model(got, ref, torch.randint(100, (2, 7)))


def test_factory_form_calls_the_users_code(tmp_path, monkeypatch):
    (tmp_path / "user_nets_spec.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "user_nets_spec", raising=False)
    got = resgrad.build("user_nets_spec:make", seed=0)
    sys.path.insert(0, str(tmp_path))
    try:
        import user_nets_spec
    finally:
        sys.path.remove(str(tmp_path))
    same_model(got, seeded(user_nets_spec.make), torch.randn(4, 6))
    assert resgrad.build(str(tmp_path / "user_nets_spec.py") + ":make", seed=0)[1].in_features == 6


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A one-step `resgrad train` run of resmlp-4x64 on synthetic data."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("spec") / "resmlp-4x64-synthetic-s0"
    r = runner.invoke(app, ["train", "resmlp-4x64", "--data", "synthetic", "--epochs", "1", "--device", "cpu",
                            "--out", str(run)])
    torch.set_num_threads(before)
    assert r.exit_code == 0, r.output
    return run


def test_run_folder_form_is_the_trained_model(run_folder):
    got = resgrad.build(str(run_folder))
    ref, record = resgrad.load_run(run_folder)
    same_model(got, ref, torch.randn(2, *record["data"]["input_shape"]))
    rm = resolve_spec(str(run_folder))
    assert rm.kind == "run" and rm.contract is not None and rm.contract.kind == "vector"
    assert rm.contract.shape == tuple(record["data"]["input_shape"])


# ---- the CLI measures the model resgrad.build gives ------------------------------------


def test_cli_lesion_measures_the_model_build_gives(tmp_path):
    """`resgrad lesion NAME --seed 0` (at init) scores exactly resgrad.build(NAME, seed=0)."""
    out = tmp_path / "l"
    r = runner.invoke(app, ["lesion", "resnet8", "--data", "synthetic", "--examples", "40", "--trials", "1",
                            "--device", "cpu", "--seed", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = resgrad.load_data("synthetic")
    model = resgrad.build("resnet8", input_shape=data.input_shape, num_classes=data.num_classes, seed=3).eval()
    with torch.no_grad():
        wrong = int((model(data.x_test[:40]).argmax(1) != data.y_test[:40]).sum()) / 40
    res = read_json(out / "results.json")
    assert math.isclose(res["lesion"]["residual"]["baseline"], wrong, abs_tol=1e-12)
    assert res["models"]["residual"]["params"] == n_params(model)


@pytest.mark.parametrize("spec,kw", [("torchvision:resnet18", {"num_classes": 10}),
                                     ("hf:gpt2", {"layers": 2, "width": 32, "vocab": 64})])
def test_cli_resolver_and_build_agree(spec, kw):
    pytest.importorskip("torchvision" if spec.startswith("torch") else "transformers")
    from resgrad.cli._spec import resolve_spec as cli_resolve

    a = cli_resolve(spec, seed=0, **kw).model
    b = resgrad.build(spec, seed=0, **kw)
    x = torch.randn(1, 3, 32, 32) if spec.startswith("torch") else torch.randint(64, (1, 5))
    same_model(a, b, x)


# ---- registered contracts -------------------------------------------------------------

# Independent of the registry: what each family's builder takes (He et al. conv nets,
# the MLPs, the Transformers) and the arguments that fit it to (3, 16, 16) examples, 7 classes.
FAMILY_KIND = {"resnet": "conv", "plain": "conv", "preresnet": "conv", "preplain": "conv",
               "resmlp": "vector", "plainmlp": "vector", "preln": "sequence", "postln": "sequence",
               "noskip": "sequence"}
# The designs of issue 21 (nets/designs/): Transformer kinds take sequences, the BN-free He nets conv inputs.
FAMILY_KIND.update({k: "sequence" for k in ("deepnorm", "periln", "lns", "mixln", "rezero", "dyt", "hc",
                                             "hc-dynamic", "mhc")})
FAMILY_KIND.update({f"{k}-resnet": "conv" for k in ("fixup", "skipinit", "nf")})
FIT = {"conv": {"dims": 2, "in_channels": 3, "num_classes": 7},
       "vector": {"in_features": 768, "num_classes": 7},
       "sequence": {"length": 768, "patch": 4, "num_classes": 7}}


@pytest.mark.parametrize("name", registry.list_models())
def test_every_registry_name_has_its_familys_contract(name):
    c = registry.contract_of(name)
    kind = FAMILY_KIND[registry.family_of(name)]
    assert c.kind == kind and c.takes_dims == (kind == "conv")
    assert c.kwargs(name, (3, 16, 16), 7) == FIT[kind]
    assert (c.shape, c.num_classes) == ((1, 40), 10)  # default: MNIST-1D examples
    assert spec_kind(name) == "registry"


@pytest.mark.parametrize("name,kind", [("resnet74", "conv"), ("resmlp-7x32", "vector"), ("preln-6", "sequence")])
def test_family_names_with_any_depth_have_the_family_contract(name, kind):
    assert registry.contract_of(name).kind == kind


def test_the_contract_is_registered_not_read_off_the_name(monkeypatch):
    """A builder named without "mlp" that takes vectors is built for vectors."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_CONTRACTS", dict(registry._CONTRACTS))

    @registry.register_model("wide4", contract=registry.VECTOR)
    def wide4(**kw):
        """Four residual layers of width 32."""
        return resgrad.nets.MLP(4, 32, **kw)

    m = resgrad.build("wide4", input_shape=(3, 4, 5), num_classes=6)
    assert m(torch.randn(2, 3, 4, 5)).shape == (2, 6)
    assert [lin.in_features for lin in m.modules() if isinstance(lin, torch.nn.Linear)][0] == 60
    with pytest.raises(TypeError, match="InputContract"):
        registry.register_model("wide5", contract="vector")(wide4)


def test_torchvision_contracts_come_from_torchvision():
    pytest.importorskip("torchvision")
    assert resolve_spec("torchvision:inception_v3").contract.shape == (3, 299, 299)
    c = resolve_spec("torchvision:resnet18", num_classes=4).contract
    assert (c.kind, c.shape, c.num_classes) == ("image", (3, 224, 224), 4)


def test_timm_and_hf_contracts_come_from_their_configs():
    timm = pytest.importorskip("timm")
    want = timm.create_model("vit_tiny_patch16_384", pretrained=False).pretrained_cfg["input_size"]
    assert resolve_spec("timm:vit_tiny_patch16_384").contract.shape == tuple(want) == (3, 384, 384)
    pytest.importorskip("transformers")
    t = resolve_spec("hf:gpt2", layers=1, width=32, vocab=50).contract
    assert (t.kind, t.shape, t.num_classes) == ("tokens", (16,), 50)
    v = resolve_spec("hf:vit", layers=1, width=32).contract
    assert (v.kind, v.shape) == ("image", (3, 32, 32))


# ---- bad specs: one line ---------------------------------------------------------------


@pytest.mark.parametrize("spec,kw,exc,match", [
    ("resnett20", {}, ValueError, "unknown model 'resnett20'; did you mean resnet20"),
    ("resnet20", {"input_shape": (40,)}, ValueError, "convolutional net"),
    ("", {}, ValueError, "SPEC must be"),
    ("no/such/folder", {}, FileNotFoundError, "no run folder"),
    ("no_such_pkg_xyz.mod:make", {}, ImportError, "cannot import"),
    ("torchvision:resnet18", {"shortcut": "B"}, TypeError, "registry models only"),
    ("timm:resnett18", {}, ValueError, "timm has no model"),
    ("hf:gtp2", {}, ValueError, "no architecture 'gtp2'"),
])
def test_a_bad_spec_is_one_line(spec, kw, exc, match):
    if spec.startswith("timm:"):
        pytest.importorskip("timm")
    if spec.startswith("hf:"):
        pytest.importorskip("transformers")
    with pytest.raises(exc, match=match) as e:
        resgrad.build(spec, **kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec,package,extra", [("timm:resnet18", "timm", "timm"), ("hf:gpt2", "transformers", "hf")])
def test_a_missing_extra_is_one_line_from_python(monkeypatch, spec, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # the import fails
    with pytest.raises(ImportError, match=rf"SPEC '{spec}' needs {package}.*pip install 'resgrad\[{extra}\]'") as e:
        resgrad.build(spec)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec,kind", [("resnet56", "registry"), ("ResMLP-7x32", "registry"),
                                       ("torchvision:resnet18", "torchvision"), ("TIMM:resnet18", "timm"),
                                       ("hf:gpt2", "hf"), ("pkg.mod:make", "factory"), ("nets.py:make", "factory"),
                                       ("nosuchname", "registry")])
def test_spec_kind_reads_the_grammar_without_building(spec, kind):
    assert spec_kind(spec) == kind


def test_a_registered_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "resnet8").mkdir()
    monkeypatch.chdir(tmp_path)
    assert spec_kind("resnet8") == "registry" and spec_kind("./resnet8") == "run"
    assert type(resgrad.build("resnet8")).__name__ == "HeNet"
    with pytest.raises(FileNotFoundError, match="not a resgrad run"):
        resgrad.build("./resnet8")
