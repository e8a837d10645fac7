"""`auditor serve`: browse the results store in a browser (read-only, local by default)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import typer

from auditor.commands.options import RESULTS_DIR
from auditor.summary import run_summary
from ground.errors import AuditorError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    results_dir: Path = RESULTS_DIR,
    port: int = typer.Option(8050, min=0, max=65535, help="TCP port"),
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="allow binding a non-loopback address: "
                                      "anyone who reaches it can read every result in the store"),
) -> None:
    """Serve the store's audits, runs, comparison reports, overview, live progress and profiles."""
    from reports.server import create_app

    if not is_loopback(host):
        if not allow_remote:
            raise AuditorError(f"--host {host} is not a loopback address; add --allow-remote to serve the "
                               "results to other machines")
        print(f"auditor: warning: serving {results_dir} on {host}:{port}, reachable from other machines; "
              "there is no authentication", file=sys.stderr)
    app = create_app(results_dir, run_summary)
    import uvicorn

    print(f"auditor serve: http://{host}:{port}/ (read-only; Ctrl-C stops)", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except OSError as e:
        raise AuditorError(f"cannot serve on {host}:{port} ({e.strerror or e})")
