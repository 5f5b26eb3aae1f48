"""``resgrad flow``: gradient flow at initialisation across depth, plain vs residual."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from resgrad.experiments.config import default
from resgrad.experiments.flow import FlowConfig

from ._common import DeviceOpt, OutOpt, UsageError, console, err_console, guarded, resolve_device
from ._executor import ExecutorOptions, executor_options

if TYPE_CHECKING:
    from resgrad.results import FlowResult

__all__ = ["command"]


def _list(text: str | None, what: str, cast: type = str) -> tuple | None:
    if text is None:
        return None
    try:
        items = tuple(cast(t.strip()) for t in text.split(",") if t.strip())
    except ValueError:
        items = ()
    if not items:
        raise UsageError(f"--{what} must be a comma-separated list, received {text!r}")
    return items


@guarded
@executor_options
def command(
    size: Annotated[str, typer.Option(help="quick (seconds), default (< 3 min on 2 CPU cores) or full.")] = "default",
    families: Annotated[str | None, typer.Option(help="Comma list of mlp, he2015.")] = None,
    depths: Annotated[str | None, typer.Option(help="MLP depths in blocks, e.g. 4,16,64,256.")] = None,
    he_depths: Annotated[str | None, typer.Option(help="He et al. family depths in blocks (rounded to 3n).")] = None,
    activations: Annotated[str | None, typer.Option(help="Comma list of relu, tanh, sigmoid, gelu.")] = None,
    norms: Annotated[str | None, typer.Option(help="Comma list of none, batch.")] = None,
    inits: Annotated[str | None, typer.Option(help="Comma list of he, xavier.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (0..N-1); the CI is across them.")] = None,
    # Defaults: FlowConfig's fields (declared once there; tests/cli/test_cli_defaults.py checks).
    train_steps: Annotated[int, typer.Option(help="SGD steps before measuring (0 = at initialisation).")] = default(
        FlowConfig, "train_steps"),
    data: Annotated[str, typer.Option(help="Dataset of the measured batch.")] = default(FlowConfig, "data"),
    threshold: Annotated[float, typer.Option(help="Verdict threshold: decades of change across the net.")] = default(
        FlowConfig, "threshold_decades"),
    device: DeviceOpt = default(FlowConfig, "device"),
    out: OutOpt = None,
    reuse: Annotated[bool, typer.Option("--reuse/--no-reuse", help="Reuse a finished identical run in --out.")] = True,
    *,
    executors: ExecutorOptions,
) -> None:
    """Measure per-block gradient norms at init for plain and residual nets of growing depth.

    Prints, for the deepest nets, the gradient ratio first/last block and the verdict
    (vanishing / healthy / exploding); writes results.json and figures to --out.

    Examples:
      resgrad flow --size quick
      resgrad flow --families mlp --activations sigmoid --depths 8,32,128
      resgrad flow --train-steps 50 --out runs/flow-trained
      resgrad flow --workers 1                # one chunk after another, in this process

    The grid goes out in chunks through the executor (default: one worker per core); each
    chunk writes its part under --out/chunks, so a killed grid resumes, and every config is
    measured at --threads threads (default 1), so the numbers do not depend on --workers.
    """
    from resgrad.experiments.flow import run_flow

    over: dict[str, Any] = {"train_steps": train_steps, "data": data, "threshold_decades": threshold,
                            "device": resolve_device(device)}
    for key, text, cast in (("families", families, str), ("depths", depths, int), ("he_depths", he_depths, int),
                            ("activations", activations, str), ("norms", norms, str), ("inits", inits, str)):
        v = _list(text, key.replace("_", "-"), cast)
        if v is not None:
            over[key] = v
    if seeds is not None:
        if seeds < 1:
            raise UsageError(f"--seeds must be >= 1, received {seeds}")
        over["seeds"] = tuple(range(seeds))
    config = FlowConfig.preset(size, **over)
    out_dir = out if out is not None else Path("runs") / f"flow-{size}"
    t0 = time.perf_counter()
    last = [t0]

    def progress(i: int, n: int, row: dict[str, Any]) -> None:
        now = time.perf_counter()
        if now - last[0] > 2 or i == n:
            last[0] = now
            err_console.print(f"flow: {i}/{n} configs, {now - t0:.0f} s", highlight=False, style="dim")

    if executors.threads is not None:
        config = replace(config, threads=executors.threads)
    with executors.build(Path(out_dir)) as ex:
        res = run_flow(config, out_dir, reuse=reuse, progress=progress, executor=ex)
    _print(res)
    figures = _write_figures(res, out_dir, config.figure_formats)
    console.print(f"wall time {res.wall_time_s or 0:.1f} s; results: {out_dir / 'results.json'}"
                  + (f"; figures: {', '.join(figures)}" if figures else ""), highlight=False, soft_wrap=True)


def _write_figures(res: FlowResult, out_dir: Path, formats: tuple[str, ...]) -> list[str]:
    """Log-scale profiles at the largest depth and the ratio against depth, in each format."""
    from resgrad.report import flow_figures, save_figure

    names = []
    for stem, fig in flow_figures(res).items():
        for i, ext in enumerate(formats):
            save_figure(fig, out_dir / f"{stem}.{ext}", dpi=110 if ext == "png" else None, tight=True,
                        close=i == len(formats) - 1)
            names.append(f"{stem}.{ext}")
    return names


def _fmt_ratio(log10: float | None) -> str:
    if log10 is None or not math.isfinite(log10):
        return "n/a"
    return f"1e{log10:+.0f}" if abs(log10) >= 3 else f"{10 ** log10:.3g}"


def _print(res: FlowResult) -> None:
    t = res.thresholds
    table = Table("family", "blocks", "norm", "act", "init", "plain", "residual", box=None,
                  title=f"‖∂L/∂x_first‖/‖∂L/∂x_last‖ of the deepest nets (verdict: ±{t.decades:g} decades, "
                        f"CI {t.ci_level:.0%})")
    colour = {"vanishing": "blue", "exploding": "red", "healthy": "green", "non-finite": "magenta"}
    for r in res.summary.largest_depth:
        cells = []
        for a in (r.plain, r.residual):
            if a is None:
                cells.append("")
                continue
            cells.append(f"{_fmt_ratio(a.log10_ratio)} [{colour.get(a.verdict, 'white')}]{a.verdict}[/]")
        table.add_row(r.family, str(r.depth), r.norm, r.act, r.init, *cells)
    console.print(table)
