"""Unattended runs: one cycle under an exclusive lock, a time budget, a log file, cron exit codes.

    evalloop nightly --task task.toml --workspace /srv/evalloop --max-minutes 120

Exit codes (for cron / systemd): 0 promoted, 10 kept (champion unchanged), 20 failed,
75 another nightly run holds the lock or a model endpoint (teacher, judge) kept failing after its
retries (try again later), 124 time budget exhausted (resumes on the next run).
"""

from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from loop.core.errors import EvalloopError, LockedError

EXIT_PROMOTED, EXIT_KEPT, EXIT_FAILED, EXIT_LOCKED, EXIT_BUDGET = 0, 10, 20, 75, 124


class BudgetExceeded(EvalloopError):
    exit_code = EXIT_BUDGET


@contextmanager
def exclusive_lock(workspace: Path):
    """Hold `<workspace>/nightly.lock` (flock: released by the kernel if the process dies)."""
    workspace.mkdir(parents=True, exist_ok=True)
    path = workspace / "nightly.lock"
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise LockedError(f"Another evalloop nightly run holds {path} ({holder}); this run exits "
                          "without doing anything.") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} since {datetime.now().isoformat(timespec='seconds')}\n")
    fh.flush()
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def attach_log_file(workspace: Path) -> Path:
    """Send evalloop's log records to `<workspace>/logs/nightly-YYYYmmdd-HHMMSS.log`."""
    logs = workspace / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"nightly-{datetime.now():%Y%m%d-%H%M%S}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("loop", "evals"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return path
