"""`evalloop promote`: make a model the task's champion by hand."""

from __future__ import annotations

import argparse

from loop.commands.common import add_common


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("promote", help="make a model the task's champion by hand")
    add_common(p)
    p.add_argument("--model", required=True)
    return p


def run(args: argparse.Namespace) -> int:
    from loop.cycle import runstate
    from loop.models.loading import fingerprint, parse_model_name
    from loop.store.db import Store
    from loop.data.tasks import load_task

    task = load_task(args.task)
    champion = runstate.Champion(fingerprint(parse_model_name(args.model)), args.model)
    with Store(args.workspace) as store:
        runstate.set_champion(store, task.name, champion, None, "promoted by hand")
    print(f"champion of {task.name} is now {args.model} ({champion.model_id})")
    return 0
