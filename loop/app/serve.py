"""Serve the review app: `streamlit run loop/app/main.py` for a workspace, on loopback unless asked."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

from loop.core.errors import EvalloopError

PASSWORD_ENV = "EVALLOOP_APP_PASSWORD"  # every session of a remote app must enter it


def streamlit_command(workspace: str | Path, host: str, port: int, login: bool = False
                      ) -> list[str]:
    """The `streamlit run` command line for a workspace; it serves the packaged app module (not
    the checkout's app.py), so an installed wheel works too. `login`: every session must enter
    $EVALLOOP_APP_PASSWORD and a reviewer name first (loop/app/login.py)."""
    from loop.app import MAIN_SCRIPT

    return [sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            # a served app: no source watching, no deploy menu
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
            "--", "--workspace", str(Path(workspace).resolve()), *(["--login"] * login)]


def port_problem(host: str, port: int) -> str | None:
    """Why the app cannot listen on host:port (checked before anything is printed), or None.
    A trial bind with SO_REUSEADDR, as the server sets it: only a live listener refuses it."""
    if not 1 <= port <= 65535:
        return f"--port must be between 1 and 65535, got {port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"the host name does not resolve ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except PermissionError:
            return "permission denied (ports below 1024 need privileges); choose another --port"
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is already in use by another process; stop it or choose " \
                       "another --port"
            return f"{exc.strerror} (is the address one of this machine's?)"
    return None


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
        raise EvalloopError(f"Refusing to serve the app on non-loopback address {host}. Pass "
                            f"--allow-remote (with {PASSWORD_ENV} set) to expose it on purpose.")
    if not loopback and not os.environ.get(PASSWORD_ENV):
        raise EvalloopError(f"Refusing to serve the app on non-loopback address {host} without "
                            f"a login: set {PASSWORD_ENV} in the environment (every session "
                            "must enter it), or keep the default loopback host.")
    if problem := port_problem(host, port):
        raise EvalloopError(f"Cannot serve the app on {host}:{port}: {problem}.")
    print(f"evalloop app on http://{host}:{port} (workspace {workspace}"
          f"{'' if loopback else f', password from ${PASSWORD_ENV}'})", flush=True)
    command = streamlit_command(workspace, host, port, login=not loopback)
    os.execv(command[0], command)
