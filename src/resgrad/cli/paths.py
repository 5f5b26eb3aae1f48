"""``resgrad paths``: the gradient of a residual net split by path length, exact and sampled."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

if TYPE_CHECKING:
    from torch import nn

    from resgrad.data import DataBundle
    from resgrad.results import EnsembleResult

from ._common import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    SeedOpt,
    UsageError,
    console,
    guarded,
    resolve_device,
)
from ._spec import TOKEN_HELP, InputShapeOpt, parse_shape

__all__ = ["command", "resolve", "token_options", "train_config", "random_bundle", "measured_module"]

VocabOpt = Annotated[int | None, typer.Option("--vocab", help=TOKEN_HELP["vocab"])]
SeqLenOpt = Annotated[int | None, typer.Option("--seq-len", help=TOKEN_HELP["seq_len"])]
TextOpt = Annotated[Path | None, typer.Option("--text", help=TOKEN_HELP["text"])]
LayersOpt = Annotated[int | None, typer.Option("--layers", help=TOKEN_HELP["layers"])]
WidthOpt = Annotated[int | None, typer.Option("--width", help=TOKEN_HELP["width"])]
TokBatchOpt = Annotated[int, typer.Option("--batch-size", help="Token models: sequences in the batch.")]


def _run_record(folder: Path) -> tuple[str | None, str | None]:
    """(model name, dataset name) recorded in a training run folder's config.json."""
    from resgrad.rundir import RunDir
    from resgrad.train import RUN_KIND

    rec = RunDir(folder).read_config(RUN_KIND)
    return (rec.get("model_spec") or {}).get("name"), (rec.get("data") or {}).get("name")


def resolve(spec: str, data: str | None, data_dir: Path | None, tok: dict[str, Any] | None = None,
            input_shape: tuple[int, ...] | None = None, examples: int | None = None,
            ) -> tuple[nn.Module | str, str, bool, DataBundle]:
    """(what run_ensemble takes, display name, is a run folder, the data) for a SPEC.

    A run folder is passed on as its path (run_ensemble loads it and records it); a
    registry name as the name (built, and trained when asked, for the data); any other
    SPEC (``torchvision:NAME``, ``module:factory``, see resgrad.nets.spec) is built and viewed
    through ``resgrad.adapt``, which says what it supports when it cannot.

    ``tok``: the token options (vocab, seq_len, text, batch_size, seed, layers, width); a
    token model is then measured on token ids (``resgrad.tokens``: next-token or same-token
    cross-entropy, the loss the model's own ``.loss`` computes) through ``TokenView``.
    ``input_shape``: instead of a dataset, ``examples`` random inputs of that shape with
    random labels, as ``resgrad diagnose --input-shape`` (no dataset folder needed).
    """
    import resgrad
    from resgrad.nets.registry import contract_of

    from ._spec import resolve_spec, spec_kind, wants_tokens

    tok = tok or {}
    seed = tok.get("seed") or 0  # every model built here initialises its weights from --seed
    from ._pretrained import is_pretrained

    if is_pretrained(spec):  # real text through its own tokenizer; the loss is its own training objective
        return _pretrained_resolve(spec, data, tok, input_shape)
    kind = spec_kind(spec)
    asked = wants_tokens(None, tok.get("vocab"), tok.get("seq_len"), tok.get("text"))
    if asked and data is not None:
        raise UsageError("pass --data or token options (--vocab/--seq-len/--text), not both")
    if input_shape is not None:
        if data is not None:
            raise UsageError("pass --input-shape or --data, not both")
        if asked:
            raise UsageError("token options (--vocab/--seq-len/--text) replace --input-shape; pass one kind")
        if kind == "run":
            raise UsageError(f"{spec} is a run folder, measured on the data it was trained on; drop --input-shape "
                             "(or pass --data)")
    if kind == "hf":
        rm = resolve_spec(spec, input_shape=input_shape, layers=tok.get("layers"), width=tok.get("width"),
                          vocab=tok.get("vocab"), seed=seed)
        if wants_tokens(rm, None, None, None) or asked:
            if input_shape is not None:
                raise UsageError(f"{spec} takes token ids, not --input-shape; size them with --seq-len/--vocab")
            return _token_resolve(rm, tok)
    elif asked:
        return _token_resolve(resolve_spec(spec, seed=seed), tok)

    if kind == "run":
        folder = Path(spec).expanduser()
        model_name, data_name = _run_record(folder)
        name = data or data_name or "mnist1d"
        return str(folder), model_name or folder.name, True, resgrad.load_data(name, **data_kwargs(name, data_dir))
    if kind == "registry":  # built (and trained, with --epochs) by the experiment, from --seed
        contract = contract_of(spec)  # unknown names: one line now
        if input_shape is not None:
            bundle = random_bundle(input_shape, contract.num_classes or 10, examples or RANDOM_EXAMPLES, seed)
        else:
            name = data or "mnist1d"
            bundle = resgrad.load_data(name, **data_kwargs(name, data_dir))
        contract.check(spec.strip(), bundle.input_shape)  # a wrong shape: one line before anything runs
        return spec.strip().lower(), spec.strip().lower(), False, bundle
    if input_shape is not None:
        rm = resolve_spec(spec, input_shape=input_shape, seed=seed)
        view = _view(rm)
        classes = rm.num_classes or _classes(view, spec, input_shape)
        return view, spec, False, random_bundle(input_shape, classes, examples or RANDOM_EXAMPLES, seed)
    name = data or "mnist1d"
    bundle = resgrad.load_data(name, **data_kwargs(name, data_dir))
    rm = resolve_spec(spec, input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=seed)
    return _view(rm), spec, False, bundle


RANDOM_EXAMPLES = 256  # random inputs when --input-shape is given and --examples is not


def random_bundle(shape: tuple[int, ...], num_classes: int, n: int, seed: int) -> DataBundle:
    """``n`` standard-normal inputs of ``shape`` with uniform random labels, drawn from ``seed``."""
    import torch

    from resgrad.data import DataBundle

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return DataBundle(name=f"random-{'x'.join(map(str, shape))}", x_train=x, y_train=y, x_test=x, y_test=y,
                      num_classes=num_classes, info={"source": "random inputs, random labels", "seed": seed})


def _view(rm: Any) -> nn.Module:
    import resgrad

    if rm.kind == "hf":  # an image classifier: its ImageClassifierOutput reduced to the logits
        from resgrad.tokens import LogitsView

        return LogitsView(resgrad.adapt(rm.model))
    return resgrad.adapt(rm.model)


def _classes(model: nn.Module, spec: str, shape: tuple[int, ...]) -> int:
    """The class count a model's output says (a factory's model records none)."""
    import torch

    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *shape))
    except Exception as e:  # the model's own complaint, in one line
        raise UsageError(f"{spec} failed on an input of shape {(1, *shape)}: {type(e).__name__}: "
                         f"{(str(e).strip().splitlines() or [''])[0]}; pass --input-shape matching the model") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise UsageError(f"{spec} returns {tuple(getattr(out, 'shape', ()))} for one example, not (1, classes) "
                         "logits; paths and lesion need a classifier")
    return int(out.shape[1])


def measured_module(model: nn.Module | str, is_run: bool, bundle: DataBundle) -> nn.Module | None:
    """The module measured (views unwrapped; a name or run folder built on the meta device,
    which allocates nothing: only its layer types are read); None when it cannot be rebuilt."""
    import torch

    import resgrad
    from resgrad.pretrained import ObjectiveView
    from resgrad.tokens import LogitsView, TokenView

    if isinstance(model, (TokenView, LogitsView, ObjectiveView)):
        return model.model
    if not isinstance(model, str):
        return model
    spec: dict[str, Any] = {"name": model, "kwargs": {}}
    if is_run:
        from resgrad.rundir import RunDir
        from resgrad.train import RUN_KIND

        spec = RunDir(model).read_config(RUN_KIND).get("model_spec") or {}
    try:
        with torch.device("meta"):
            return resgrad.build(str(spec.get("name")), input_shape=bundle.input_shape, num_classes=bundle.num_classes,
                                 **(spec.get("kwargs") or {}))
    except (ValueError, TypeError, RuntimeError, NotImplementedError):  # a name registered by code not loaded now
        return None


def _token_resolve(rm: Any, tok: dict[str, Any]) -> tuple[nn.Module, str, bool, DataBundle]:
    import resgrad
    from resgrad.tokens import TokenView, model_vocab, token_bundle

    from ._spec import token_inputs

    ids, causal = token_inputs(rm, vocab=tok.get("vocab"), seq_len=tok.get("seq_len"), text=tok.get("text"),
                               n=tok.get("batch_size") or 8, seed=tok.get("seed") or 0)
    vocab = model_vocab(rm.model) or int(ids.max()) + 1
    src = f"text-{Path(tok['text']).name}" if tok.get("text") else f"tokens{vocab}"
    bundle = token_bundle(ids, vocab, causal, f"{src}x{ids.shape[1]}")
    return TokenView(resgrad.adapt(rm.model), causal), rm.name, False, bundle


def _pretrained_resolve(spec: str, data: str | None, tok: dict[str, Any],
                        input_shape: tuple[int, ...] | None) -> tuple[nn.Module, str, bool, DataBundle]:
    from ._pretrained import bundle_of, refuse, text_batch, tools_model

    refuse(spec, vocab=tok.get("vocab"), layers=tok.get("layers"), width=tok.get("width"), input_shape=input_shape,
           data=data)
    pre, batch = text_batch(spec, tok.get("text"), tok.get("seq_len"), tok.get("batch_size") or 8, tok.get("seed") or 0)
    return tools_model(pre), spec.strip(), False, bundle_of(pre, batch)


def token_options(vocab: int | None, seq_len: int | None, text: Path | None, batch_size: int, seed: int,
                  layers: int | None, width: int | None) -> dict[str, Any]:
    """The token/hf options of paths and lesion as one dict for ``resolve``."""
    return {"vocab": vocab, "seq_len": seq_len, "text": text, "batch_size": batch_size, "seed": seed,
            "layers": layers, "width": width}


def train_config(epochs: int, spec: str, input_shape: tuple[int, ...] | None, device: str, seed: int) -> Any:
    """The TrainConfig that ``--epochs N`` asks for (None for 0); one line where it cannot apply.

    Checked before anything is built or loaded: only a registry name is trained first."""
    import resgrad

    from ._spec import spec_kind

    if epochs < 0:
        raise UsageError(f"--epochs must be >= 0, received {epochs}")
    if not epochs:
        return None
    kind = spec_kind(spec)
    if kind != "registry":
        what = "a run folder (already trained)" if kind == "run" else f"a {kind} SPEC"
        raise UsageError(f"--epochs trains a registry name (e.g. resnet20) first; {spec} is {what}: drop --epochs")
    if input_shape is not None:
        raise UsageError("--epochs trains on a dataset, and --input-shape gives random inputs: pass --data instead")
    return resgrad.TrainConfig(epochs=epochs, device=device, seed=seed)


def default_out(spec: str, is_run: bool, what: str, data: str, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in spec)
    return Path(spec) / what if is_run else Path("runs") / f"{what}-{safe}-{data}-s{seed}"


def data_kwargs(data: str | None, data_dir: Path | None) -> dict[str, Any]:
    key = (data or "").strip().lower().replace("-", "").replace("_", "")
    return {"data_dir": str(data_dir)} if data_dir is not None and key == "cifar10" else {}


def _f(x: Any, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(float(x), spec)


def share(x: float) -> str:
    """A share of paths: 0.454%, or 3.6e-05% when tiny (54 blocks: 2^54 paths)."""
    return f"{x:.3%}" if x == 0 or x >= 1e-4 else f"{100 * x:.2g}%"


def _print_paths(r: EnsembleResult, module: nn.Module | None) -> None:
    """The tables; ``module``: the model measured, so the sum check names what it has."""
    from resgrad.paths._common import mode_phrase

    assert r.exact is not None and r.sampled is not None and r.effective is not None and r.counts is not None
    n, counts, ex, sa = r.n, r.counts, r.exact, r.sampled
    total_ex = sum(v for v in ex.norms if v is not None) or 1.0
    sampled_at = dict(zip(sa.lengths, range(len(sa.lengths)), strict=True))
    total_sa = sum(v for v in sa.total if v is not None) or 1.0
    t = Table("k", "paths", "share", "exact ‖g_k‖", "%", "1 path: mean", "± std", "count×mean", "%",
              title=f"{r.model}: gradient at the first block's input by path length (n = {n}; exact: "
              f"batch of {ex.examples}, sampled: per example)", box=None)
    eff_e, eff_s = r.effective.exact, r.effective.sampled
    for k in range(n + 1):
        j = sampled_at.get(k)
        inside = [
            "e" if eff_e and eff_e.lo <= k <= eff_e.hi else "",
            "s" if eff_s and eff_s.lo <= k <= eff_s.hi else "",
        ]
        mark = "".join(inside)
        t.add_row(
            f"{k}{' ' + mark if mark else ''}", f"{counts[k]:.3g}", share(counts[k] / 2**n),
            _f(ex.norms[k]), f"{(ex.norms[k] or 0.0) / total_ex:.1%}",
            "" if j is None else _f(sa.mean[j]), "" if j is None else _f(sa.std[j]),
            "" if j is None else _f(sa.total[j]),
            "" if j is None else f"{(sa.total[j] or 0.0) / total_sa:.1%}",
        )
    console.print(t)
    console.print("e / s: inside the exact / sampled effective window", style="dim")
    mass = r.effective.mass
    ref = r.reference or {}
    training = ex.batchnorm == "train"
    mode = mode_phrase(module, training) if module is not None else f"{ex.batchnorm} mode"
    w = Table("view", "window (lengths)", f"holds (≥{mass:.0%})", "share of 2^n paths",
              title="effective paths", box=None)
    for name, eff in (("exact", eff_e), ("sampled (Veit's method)", eff_s)):
        if eff:
            w.add_row(name, f"{eff.lo}–{eff.hi} of {n}", f"{eff.held or 0:.1%}", share(eff.share_of_paths or 0.0))
    re = ref.get("effective")
    if re:
        w.add_row("Veit et al. 2016 §5 (CIFAR-10)", f"{re['lo']}–{re['hi']} of {ref['n']}", "'almost all'",
                  share(re["share_of_paths"]))
    console.print(w)
    console.print(f"sum check: ‖Σ_k g_k − autograd‖ / ‖autograd‖ = {_f(ex.rel_error, '.2g')} ({ex.dtype}: the "
                  f"two sums agree up to its rounding; {mode}; {ex.examples} examples)", highlight=False)
    console.print(f"sampled: {sa.samples} paths per length; {sa.note}", style="dim", highlight=False)
    console.print(r.effective.explanation, style="dim", highlight=False)


@guarded
def command(
    spec: Annotated[str, typer.Argument(metavar="RUN_DIR|SPEC", help="A run folder, or a model SPEC: "
                                        "registry name, torchvision:NAME, module:factory.")],
    data: Annotated[str | None, typer.Option("--data", "-d",
                                             help="Dataset (default: the run's, else mnist1d).")] = None,
    samples: Annotated[int, typer.Option(help="Sampled paths per length (Veit et al.: 1000).")] = 1000,
    examples: Annotated[int, typer.Option(help="Test examples the gradient is measured on.")] = 500,
    float64: Annotated[bool, typer.Option("--float64", help="Measure on a float64 copy of the model.")] = False,
    mass: Annotated[float, typer.Option(help="Share of the gradient magnitude the effective paths hold.")] = 0.9,
    epochs: Annotated[int, typer.Option(help="For a model name: train this many epochs first (0: at init).")] = 0,
    input_shape: InputShapeOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    vocab: VocabOpt = None,
    seq_len: SeqLenOpt = None,
    text: TextOpt = None,
    batch_size: TokBatchOpt = 8,
    layers: LayersOpt = None,
    width: WidthOpt = None,
) -> None:
    """Split a residual net's gradient by path length, exactly and by Veit's sampling.

    SPEC: a run folder, a registry name (trained first with --epochs),
    torchvision:NAME, timm:NAME, hf:ARCH or module:factory (viewed through
    resgrad.adapt). --input-shape measures on random inputs instead of a
    dataset. Writes results.json and paths.png to --out (default:
    RUN_DIR/paths).

    Examples:
      resgrad paths runs/resnet110-mnist1d-s0
      resgrad paths runs/resnet56-mnist1d-s0 --samples 200 --float64
      resgrad paths resnet20 --data mnist1d --epochs 10
      resgrad paths torchvision:resnet18 --data cifar10 --examples 64
      resgrad paths timm:resnet18 --input-shape 3,64,64 --examples 16
      resgrad paths hf:gpt2 --layers 4 --width 64 --vocab 256 --seq-len 32
      resgrad paths hf:llama --text README.md --seq-len 64 --batch-size 4
      resgrad paths pretrained:smollm2-135m --seq-len 16 --batch-size 2 --samples 100
    """
    import torch

    from resgrad.experiments.ensemble import EnsembleConfig, run_ensemble
    from resgrad.report import paths_figure, save_figure

    if samples < 1 or examples < 1:
        raise UsageError(f"--samples and --examples must be >= 1, received {samples} and {examples}")
    dev = resolve_device(device)
    shape = parse_shape(input_shape)
    train = train_config(epochs, spec, shape, dev, seed)
    torch.manual_seed(seed)  # anything drawn from the global generator follows --seed too
    model, name, is_run, bundle = resolve(spec, data, data_dir,
                                          token_options(vocab, seq_len, text, batch_size, seed, layers, width),
                                          input_shape=shape, examples=examples)
    cfg = EnsembleConfig(
        residual=spec, plain=None, data=bundle.name, train=train, samples=samples, examples=examples,
        float64=float64, mass=mass, seed=seed, device=dev,
    )
    out_dir = out or default_out(spec if is_run else name, is_run, "paths", bundle.name, seed)
    r = run_ensemble(cfg, out_dir, residual=model, data=bundle, names=(name, None), parts=("paths",),
                     log=lambda s: console.print(f"· {s}", style="dim", highlight=False))
    _print_paths(r, measured_module(model, is_run, bundle))
    if bundle.info.get("task") == "sentence-encoder":
        console.print("note: the contrastive loss scores each pair against the batch's other pairs, so a sampled "
                      "path's gradient also carries the other pairs' paths through the negatives", style="yellow",
                      highlight=False)
    for note in r.notes:
        if "untrained" in note:
            console.print(f"note: {note}", style="yellow", highlight=False)
    fig = save_figure(paths_figure(r), Path(out_dir) / "paths.png")
    console.print(f"results: {Path(out_dir) / 'results.json'}  figure: {fig}", highlight=False, soft_wrap=True)
