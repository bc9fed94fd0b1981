"""`evalloop train`: LoRA fine-tuning by the task's `[training] method`."""

from __future__ import annotations

import argparse

from loop.commands.common import add_common, load_task_noting, print_json


def make_parser(subparsers) -> argparse.ArgumentParser:
    from loop.core.settings import DEFAULT_MODEL

    p = subparsers.add_parser("train", help="LoRA fine-tuning (peft + trl) on a task or "
                              "exported data")
    add_common(p)
    p.add_argument("--model", default=DEFAULT_MODEL, help="base, or BASE+ADAPTER to continue")
    p.add_argument("--data", default=None, help="exported JSONL (default: the task's train)")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="train on N ranks through accelerate (DDP/FSDP); default [training] "
                        "processes (docs/scale.md)")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.store.db import Store
    from loop.train.methods import train_by_method
    from loop.train.config import config_from_args
    from loop.train.sft import format_result

    task = load_task_noting(args)
    config = config_from_args(task, args)  # [training], with --processes when given
    with Store(args.workspace) as store:  # [training] method: sft, dpo, grpo, sft+dpo/grpo
        result = train_by_method(store, task, args.workspace, model=args.model,
                                 data_path=args.data, config=config, progress=not args.json)
    print_json(result.to_json()) if args.json else print(format_result(result))
    return 0
