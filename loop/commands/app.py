"""`evalloop app`: serve the Streamlit review app."""

from __future__ import annotations

import argparse

from loop.commands.common import add_common


def make_parser(subparsers) -> argparse.ArgumentParser:
    from loop.app import MAIN_SCRIPT

    p = subparsers.add_parser(
        "app", help="the Streamlit review app (binds 127.0.0.1 by default)",
        description=f"Serves {MAIN_SCRIPT} with Streamlit.",
        formatter_class=argparse.RawDescriptionHelpFormatter)  # the path unwrapped
    add_common(p, task=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host; needs $EVALLOOP_APP_PASSWORD, which "
                        "every session must enter")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.app.serve import serve

    return serve(args.workspace, args.host, args.port, args.allow_remote)
