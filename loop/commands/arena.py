"""`evalloop arena`: pairwise matches between model versions (or prompts) on test items."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from loop.commands.common import add_common, print_json
from loop.core.errors import EvalloopError


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("arena", help="pairwise matches between model versions on test items")
    add_common(p)
    p.add_argument("--models", nargs="+", required=True, help="one is enough with two --prompts")
    p.add_argument("--judge", default="reference", help="reference or llm")
    p.add_argument("--judge-model", default=None, help="llm judge: local model or endpoint model")
    p.add_argument("--judge-url", default=None, help="llm judge: OpenAI-compatible base URL "
                   "(default: $OPENAI_BASE_URL; neither: --judge-model is a local model)")
    p.add_argument("--judge-key-env", default=None, help="name of the env var holding the key "
                   "(default: OPENAI_API_KEY when set)")
    p.add_argument("--judge-concurrency", type=int, default=4, metavar="N",
                   help="endpoint judge requests in flight at once")
    p.add_argument("--n", type=int, default=None, help="first N shared items")
    p.add_argument("--prompts", nargs="+", default=None, metavar="NAME",
                   help="[[prompts]] variants (\"default\": the task's own prompt): each model "
                        "competes under each, rated like models")
    return p


def run(args: argparse.Namespace) -> int:
    from evals.arena import format_leaderboard
    from evals.judges import check_judge, endpoint_completer, local_completer
    from loop.evaluation.arena import prompt_settings, run_arena
    from loop.models.loading import parse_model_name
    from loop.store.db import Store
    from loop.data.tasks import load_task

    task = load_task(args.task)
    check_judge(args.judge)
    for model in args.models:
        parse_model_name(model)
    prompt_settings(task, args.prompts)  # every --prompts name known, before the store
    completer = None
    if args.judge == "llm":
        if not args.judge_model:
            raise EvalloopError("--judge llm needs --judge-model (a local model, or an endpoint's "
                                "model name together with --judge-url).")
        judge_url = args.judge_url or os.environ.get("OPENAI_BASE_URL")
        completer = (endpoint_completer(judge_url, args.judge_model, args.judge_key_env,
                                        concurrency=args.judge_concurrency)
                     if judge_url else local_completer(args.judge_model))
    with Store(args.workspace) as store:
        result = run_arena(store, task, args.models, args.judge, args.n,
                           plot_dir=Path(args.workspace), completer=completer,
                           progress=not args.json, prompts=args.prompts)
    if args.json:
        print_json(result)
    else:
        print(format_leaderboard(result["leaderboard"]))
        print(f"\n{result['judged']} matches judged by '{args.judge}'; win-rate plot: "
              f"{result['plot']}")
    return 0
