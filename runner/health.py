"""`runner health` and the health HTTP endpoint the scheduler serves.

`runner health` runs every check (bentley.monitoring.health) once, prints a table (or JSON
with `--json`) and exits 0 when all are ok, 1 when something is degraded, 2 when something
is down: usable from cron, systemd or a container HEALTHCHECK.

`serve_health` answers on a loopback port:
- `GET /health`: `{"status": <worst>, "checks": [...]}`, 200 unless a check is down (503);
- `GET /health/<component>`: that check, 200 when ok or degraded, 503 when down; 404 if unknown.

Module-level imports stay light: `python -m runner` imports this module to build its parser.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from rich.console import Console

    from bentley.monitoring.health import Check

STATUS_STYLE = {"ok": "green", "degraded": "yellow", "down": "red"}
_RANK = {"ok": 0, "degraded": 1, "down": 2}


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as a JSON list")
    parser.add_argument("--profile", default="default", help="params/profiles/<name>.yaml layered on default.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one param (repeatable); the value is YAML",
    )
    parser.add_argument("--outputs", type=Path, help="outputs folder (default: $BENTLEY_OUTPUTS or ./outputs)")


def command(args: argparse.Namespace, root: Path, console: Console) -> int:
    from bentley.config import load_config, outputs_dir
    from bentley.monitoring.health import exit_code, run_checks

    config = load_config(args.profile, args.overrides, root)
    checks = run_checks(config, outputs_dir(args.outputs, root, args.profile), root)
    if args.json:
        console.print_json(json.dumps([c.as_dict() for c in checks]))
    else:
        print_checks(checks, console)
    return exit_code(checks)


def print_checks(checks: Sequence[Check], console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from bentley.monitoring.health import overall

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("component")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for check in checks:
        style = STATUS_STYLE[check.status]
        table.add_row(check.component, f"[{style}]{check.status}[/]", escape(check.detail))
    console.print(table)
    worst = overall(checks)
    console.print(f"overall: [{STATUS_STYLE[worst]}]{worst}[/]")


# --------------------------------------------------------------------------- HTTP


def serve_health(host: str, port: int, checks_fn: Callable[[], Sequence[Check]]) -> ThreadingHTTPServer:
    """Start the health endpoint in a daemon thread; stop it with `shutdown()` + `server_close()`.

    `checks_fn` runs on every request (in the request's thread). Port 0 picks a free port:
    `server_url(server)` says which.
    """

    class Handler(BaseHTTPRequestHandler):
        server_version = "bentley-health"

        def do_GET(self) -> None:
            parts = [p for p in urlsplit(self.path).path.split("/") if p]
            if not parts or parts[0] != "health" or len(parts) > 2:
                self._send(
                    HTTPStatus.NOT_FOUND,
                    {"error": f"no such path {urlsplit(self.path).path!r}; try /health or /health/<component>"},
                )
                return
            try:
                checks = [c.as_dict() for c in checks_fn()]
            except Exception as exc:  # noqa: BLE001 - the endpoint must answer even when checking breaks
                self._send(
                    HTTPStatus.SERVICE_UNAVAILABLE, {"status": "down", "error": f"checks failed: {type(exc).__name__}"}
                )
                return
            if len(parts) == 1:
                worst = max((c["status"] for c in checks), key=_RANK.__getitem__, default="ok")
                code = HTTPStatus.SERVICE_UNAVAILABLE if worst == "down" else HTTPStatus.OK
                self._send(code, {"status": worst, "checks": checks})
                return
            found = [c for c in checks if c["component"] == parts[1]]
            if not found:
                known = [c["component"] for c in checks]
                self._send(HTTPStatus.NOT_FOUND, {"error": f"unknown component {parts[1]!r}", "components": known})
                return
            check = found[0]
            self._send(HTTPStatus.SERVICE_UNAVAILABLE if check["status"] == "down" else HTTPStatus.OK, check)

        def _send(self, code: HTTPStatus, body: dict[str, Any]) -> None:
            payload = json.dumps(body, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
            """No access log: a monitor polling every few seconds would flood stderr."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="bentley-health", daemon=True
    ).start()
    return server


def server_url(server: ThreadingHTTPServer) -> str:
    # The stubs allow a bytes host (what bind() may be given); after binding, server_address is
    # socket.getsockname(), whose host is always text for AF_INET/AF_INET6.
    host, port = cast("tuple[str, int]", server.server_address[:2])
    return f"http://{host}:{port}"
