"""`llmsizer serve`: the page and a JSON API that mirrors the command line, on the standard
library's ThreadingHTTPServer.

Routes:
  GET  /                          the page (index.html)
  GET  /static/<name>             a packaged asset, looked up by exact name (nothing else is served)
  GET  /api/schema                every command's flags, read off the CLI's parser
  GET  /api/i18n?lang=zh          the message catalog for the page's labels
  GET  /api/<command>?<flag>=…    the same JSON as `llmsizer <command> … --json`
  GET  /api/view/<command>?…      {"result": that JSON, "status": exit status, "charts": [...]}
  POST /api/config                a config.json (JSON only, at most MAX_UPLOAD_BYTES) -> a token

Refusals are 400 (404, 405, 411, 413, 414 where HTTP says so) with {"error": "<one line>"}.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from llmsizer.web.api import ApiError, Cli

MAX_URL_CHARS = 8192
MAX_UPLOAD_BYTES = 1 * 2**20  # real config.json files are a few kB
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                 ".png": "image/png", ".json": "application/json"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' "
    "'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def packaged_assets() -> dict[str, bytes]:
    """The page's files, read once from the package: the only files the server ever sends."""
    folder = resources.files("llmsizer.web").joinpath("static")
    return {entry.name: entry.read_bytes() for entry in folder.iterdir()
            if entry.is_file() and not entry.name.startswith(".")}


class App:
    """State shared by the handler threads: the CLI, the assets, the upload folder."""

    def __init__(self) -> None:
        self.cli = Cli()
        self.assets = packaged_assets()
        self.upload_dir = tempfile.mkdtemp(prefix="llmsizer-uploads-")
        self.allowed_hosts: tuple[str, ...] = ()

    def close(self) -> None:
        shutil.rmtree(self.upload_dir, ignore_errors=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "llmsizer"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 15  # seconds a client may take to send its request (slow clients hold a thread)
    app: App  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # quiet unless asked
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    # -- responses -------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        self._send(status, text.encode("utf-8"), "application/json; charset=utf-8", headers)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": " ".join(message.split())})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """http.server's own refusals (request line too long, bad request) as one-line JSON."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may be gone
            self._error(code, message or HTTPStatus(code).phrase)

    # -- routing ---------------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        """On loopback, answer only requests addressed to loopback (no DNS rebinding)."""
        allowed = self.app.allowed_hosts
        if not allowed:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in allowed

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        start = time.perf_counter()
        if len(self.path) > MAX_URL_CHARS:
            return self._error(414, f"a URL of {len(self.path):,} characters is not allowed "
                               f"(at most {MAX_URL_CHARS:,})")
        if not self._host_ok():
            return self._error(400, "this server answers only requests to localhost")
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/" or path == "/index.html":
            return self._asset("index.html")
        if path.startswith("/static/"):
            return self._asset(path[len("/static/"):])
        if not path.startswith("/api/"):
            return self._error(404, "not found")
        try:
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False,
                              max_num_fields=200, errors="strict")
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "the query string is not valid (UTF-8, key=value pairs)")
        route = path[len("/api/"):]
        try:
            if route == "schema":
                return self._json(200, self.app.cli.schema())
            if route == "i18n":
                from llmsizer.i18n import labels

                lang = dict(query).get("lang", "en")  # the page translates whole labels
                return self._json(200, {"lang": lang, "messages": labels(lang)})
            as_view = route.startswith("view/")
            command = route[len("view/"):] if as_view else route
            answer = self.app.cli.run(command, query)
        except ApiError as e:
            return self._error(e.status, e.message)
        except Exception as e:  # a bug: still one line, never a traceback to the client
            return self._error(500, f"internal error: {type(e).__name__}: {e}")
        took = f"{(time.perf_counter() - start) * 1e3:.1f}"
        headers = {"X-Llmsizer-Status": str(answer.status), "Server-Timing": f"app;dur={took}"}
        if answer.notes:
            headers["X-Llmsizer-Notes"] = json.dumps(list(answer.notes), ensure_ascii=True)
        if not as_view:
            return self._json(200, answer.text, headers)
        from llmsizer.charts import charts_for

        data = answer.data()
        charts = charts_for(command, data, dict(query).get("lang", "en"))
        self._json(200, {"command": command, "result": data, "status": answer.status,
                         "notes": list(answer.notes), "charts": charts}, headers)

    def do_POST(self) -> None:
        if not self._host_ok():
            return self._error(400, "this server answers only requests to localhost")
        path = urlsplit(self.path).path
        if path != "/api/config":
            return self._error(405 if path.startswith("/api/") else 404,
                               "POST goes to /api/config only")
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return self._error(411, "send a Content-Length (chunked uploads are not accepted)")
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            return self._error(411, "send a Content-Length")
        length = int(length_text)
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True  # the body is not read
            return self._error(413, f"an upload of {length:,} bytes is not allowed (at most "
                               f"{MAX_UPLOAD_BYTES:,} bytes: a config.json)")
        kind = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        body = self.rfile.read(length)
        if kind not in ("application/json", "text/plain"):
            return self._error(415, f"Content-Type {kind[:60]!r} is not allowed: "
                               "application/json")
        try:
            self._json(200, self.app.cli.upload(body, self.app.upload_dir))
        except ApiError as e:
            self._error(e.status, e.message)

    def _asset(self, name: str) -> None:
        body = self.app.assets.get(name)
        if body is None:
            return self._error(404, "not found")
        suffix = name[name.rfind("."):]
        self._send(200, body, CONTENT_TYPES.get(suffix, "application/octet-stream"))


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a closed browser tab) is not an error to print."""
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def make_server(host: str = "127.0.0.1", port: int = 8000, verbose: bool = False
                ) -> tuple[ThreadingHTTPServer, App]:
    """A server bound to host:port (port 0: any free port) and its shared state."""
    app = App()
    if host in LOOPBACK_NAMES:
        app.allowed_hosts = LOOPBACK_NAMES
    handler = type("BoundHandler", (Handler,), {"app": app})
    server_class: type[ThreadingHTTPServer] = _Server
    if ":" in host:
        import socket

        server_class = type("V6Server", (_Server,),
                            {"address_family": socket.AF_INET6})
    server = server_class((host.strip("[]"), port), handler)
    server.daemon_threads = True
    server.verbose = verbose  # type: ignore[attr-defined]
    return server, app
