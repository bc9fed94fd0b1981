"""`evalloop leaderboard`: Bradley-Terry ratings of the stored matches."""

from __future__ import annotations

import argparse
from pathlib import Path

from loop.commands.common import add_common, print_json


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("leaderboard", help="Bradley-Terry ratings with 95%% intervals")
    add_common(p, task=False)
    p.add_argument("--task", default=None)
    p.add_argument("--judge", default=None, help="one judge's matches (default: all)")
    return p


def run(args: argparse.Namespace) -> int:
    from evals.arena import format_leaderboard
    from loop.evaluation.arena import compute_leaderboard, judge_agreement, write_heatmap
    from loop.store.db import Store
    from loop.data.tasks import load_task

    task_id = load_task(args.task).name if args.task else None
    with Store(args.workspace, create=False) as store:
        board = compute_leaderboard(store, task_id, args.judge)
        agreement = judge_agreement(store, task_id)
        plot = write_heatmap(store, task_id, Path(args.workspace) / "winrates.png")
    if args.json:
        print_json({"leaderboard": board, "judge_human_agreement": agreement,
                     "plot": str(plot) if plot else None})
        return 0
    print(format_leaderboard(board) if board else "no matches yet: run `evalloop arena` first")
    for judge, row in agreement.items():
        if row["shared"]:
            print(f"{judge} judge agrees with human votes on {row['agreement']:.0%} of "
                  f"{row['shared']} shared pairs")
    if plot:
        print(f"win-rate plot: {plot}")
    return 0
