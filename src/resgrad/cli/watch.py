"""``resgrad watch DIR``: serve a live page of a run's gradient norms, losses and alarms."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import UsageError, guarded, say

__all__ = ["command"]


@guarded
def command(
    source: Annotated[Path, typer.Argument(
        metavar="DIR", help="A run folder (its monitor.jsonl and metrics.jsonl) or a JSONL file of monitor rows.")],
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="127.0.0.1 (or localhost) only: the page has no login.")]
    = "127.0.0.1",
    window: Annotated[int | None, typer.Option(
        "--window", help="Steps an alarm's condition must hold (default: the alarms' 200).")] = None,
) -> None:
    """Follow a training run in the browser: gradient-norm heat map, skip/branch share, losses, alarms.

    The layer-by-step heat map of gradient norms, each residual unit's gradient, the loss curves and
    the alarms (vanishing, exploding, dead layers, non-finite), redrawn as rows land. Serves on
    127.0.0.1 only; Ctrl-C stops it.

    Examples:
      resgrad train resnet20 --data mnist1d --monitor 10 --out runs/r20 &  resgrad watch runs/r20
      resgrad watch runs/my-hf-run/monitor.jsonl --port 8800
    """
    from resgrad.watch import LOCAL_HOSTS, PortInUse, make_server

    if host.strip().lower() not in LOCAL_HOSTS:
        raise UsageError(f"--host {host!r}: resgrad watch serves on 127.0.0.1 only (the page has no login); "
                         "drop --host, and from another machine use an SSH tunnel: ssh -L 8765:127.0.0.1:8765 HOST")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port takes 0 to 65535 (0: a free port), received {port}")
    if not source.exists() and not source.parent.is_dir():
        raise UsageError(f"{source} does not exist, nor does its folder; pass a run folder (resgrad train --out) "
                         "or a JSONL file of monitor rows")
    if window is not None and window < 0:
        raise UsageError(f"--window takes a number of steps >= 0, received {window}")
    if source.is_file() and source.suffix not in (".jsonl", ".json", ".ndjson"):
        raise UsageError(f"{source} is not a JSONL file; pass a run folder or a .jsonl file of monitor rows")
    try:
        server = make_server(source, port, **({"window": window} if window is not None else {}))
    except PortInUse as e:
        raise UsageError(e.strerror or str(e)) from None
    except PermissionError:
        raise UsageError(f"port {port} needs privileges on this machine; pass --port 1024 or above "
                         "(or --port 0 for a free one)") from None

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    say(f"watching {source} at {server.url} (Ctrl-C to stop)")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        say("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
