"""`evalloop nightly`: one cycle under a lock, with a time budget and a log, and cron's
exit codes (loop/cycle/nightly.py)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from loop.commands.common import add_common, print_json
from loop.commands.cycle import print_cycle
from loop.core.errors import EndpointError, EvalloopError


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("nightly", help="one cycle under a lock, with a time budget and a "
                              "log; exit 0 promoted, 10 kept, 20 failed, 75 locked or an endpoint "
                              "down (retry later), 124 over budget")
    add_common(p)
    p.add_argument("--max-minutes", type=float, default=None, help="time budget")
    return p


def run(args: argparse.Namespace) -> int:
    import time

    from loop.cycle import nightly
    from loop.cycle.run import run_cycle

    workspace = Path(args.workspace)
    with nightly.exclusive_lock(workspace):
        log_path = nightly.attach_log_file(workspace)
        logging.getLogger("loop").info("nightly cycle for %s", args.task)
        deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
        try:
            summary = run_cycle(args.task, workspace, force=True, progress=False,
                                deadline=deadline)
        except nightly.BudgetExceeded:
            raise
        except EvalloopError as exc:
            logging.getLogger("loop").error("cycle failed: %s", exc)
            print(f"evalloop: nightly cycle failed: {exc} (log: {log_path})", file=sys.stderr)
            # an endpoint still rate-limited or down is passing: cron retries, the cycle resumes
            return nightly.EXIT_LOCKED if isinstance(exc, EndpointError) else nightly.EXIT_FAILED
        logging.getLogger("loop").info("cycle %s done: promote=%s", summary["cycle_id"],
                                       summary["gate"]["promote"])
    if args.json:  # stdout is one JSON document: the log path is in it
        print_json({**summary, "log": str(log_path)})
    else:
        print_cycle(summary)
        print(f"log: {log_path}")
    return nightly.EXIT_PROMOTED if summary["gate"]["promote"] else nightly.EXIT_KEPT
