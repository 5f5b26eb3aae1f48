"""diagnose's flags follow the gradient's trend through depth, on real models, checked against an
independent computation: autograd's ‖∂L/∂h‖·‖h‖ per module output (retain_grad) and a least-squares
line written here."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resgrad.data import DataBundle
from resgrad.experiments.diagnose import DiagnoseConfig, run
from resgrad.nets import registry
from resgrad.results import DiagnoseResult

THRESHOLD = 2.0


def _autograd_sensitivity(model: nn.Module, x: torch.Tensor, loss) -> dict[str, float]:
    """‖∂L/∂h‖·‖h‖ for every module output h (``name#k`` for the k-th call), from plain autograd."""
    outs: dict[str, torch.Tensor] = {}
    norms: dict[str, float] = {}
    calls: dict[str, int] = {}

    def hook(name):
        def fn(module, args, out):
            t = out if isinstance(out, torch.Tensor) else next((o for o in out if isinstance(o, torch.Tensor)), None) \
                if isinstance(out, (tuple, list)) else None
            if t is None or not t.requires_grad:
                return
            k = calls.get(name, -1) + 1
            calls[name] = k
            t.retain_grad()
            key = f"{name}#{k}" if k else name
            outs[key] = t
            norms[key] = float(t.detach().double().norm())  # now: a later in-place op (+= identity) changes t
        return fn

    hs = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    model.train()
    loss(model, x).backward()
    for h in hs:
        h.remove()
    return {n: float(t.grad.double().norm()) * norms[n] for n, t in outs.items() if t.grad is not None}


def _lsq(ys: list[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through (k, ys[k]), k = 0, 1, ..."""
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    sxx = sum((k - mx) ** 2 for k in range(n))
    b = sum((k - mx) * (y - my) for k, y in enumerate(ys)) / sxx
    return my - b * mx, b


def _expected(names: list[str], s: dict[str, float], side=lambda name: False):
    """The trend and the flags as the docs of diagnose state them, computed here from ``s``."""
    pts = [n for n in names if s.get(n, 0) > 0]
    y = {n: math.log10(s[n]) for n in pts}
    main = [n for n in pts if not side(n)]
    while True:
        a, b = _lsq([y[n] for n in main])
        keep = [n for k, n in enumerate(main) if y[n] - (a + b * k) > -THRESHOLD]
        if len(keep) == len(main) or len(keep) < 2:
            break
        main = keep
    a, b = _lsq([y[n] for n in main])
    rise = b * (len(main) - 1)  # decades gained from the input end to the output end
    verdict = "vanishing" if rise >= THRESHOLD else "exploding" if rise <= -THRESHOLD else "healthy"
    end = a + b * (len(main) - 1)
    flags, k = {}, -0.5
    for n in names:
        if n in main:
            k = main.index(n)
        elif k == int(k):
            k += 0.5
        if n not in y:
            continue
        fitted = a + b * min(max(k, 0.0), len(main) - 1.0)
        dt, do = y[n] - fitted, y[n] - end
        flags[n] = ("vanishing" if dt <= -THRESHOLD or (verdict == "vanishing" and do <= -THRESHOLD) else
                    "exploding" if dt >= THRESHOLD or (verdict == "exploding" and do >= THRESHOLD) else None)
    return {"slope_forward": b, "verdict": verdict, "rows": len(main), "flags": flags}


def _diagnose(model, x, y, loss, tmp_path=None):
    """Run diagnose on exactly the batch (x, y); return its result and the independent numbers."""
    ref = copy.deepcopy(model)
    for m in ref.modules():  # an in-place ReLU would overwrite the output whose grad is retained
        if hasattr(m, "inplace"):
            m.inplace = False
    bundle = DataBundle("batch", x, y, x, y, 10)
    res = run(DiagnoseConfig(spec="test", batch_size=len(x)), tmp_path, model=model, data=bundle,
              loss=lambda m, xb, yb: loss(m, xb))
    torch.manual_seed(0)
    s = _autograd_sensitivity(ref, x, loss)
    return res, s


def _check_against_autograd(res, s, side=lambda name: False):
    rows = {r.name: r for r in res.layers}
    both = [n for n in rows if rows[n].sensitivity is not None]
    assert both and set(both) <= set(s)  # every measured row is a module output autograd sees
    for n in both:  # the measure itself
        assert rows[n].sensitivity == pytest.approx(s[n], rel=1e-4, abs=1e-30), n
    exp = _expected([r.name for r in res.layers], {n: s[n] for n in both}, side)  # diagnose's rows, autograd's values
    t = res.trend
    assert t.rows == exp["rows"] and t.verdict == exp["verdict"]
    assert -t.slope == pytest.approx(exp["slope_forward"], rel=1e-6, abs=1e-9)  # flow's slope runs backward
    for n, f in exp["flags"].items():
        got = {"vanishing", "exploding"} & set(rows[n].flags)
        assert got == ({f} if f else set()), (n, rows[n].flags, f)
    return rows


def _ce(m, x):
    return F.cross_entropy(m(x), torch.arange(len(x)) % 10)


def test_deep_plain_sigmoid_mlp_vanishes_toward_the_input_without_exploding_rows():
    torch.manual_seed(0)
    model = registry.build("plainmlp-16x32", activation="sigmoid", in_features=40)
    x = torch.randn(16, 40, generator=torch.Generator().manual_seed(1))
    res, s = _diagnose(model, x, torch.arange(16) % 10, _ce)
    rows = _check_against_autograd(res, s)
    assert res.trend.verdict == "vanishing" and res.trend.decades < -5
    assert not [r.name for r in res.layers if "exploding" in r.flags]  # the median rule flagged 27
    van = [i for i, r in enumerate(res.layers) if "vanishing" in r.flags]
    assert van and van == list(range(van[0], van[-1] + 1)) and van[0] == 0  # the input side, in one piece
    assert "vanishing" not in rows["head.2"].flags
    assert {r.cause for r in res.layers if r.flags} == {"saturating-activation"}
    assert "Glorot" in next(c.message for c in res.causes if c.kind == "saturating-activation")
    # the raw gradient falls the same way along the blocks: the measure follows the gradient here
    g = [r.grad_norm for r in res.layers if re.fullmatch(r"blocks\.\d+", r.name)]
    _, b = _lsq([math.log10(v) for v in g])
    assert b == pytest.approx(-res.trend.slope * res.trend.rows / len(g), rel=0.25)


def test_torchvision_resnet_pool_and_head_follow_the_trend():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    res, s = _diagnose(tv.models.resnet18(num_classes=10), x, torch.arange(4), _ce)
    rows = _check_against_autograd(res, s)
    for n in ("avgpool", "fc", "layer4.1.bn2"):
        assert not rows[n].flags, (n, rows[n].flags)
    # per-element RMS, what the median rule judged, jumps at the pooling by the pooled positions (2x2)
    assert rows["avgpool"].grad_rms / rows["layer4.1.relu#1"].grad_rms == pytest.approx(4.0, rel=1e-4)
    assert abs(rows["avgpool"].decades_from_trend) < 0.5
    assert res.trend.verdict == "healthy"


def test_bert_position_embeddings_and_query_key(tmp_path):
    tr = pytest.importorskip("transformers")
    from resgrad.tokens import own_loss

    torch.manual_seed(0)
    cfg = tr.BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = tr.BertForMaskedLM(cfg)
    ids = torch.randint(0, 256, (16, 32), generator=torch.Generator().manual_seed(1))
    res, s = _diagnose(model, ids, ids, lambda m, x: own_loss(m, x, False), tmp_path / "bert")
    rows = _check_against_autograd(res, s)
    pos = rows["bert.embeddings.position_embeddings"]
    assert not pos.flags and pos.numel == 32 * 64  # one copy broadcast over the batch of 16
    qk = [n for n in rows if n.endswith((".query", ".key"))]
    assert len(qk) == 4 and all("vanishing" in rows[n].flags and rows[n].cause == "attention-scores" for n in qk)
    assert not [n for n in rows if rows[n].flags and n not in qk]
    # the softmax the message quotes, computed here from the layer's own query and key
    msg = next(c.message for c in res.causes if c.kind == "attention-scores")
    layer = model.bert.encoder.layer
    with torch.no_grad():
        h = model.bert.embeddings(input_ids=ids)
        probs = []
        for lyr in layer:
            sa = lyr.attention.self
            q = sa.query(h).view(16, 32, 4, 16).transpose(1, 2)
            k = sa.key(h).view(16, 32, 4, 16).transpose(1, 2)
            probs.append(float(torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1).max(-1).values.mean()))
            h = lyr(h)[0] if isinstance(lyr(h), tuple) else lyr(h)
    assert f"{sum(probs) / 2:.3g}" in msg and f"{1 / 32:.3g}" in msg and "near uniform" in msg
    saved = json.loads((tmp_path / "bert" / "results.json").read_text())
    assert saved["trend"]["verdict"] == res.trend.verdict and saved["schema_version"] == 2


def test_convnext_stream_is_the_trend_and_its_layer_scaled_branches_vanish():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    res, s = _diagnose(model, x, torch.arange(2), _ce)
    branch = re.compile(r"stages\.\d+\.blocks\.\d+\.")
    rows = _check_against_autograd(res, s, side=lambda n: bool(branch.match(n)))
    stream = [n for n in rows if n.startswith(("stem", "head")) or ".downsample." in n]
    assert stream and not [n for n in stream if rows[n].flags]  # the median rule flagged them all
    inside = [n for n in rows if branch.match(n) and rows[n].sensitivity]
    assert inside and all("vanishing" in rows[n].flags and rows[n].cause == "layer-scale" for n in inside)
    # 1e-6 layer scale: the branch sits about 6 decades below the stream
    assert all(rows[n].decades_from_trend < -5 for n in inside)
    assert "no-known-cause" not in {c.kind for c in res.causes}


class _Whisper(nn.Module):
    """A main path plus a side branch whose output is scaled by a constant 1e-5 (no parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.side = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.main(x) + 1e-5 * self.side(x))


def test_a_flag_without_a_known_mechanism_says_no_known_cause():
    torch.manual_seed(0)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    res, s = _diagnose(_Whisper(), x, torch.arange(16) % 10, _ce)
    rows = _check_against_autograd(res, s)
    side = [n for n in rows if n.startswith("side.")]
    assert all("vanishing" in rows[n].flags and rows[n].cause is None for n in side)
    c = next(c for c in res.causes if c.kind == "no-known-cause")
    assert c.message.startswith("no known cause") and set(c.modules) == set(side)
    assert not [n for n in rows if rows[n].flags and n not in side]


def test_a_version_1_results_file_still_loads(tmp_path):
    torch.manual_seed(0)
    res = run(DiagnoseConfig(spec="t", input_shape=(8,)), tmp_path / "r", model=nn.Sequential(nn.Linear(8, 4)))
    d = json.loads((tmp_path / "r" / "results.json").read_text())
    d["schema_version"] = 1
    d.pop("trend")
    d.pop("sha256")  # a version-1 file has no digest (it is read unchecked)
    for r in d["layers"]:
        for k in ("output_norm", "sensitivity", "decades_from_trend", "decades_from_output", "cause"):
            r.pop(k, None)
        r["decades_from_median"] = 0.0
    old = DiagnoseResult.from_json(d)
    assert old.trend is None and old.layers[0].sensitivity is None and old.layers[0].decades_from_median == 0.0
    assert [r.name for r in old.layers] == [r.name for r in res.layers]
