"""``resgrad sweep CONFIG.toml``: a grid of training runs through an executor, one results file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import stats
from ._common import DeviceOpt, OutOpt, console, guarded, resolve_device
from ._executor import ExecutorOptions, executor_options

__all__ = ["command", "table"]


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _err(stat: Any) -> str:
    """``12.3 ± 0.4 [11.2, 13.4]`` in percent; the interval only with two seeds or more."""
    if stat.mean is None:
        return "diverged"
    s = f"{_pct(stat.mean)} ± {_pct(stat.std)}"
    if stat.ci_low is not None:  # cut to an error rate's range; at n = 2 the t interval says nothing
        lo, hi = stats.clip_interval(stat.ci_low, stat.ci_high)
        s += f" [{_pct(lo)}, {_pct(hi)}]" + (" (n = 2: not meaningful)" if stat.n_finite < stats.MIN_INTERVAL_VALUES else "")
    if stat.n_finite < stat.n:
        s += f" ({stat.n - stat.n_finite} diverged)"
    return s


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def table(result: Any) -> Table:
    """The sweep's cells as a rich table (errors in %, mean ± std [95% CI] over seeds)."""
    level = result.cells[0].metrics["test_error"].level if result.cells else 0.95
    t = Table(title=f"sweep: final errors (%), mean ± std [{level:.0%} CI] over seeds; first/last block "
                    "gradient ratio (geometric mean)", title_justify="left")
    for col in ("dataset", "model", "arch", "seeds", "train error", "test error", "grad ratio init",
                "grad ratio final"):
        t.add_column(col, justify="left" if col in ("dataset", "model", "arch") else "right")
    for c in result.cells:
        t.add_row(c.dataset, c.model, c.arch, str(len(c.seeds)), _err(c.metrics["train_error"]),
                  _err(c.metrics["test_error"]), _ratio(c.grad_ratio_init), _ratio(c.grad_ratio_final))
    return t


@guarded
@executor_options
def command(
    config: Annotated[Path, typer.Argument(help="The grid, a TOML file (see `resgrad sweep --help`).")],
    out: OutOpt = None,
    device: DeviceOpt = "auto",
    *,
    executors: ExecutorOptions,
) -> None:
    """Train a grid of plain and residual nets (models x datasets x seeds) with one recipe.

    Every run trains through the executor into its own resumable folder under --out;
    rerun the same command to resume a killed sweep. Prints final errors with mean, std
    and a 95% interval over seeds per cell, and the first/last gradient ratio.

    A sweep file, examples/sweep.toml (unknown keys are errors; about 20 s on two cores):

      family = "he2015"          # or models = ["resnet20", "plainmlp-8x64"]
      depths = [8, 14]
      seeds = [0, 1]
      datasets = ["mnist1d"]
      \\[train]
      epochs = 2
      batch_size = 128

    Examples:
      resgrad sweep examples/sweep.toml --out runs/sweep
      resgrad sweep sweep.toml --workers 2 --threads 1
      resgrad sweep sweep.toml --executor ray --address auto --num-gpus 0.25
      resgrad sweep sweep.toml --executor slurm --partition gpu --gpus-per-task 1 --time 120
    """
    from resgrad.experiments.sweep import load_config, run

    dev = resolve_device(device)
    cfg = load_config(config, device=dev)
    run_dir = out if out is not None else Path("runs") / f"sweep-{config.stem}"

    def log(msg: str) -> None:
        console.print(msg, highlight=False, soft_wrap=True)

    ex = executors.build(run_dir)
    with ex:
        result = run(cfg, run_dir, executor=ex, log=log)
    console.print(table(result))
    log(f"results: {Path(run_dir) / 'results.json'}")
