"""`llmsizer serve`: the page and the JSON API on a local port (loopback unless told)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    from llmsizer.cli import arg_int

    s = sub.add_parser(
        "serve", help="a local web page and a JSON API mirroring these commands",
        description="Serve the page at http://HOST:PORT/ and GET /api/<command>?<flag>=<value> "
        "returning the same JSON as `llmsizer <command> ... --json` (GET /api/schema lists "
        "every flag). Binds to loopback unless --host says otherwise.")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (0.0.0.0 exposes the server to the network)")
    s.add_argument("--port", type=arg_int(0, 65535), default=8000, help="port (0: any free)")
    s.add_argument("--verbose", action="store_true", help="log each request on stderr")


def run(args: argparse.Namespace) -> str:
    from llmsizer.errors import SpecError
    from llmsizer.web.server import make_server

    try:
        server, app = make_server(args.host, args.port, args.verbose)
    except OSError as e:
        raise SpecError("port", args.port, f"a free port on {args.host} ({e.strerror})") from None
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    print(f"llmsizer: serving http://{shown}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
    return "llmsizer: server stopped"
