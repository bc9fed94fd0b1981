"""Serve the review app: `streamlit run loop/app/main.py` for a workspace, on loopback unless asked."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import NoReturn

from loop.core.errors import EvalloopError


def streamlit_command(workspace: str | Path, host: str, port: int) -> list[str]:
    """The `streamlit run` command line for a workspace; it serves the packaged app module (not
    the checkout's app.py), so an installed wheel works too."""
    from loop.app import MAIN_SCRIPT

    return [sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            # a served app: no source watching, no deploy menu
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
            "--", "--workspace", str(Path(workspace).resolve())]


def serve(workspace: str | Path, host: str = "127.0.0.1", port: int = 8501,
          allow_remote: bool = False) -> NoReturn:
    """Become the Streamlit server for the workspace, bound to `host` (loopback unless
    `allow_remote`). The process is replaced (exec), so Ctrl-C and SIGTERM reach the server
    and nothing is left running behind a killed parent."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise EvalloopError(f"Refusing to serve the app on non-loopback address {host}: it has no "
                            "login. Pass --allow-remote to expose it on purpose.")
    print(f"evalloop app on http://{host}:{port} (workspace {workspace})", flush=True)
    command = streamlit_command(workspace, host, port)
    os.execv(command[0], command)
