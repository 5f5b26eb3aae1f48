"""``resgrad lesion``: delete and reorder blocks of a trained net and its plain twin at test time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

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
from ._spec import InputShapeOpt, parse_shape
from .paths import (
    LayersOpt,
    SeqLenOpt,
    TextOpt,
    TokBatchOpt,
    VocabOpt,
    WidthOpt,
    _run_record,
    default_out,
    resolve,
    token_options,
    train_config,
)

if TYPE_CHECKING:
    from resgrad.data import DataBundle
    from resgrad.results import EnsembleResult
    from resgrad.results.ensemble import Lesion

__all__ = ["command"]


def find_twin(run_dir: str) -> str | None:
    """The plain twin's run folder beside ``run_dir`` (resnet110-... -> plain110-...), if any."""
    from resgrad.nets.registry import plain_twin
    from resgrad.rundir import RunDir

    p = Path(run_dir)
    name = _run_record(p)[0]
    if name is None:
        return None

    plain = plain_twin(name)
    if plain is None or not p.name.startswith(name):
        return None
    twin = RunDir(p.with_name(plain + p.name[len(name):]))
    return str(twin.path) if twin.has_config() else None


def _pm(mean: Any, std: Any) -> str:
    return "n/a" if mean is None else f"{mean:.1%} ± {(std or 0):.1%}"


def chance_error(bundle: DataBundle, examples: int | None) -> float:
    """The error of always answering the most frequent label of the scored examples."""
    import torch

    y = bundle.y_test[:examples].flatten()
    return 1.0 - int(torch.bincount(y).max()) / len(y)


def at_chance(error: float, chance: float) -> bool:
    """An error no better than chance: within TRAINED_BELOW_CHANCE of it, the rule the
    degradation verdicts use for "does this twin train" (5 points, beyond binomial noise)."""
    from resgrad.verdicts import TRAINED_BELOW_CHANCE

    return error > chance - TRAINED_BELOW_CHANCE


def _chance_warning(m: Lesion, chance: float, random_labels: bool) -> None:
    fix = ("the labels are random (--input-shape), so every net scores at chance: pass --data for a dataset"
           if random_labels else "train it first (--epochs N for a registry name) or pass a run folder from "
           "`resgrad train`")
    console.print(f"warning: {m.model}'s baseline error {m.baseline:.1%} is at chance ({chance:.1%}, always the most "
                  "frequent label): deleting blocks cannot raise the error of a net that has learnt nothing, so no "
                  f"verdict is drawn; {fix}", style="yellow", highlight=False)


def _print_lesions(r: EnsembleResult, chance: float, random_labels: bool = False) -> None:
    assert r.lesion is not None and r.deletion is not None
    res, plain = r.lesion["residual"], r.lesion.get("plain")
    t = Table("block", "stage", "", f"{res.model} error", *([f"{plain.model} error"] if plain else []),
              title="test error with one block deleted (Veit et al. 2016 §4.2)", box=None)
    t.add_row("none", "", "", f"{res.baseline:.1%}", *([f"{plain.baseline:.1%}"] if plain else []), style="bold")
    for i, b in enumerate(res.blocks):
        row = [str(b.block), str(b.stage), "downsampling" if b.downsample else "", f"{b.error:.1%}"]
        if plain:
            row.append(f"{plain.blocks[i].error:.1%}")
        t.add_row(*row)
    console.print(t)
    others = [b.error for b in res.blocks if not b.downsample]
    if at_chance(res.baseline, chance):
        _chance_warning(res, chance, random_labels)
    elif others:
        console.print(f"{res.model}: non-downsampling deletions raise error by at most "
                      f"{max(others) - res.baseline:+.1%} (mean {sum(others) / len(others) - res.baseline:+.1%})",
                      highlight=False)
    if plain and at_chance(plain.baseline, chance):
        _chance_warning(plain, chance, random_labels)
    elif plain:
        po = [b.error for b in plain.blocks if not b.downsample]
        console.print(f"{plain.model}: deleting one block gives {min(po):.1%}–{max(po):.1%} error "
                      f"(baseline {plain.baseline:.1%})", highlight=False)
    dl = r.deletion
    d = Table("k deleted", *(f"{v.model} error" for v in dl.values()),
              title=f"k random blocks deleted ({dl['residual'].trials} trials; §4.3)", box=None)
    for j, k in enumerate(dl["residual"].k):
        cells = []
        for v in dl.values():
            cells.append(_pm(v.mean[j], v.std[j]) if j < len(v.k) and v.k[j] == k else "")
        d.add_row(str(k), *cells)
    console.print(d)
    ro = r.reorder
    if ro:
        o = Table("swaps", "Kendall τ", f"{ro.model} error", *(["plain τ", f"{ro.plain.model} error"]
                  if ro.plain else []), title="k random swaps within a stage (§4.4)", box=None)
        for j, k in enumerate(ro.swaps):
            row = [str(k), f"{ro.kendall_tau[j]:.3f}", _pm(ro.mean[j], ro.std[j])]
            if ro.plain and j < len(ro.plain.swaps):
                p = ro.plain
                row += [f"{p.kendall_tau[j]:.3f}", _pm(p.mean[j], p.std[j])]
            o.add_row(*row)
        console.print(o)


@guarded
def command(
    run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="A run folder from `resgrad train` (or a model SPEC).")],
    plain: Annotated[str | None, typer.Argument(metavar="[PLAIN_RUN_DIR]",
                                                help="Its plain twin (default: the plain run beside RUN_DIR).")] = None,
    trials: Annotated[int, typer.Option(help="Random draws per number of deleted / swapped blocks.")] = 5,
    examples: Annotated[int | None, typer.Option(help="Test examples to score (default: all).")] = None,
    no_plain: Annotated[bool, typer.Option("--no-plain", help="Do not look for a plain twin.")] = False,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Dataset (default: the run's).")] = None,
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
    """Delete and reorder blocks at test time and report the test error (Veit et al. 2016 §4).

    RUN_DIR may be a registry name (at init, or trained first with
    --epochs) or any SPEC; --input-shape scores random inputs with random
    labels instead of a dataset. A net whose baseline is at chance gets a
    warning and no verdict. Writes results.json and lesion.png to --out
    (default: RUN_DIR/lesion).

    Examples:
      resgrad lesion runs/resnet110-mnist1d-s0
      resgrad lesion runs/resnet56-mnist1d-s0 runs/plain56-mnist1d-s0 --trials 10
      resgrad lesion resnet20 plain20 --epochs 10
      resgrad lesion hf:gpt2 --layers 4 --vocab 256 --seq-len 32   (error: next-token top-1)
      resgrad lesion pretrained:minilm-l6 --batch-size 32   (error: neighbouring-sentence retrieval)
    """
    import torch

    from resgrad.experiments.ensemble import EnsembleConfig, run_ensemble
    from resgrad.report import lesion_figure, save_figure

    if trials < 1:
        raise UsageError(f"--trials must be >= 1, received {trials}")
    if examples is not None and examples < 1:
        raise UsageError(f"--examples must be >= 1, received {examples}")
    dev = resolve_device(device)
    shape = parse_shape(input_shape)
    train = train_config(epochs, run_dir, shape, dev, seed)
    if train is not None and plain is not None:
        train_config(epochs, plain, shape, dev, seed)  # the twin is trained alike: a name too
    torch.manual_seed(seed)  # anything drawn from the global generator follows --seed too
    tok = token_options(vocab, seq_len, text, batch_size, seed, layers, width)
    model, name, is_run, bundle = resolve(run_dir, data, data_dir, tok, input_shape=shape, examples=examples)
    twin, twin_name = None, None
    if plain is not None:
        own_data = bundle.info.get("inputs") or shape is not None  # token ids or random inputs: made again alike
        twin, twin_name, _, _ = resolve(plain, None if own_data else bundle.name, data_dir, tok, input_shape=shape,
                                        examples=examples)
    elif is_run and not no_plain:
        twin = find_twin(run_dir)
        if twin:
            twin_name = _run_record(Path(twin))[0] or Path(twin).name
            console.print(f"plain twin: {twin}", style="dim", highlight=False)
    cfg = EnsembleConfig(residual=run_dir, plain=plain or twin, data=bundle.name, train=train, trials=trials,
                         eval_examples=examples, seed=seed, device=dev)
    out_dir = out or default_out(run_dir if is_run else name, is_run, "lesion", bundle.name, seed)
    r = run_ensemble(cfg, out_dir, residual=model, plain=twin, data=bundle, names=(name, twin_name),
                     parts=("lesion",), log=lambda s: console.print(f"· {s}", style="dim", highlight=False))
    _print_lesions(r, chance_error(bundle, examples), random_labels=shape is not None)
    fig = save_figure(lesion_figure(r), Path(out_dir) / "lesion.png")
    console.print(f"results: {Path(out_dir) / 'results.json'}  figure: {fig}", highlight=False, soft_wrap=True)
