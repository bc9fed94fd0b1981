"""What several commands share: the common flags, the load note, JSON output and the paths no
output may replace."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from loop.core.errors import StoreError

DEFAULT_WORKSPACE = "evalloop-workspace"


def add_common(p: argparse.ArgumentParser, task: bool = True) -> None:
    """--task (when the command reads a task), --workspace and --json."""
    if task:
        p.add_argument("--task", required=True, help="task TOML (see README: task format)")
    p.add_argument("--workspace", default=os.environ.get("EVALLOOP_WORKSPACE", DEFAULT_WORKSPACE),
                   help="directory holding evalloop.duckdb, adapters and reports "
                        f"(default ./{DEFAULT_WORKSPACE})")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def protected_outputs(args: argparse.Namespace, task=None) -> list[Path]:
    """What no output of this command may replace: the workspace's store files and inbox, and
    the files of this task and of every task the store knows (TOMLs, splits, suite files)."""
    from loop.core.settings_load import task_files
    from loop.store import runs
    from loop.store.db import DB_NAME, SNAPSHOT_NAME, Store, protected_paths

    configs = [str(task.settings.path)] if task is not None else []
    workspace = Path(args.workspace)
    for db in (workspace / DB_NAME, workspace / SNAPSHOT_NAME):  # the snapshot: a writer holds
        try:                                                     # the database
            with Store(workspace, read_only=True, path=db) as store:
                configs += runs.task_config_paths(store) if "tasks" in store.tables() else []
            break
        except StoreError:
            continue
    files = [f for config in dict.fromkeys(configs) for f in task_files(config)]
    return protected_paths(workspace) + files


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def load_task_noting(args: argparse.Namespace):
    """Load the task and say in one line what loading did (rows, duplicates dropped or kept)."""
    from loop.data.tasks import load_task

    task = load_task(args.task)
    if args.json:  # stdout is the JSON document; the note goes to the log (--verbose)
        logging.getLogger("evalloop").info(task.report.line())
    else:
        print(task.report.line())
    return task
