"""evalloop review app (Streamlit): overview, failures, arena, leaderboard, benchmarks & training.

    evalloop app --workspace W          (binds 127.0.0.1; serves this file, so it works from a wheel)
    streamlit run app.py -- --workspace W    (in a checkout: app.py at the top calls main() here)

Reads the snapshot a writer publishes and writes reviews, corrections and votes to the inbox
(see loop/store/inbox.py), so it keeps working while a nightly cycle holds the database. Pages live in
loop/app/, their queries in loop/store/app_queries.py.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path

import streamlit as st

from loop.app import arena, failures, leaderboard, login, overview, training
from loop.store.app_queries import pending_inbox, snapshot
from loop.store.db import SNAPSHOT_NAME

PAGES = ("Overview", "Failures", "Arena", "Leaderboard", "Benchmarks & training")


def arguments() -> tuple[Path, bool]:
    """The workspace, and whether a login is required (`evalloop app --allow-remote`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default=os.environ.get("EVALLOOP_WORKSPACE",
                                                              "evalloop-workspace"))
    parser.add_argument("--login", action="store_true")
    args, _ = parser.parse_known_args()
    return Path(args.workspace), args.login


def status(ws: Path) -> None:
    """Where the data comes from: snapshot age and inbox records no writer has ingested yet."""
    path = ws / SNAPSHOT_NAME
    if not path.exists():
        st.sidebar.caption(f"workspace {ws}: no snapshot published yet")
        return
    published = datetime.fromtimestamp(path.stat().st_mtime)
    with snapshot(ws) as store:
        pending = pending_inbox(ws, store)
    waiting = ", ".join(f"{kind} {n}" for kind, n in pending.items() if n)
    st.sidebar.caption(f"workspace {ws}\n\nsnapshot published {published:%Y-%m-%d %H:%M:%S}"
                       + (f"\n\nshown, waiting for the next writer: {waiting}" if waiting else ""))


def main() -> None:
    st.set_page_config(page_title="evalloop", layout="wide")
    ws, needs_login = arguments()
    if needs_login:
        login.require_password()
    page = st.sidebar.radio("page", PAGES)
    reviewer = login.reviewer_name(required=needs_login)
    status(ws)
    if page == "Overview":
        overview.render(ws)
    elif page == "Failures":
        failures.render(ws, reviewer)
    elif page == "Arena":
        arena.render(ws, reviewer)
    elif page == "Leaderboard":
        leaderboard.render(ws)
    else:
        training.render(ws)


if __name__ == "__main__":  # run as a script by `evalloop app`
    main()
