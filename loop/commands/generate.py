"""`evalloop generate`: targeted training data from the dev failures."""

from __future__ import annotations

import argparse

from loop.commands.common import add_common, load_task_noting, print_json
from loop.core.errors import EvalloopError


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", help="targeted training data from the dev failures")
    add_common(p)
    p.add_argument("--model", default=None, help="whose dev failures (default: latest)")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="corrections retrieval generator teacher (default: [targeted] section)")
    p.add_argument("--n", type=int, default=None, help="targeted examples wanted")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.models.loading import parse_model_name
    from loop.store.db import Store
    from loop.targeted.batch import format_result
    from loop.targeted.stage import generate_targeted

    task = load_task_noting(args)
    if args.model:
        parse_model_name(args.model)
    if args.n is not None and args.n < 1:
        raise EvalloopError(f"--n must be a positive number of examples, got {args.n}.")
    with Store(args.workspace) as store:
        result = generate_targeted(store, task, model=args.model, strategies=args.strategies,
                                   n=args.n, progress=not args.json)
    print_json(result.to_json()) if args.json else print(format_result(result))
    return 0
