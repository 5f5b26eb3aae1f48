"""The ``resgrad watch`` server: the standard library's ThreadingHTTPServer on 127.0.0.1 only.

Routes: ``/`` the page (one HTML document, its script and style inline: no CDN, no network),
``/data?offset=N&generation=G`` the JSON the page polls (:meth:`RunFiles.data`: the rows after
byte N of the monitor file), ``/favicon.ico`` nothing. Requests whose ``Host`` header names
another host are refused (403), so a web page elsewhere cannot read the run through DNS
rebinding. Torch-free: the server starts in a fraction of a second beside a training job.
"""

from __future__ import annotations

import errno
import json
import math
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._page import PAGE
from .follow import RunFiles

__all__ = ["LOCAL_HOSTS", "PortInUse", "make_server", "WatchServer"]

LOCAL_HOSTS = ("127.0.0.1", "localhost")  # what --host accepts; the server binds 127.0.0.1 itself


class PortInUse(OSError):
    """The port is taken (the message names it and ``--port``)."""


def _clean(obj: Any) -> Any:
    """NaN/Inf as null, so the answer is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class WatchServer(ThreadingHTTPServer):
    daemon_threads = True  # an open poll never holds up Ctrl-C
    allow_reuse_address = True

    def __init__(self, port: int, run: RunFiles, title: str) -> None:
        self.run = run
        self.page = PAGE.replace("__TITLE__", _html(title)).encode()
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class _Handler(BaseHTTPRequestHandler):
    server: WatchServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one line per poll would bury the terminal

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _local(self) -> bool:
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or not host.startswith("[") else host
        return name in LOCAL_HOSTS or name == "[::1]"

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._local():
            self._send(403, b"resgrad watch answers requests for 127.0.0.1 only\n", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif url.path == "/data":
            q = parse_qs(url.query)
            try:
                offset = int(q.get("offset", ["0"])[0])
                gen = q.get("generation", [""])[0]
                generation = int(gen) if gen not in ("", "null") else None
            except ValueError:
                self._send(400, b'{"error": "offset and generation must be integers"}', "application/json")
                return
            body = json.dumps(_clean(self.server.run.data(offset, generation)), separators=(",", ":")).encode()
            self._send(200, body, "application/json")
        elif url.path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")


def make_server(source: str | os.PathLike, port: int = 0, **alarm_overrides: Any) -> WatchServer:
    """A server for the run at ``source`` (a folder or a JSONL file) on 127.0.0.1:``port``
    (0: a free one); :class:`PortInUse` when the port is taken. Serve with ``serve_forever()``."""
    run = RunFiles(source, **alarm_overrides)
    try:
        return WatchServer(port, run, str(source))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(errno.EADDRINUSE, f"port {port} on 127.0.0.1 is in use (another resgrad watch, or "
                                              "another server); pass another --port, or --port 0 for a free one") from None
        raise
