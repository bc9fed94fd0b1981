"""`evalloop rollback`: restore the previous champion."""

from __future__ import annotations

import argparse

from loop.commands.common import add_common


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rollback", help="restore the previous champion")
    add_common(p)
    return p


def run(args: argparse.Namespace) -> int:
    from loop.cycle import runstate
    from loop.core.errors import ConfigError
    from loop.store import cycles
    from loop.store.db import Store
    from loop.data.tasks import load_task

    task = load_task(args.task)
    with Store(args.workspace, create=False) as store:
        history = cycles.champion_history(store, task.name)
        if not history:
            raise ConfigError(f"Task '{task.name}' has no champion history to roll back.")
        previous = history[-2] if len(history) > 1 else None
        if previous is None:
            from loop.models.loading import fingerprint, parse_model_name

            base = task.settings.cycle.base_model
            previous = {"model_id": fingerprint(parse_model_name(base)), "model_name": base}
        champion = runstate.Champion(previous["model_id"], previous["model_name"])
        runstate.set_champion(store, task.name, champion, None, "rollback")
    print(f"champion of {task.name} rolled back to {champion.model_name}")
    return 0
