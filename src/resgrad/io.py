"""Files that survive a crash: atomic writes (temp file + rename), run metadata."""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "jsonable", "write_json", "read_json", "environment"]


TEMP_PATTERN = ".*.tmp"  # what atomic_write leaves behind when killed mid-write (a RunDir's writer removes them)


def atomic_write(
    path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w", *,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync, rename.

    A reader (or a resumed run) sees the old file or the new one, never half of one.
    ``before_replace(tmp)`` runs on the complete temp file just before the rename (a checksum,
    say). A full disk is one OSError naming the file; the old file is left intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _os_error(e, path) from None
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (umask applies).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and _disk_full(path)):
            raise _os_error(e, path) from None
        raise
    return path


def _disk_full(path: Path) -> bool:
    # torch.save reports a full disk as "[enforce fail at inline_container.cc] unexpected pos".
    try:
        return shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        return False


def _os_error(e: BaseException, path: Path) -> OSError:
    """One line naming the file and what to do, for a full disk or a folder we may not write."""
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC or (code is None and _disk_full(path)):
        return OSError(errno.ENOSPC, f"the disk is full writing {path}; free some space and rerun the same "
                                     f"command (the previous {path.name}, if any, is intact)")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OSError(code, f"cannot write {path}: {os.strerror(code)}; pass an --out folder you can write to")
    return e if isinstance(e, OSError) else OSError(str(e))


def _clean(o: Any) -> Any:
    # JSON has no NaN/Inf: write them as null so every reader (and the browser) can parse.
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "tolist"):  # numpy / torch scalars and arrays
        return _clean(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return o


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON would give it back: tuples as lists, non-finite floats as None."""
    return json.loads(json.dumps(_clean(obj), allow_nan=False))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (non-finite floats become null)."""
    text = json.dumps(_clean(obj), indent=2, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def _cpu_name() -> str:
    # platform.processor() is often just "x86_64"; Linux names the model in /proc/cpuinfo.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | None = None) -> dict[str, Any]:
    """Versions and hardware, recorded in every run (so a number can be traced to what produced it)."""
    import numpy
    import torch

    from ._version import __version__

    env: dict[str, Any] = {
        "resgrad": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "cuda": torch.version.cuda,
    }
    if device is not None:
        env["device"] = str(device)
        if str(device).startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(torch.device(device))
            env["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")  # which GPU a pool worker had
    return env
