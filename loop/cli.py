"""`evalloop` command line: parse arguments, call library functions, map errors to exit codes.

Every exception that reaches `main()` becomes one paragraph on stderr (`evalloop: <kind>: ...`)
and one of these exit codes (docs/reliability.md has the same table); `--debug` or
EVALLOOP_DEBUG=1 prints the traceback too:

    0 ok                       1 `eval` thresholds missed (--min-pass-rate, ...)
    2 bad input: task, data, model, flags, paths (a directory, unreadable, read-only, port in use)
    3 the store cannot be opened or written     4 no space left while writing a file
    70 internal error (a bug)  75 locked, or a model endpoint still failing (try later)
    129 / 130 / 143 stopped by SIGHUP / SIGINT (Ctrl-C) / SIGTERM: finished work kept
    nightly adds 10 kept, 20 failed, 124 over budget (see `evalloop nightly --help`)
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import traceback
from pathlib import Path

# Idle OpenMP threads spin by default; on a shared 2-core machine that made training 10-25x
# slower. Set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from loop.core import stopping  # noqa: E402
from loop.core.errors import EndpointError, EvalloopError, StoreError  # noqa: E402

DEFAULT_WORKSPACE = "evalloop-workspace"


def _quiet_libraries() -> None:
    """Keep third-party chatter off the terminal; our own progress bars and tables remain."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _protected(args: argparse.Namespace, task=None) -> list[Path]:
    """What no output of this command may replace: the workspace's store files and inbox, and
    the files of this task and of every task the store knows (TOMLs, splits, suite files)."""
    from loop.core.settings import task_files
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


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _load_task(args: argparse.Namespace):
    """Load the task and say in one line what loading did (rows, duplicates dropped or kept)."""
    from loop.data.tasks import load_task

    task = load_task(args.task)
    if args.json:  # stdout is the JSON document; the note goes to the log (--verbose)
        logging.getLogger("evalloop").info(task.report.line())
    else:
        print(task.report.line())
    return task


# ---------------------------------------------------------------------------- commands

def cmd_eval(args: argparse.Namespace) -> int:
    from loop.core.paths import check_output_file
    from loop.evaluation import ci_report
    from loop.evaluation.evaluate import evaluate, format_summary, select
    from loop.evaluation.prompting import resolve_prompt
    from loop.models.backends import resolve_backend
    from loop.models.loading import parse_model_name
    from loop.store.db import Store

    task = _load_task(args)
    examples = select(task, args.split, args.limit)  # validate everything before the store
    resolve_backend(args.backend or task.settings.generation.backend)
    prompt = resolve_prompt(task, args.prompt, args.shots, args.shot_selection)
    thresholds = ci_report.parse_thresholds(args.min_pass_rate, args.min_category_pass_rate,
                                            {e.category for e in examples})
    if args.junit:
        check_output_file(Path(args.junit), _protected(args, task), "--junit")
    parse_model_name(args.model)
    with Store(args.workspace) as store:
        summary = evaluate(store, task, args.model, split=args.split, limit=args.limit,
                           progress=not args.json, processes=args.processes,
                           backend=args.backend, prompt=prompt)
        if args.junit:
            from loop.exports import run_item_rows

            ci_report.write_junit(run_item_rows(store, summary.run_id), summary.task,
                                  summary.split, {"run_id": summary.run_id,
                                                  "model": summary.model,
                                                  "model_id": summary.model_id,
                                                  "suite_version": summary.suite_version,
                                                  "pass_rate": f"{summary.pass_rate:.4f}"},
                                  Path(args.junit))
    missed = ci_report.missed(thresholds, summary.pass_rate, summary.n, summary.per_category)
    if args.json:
        _print_json({**summary.to_json(), **({"thresholds": {**thresholds.to_json(),
                                                              "missed": missed}}
                                              if thresholds else {})})
    else:
        print(format_summary(summary))
        print(f"\nstored in {Path(args.workspace) / 'evalloop.duckdb'} (run {summary.run_id})")
        if args.junit:
            print(f"JUnit report: {args.junit}")
    for line in missed:
        print(f"evalloop: threshold missed: {line}", file=sys.stderr)
    return ci_report.EXIT_BELOW_THRESHOLD if missed else 0


def cmd_failures(args: argparse.Namespace) -> int:
    from loop.failures.stage import failure_summary, format_failures, latest_run
    from loop.models.loading import fingerprint, parse_model_name
    from loop.store.db import Store
    from loop.data.tasks import load_task

    task = load_task(args.task)
    model_id = fingerprint(parse_model_name(args.model)) if args.model else None
    with Store(args.workspace, create=False) as store:
        run_id, note = latest_run(store, task.name, model_id, args.split)
        summary = failure_summary(store, run_id)
    if note:
        print(f"evalloop: note: {note}", file=sys.stderr)
    _print_json(summary) if args.json else print(format_failures(summary))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from loop.models.loading import parse_model_name
    from loop.store.db import Store
    from loop.targeted.stage import format_result, generate_targeted

    task = _load_task(args)
    if args.model:
        parse_model_name(args.model)
    if args.n is not None and args.n < 1:
        raise EvalloopError(f"--n must be a positive number of examples, got {args.n}.")
    with Store(args.workspace) as store:
        result = generate_targeted(store, task, model=args.model, strategies=args.strategies,
                                   n=args.n, progress=not args.json)
    _print_json(result.to_json()) if args.json else print(format_result(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from loop.store.db import Store
    from loop.train.methods import train_by_method
    from loop.train.sft import config_from_args, format_result

    task = _load_task(args)
    config = config_from_args(task, args)  # [training], with --processes when given
    with Store(args.workspace) as store:  # [training] method: sft, dpo, grpo, sft+dpo/grpo
        result = train_by_method(store, task, args.workspace, model=args.model,
                                 data_path=args.data, config=config, progress=not args.json)
    _print_json(result.to_json()) if args.json else print(format_result(result))
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    from loop.core.paths import check_output_dir
    from loop.targeted.pairs import SOURCES, build_pairs, format_result
    from loop.store.db import Store

    task = _load_task(args)
    if args.out:
        check_output_dir(Path(args.out), _protected(args, task), [args.workspace], "--out")
    with Store(args.workspace) as store:
        result = build_pairs(store, task, sources=args.sources or SOURCES, out_dir=args.out)
    _print_json(result.to_json()) if args.json else print(format_result(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from loop import exports

    mode = _export_mode(args)
    _check_export_paths(args, mode)
    if mode == "adapter":
        return _export_adapter(args)
    if mode == "merge":
        from loop.train.sft import export_merged

        out = export_merged(args.adapter if "+" in args.adapter
                            else f"{args.base}+{args.adapter}", args.merge)
        print(f"merged Hugging Face checkpoint written to {out}")
        return 0
    if mode == "data":
        out, n = exports.export_hf_dataset(Path(args.data), Path(args.hf_card))
        what = f"Hugging Face dataset folder ({n} rows, README.md card)"
    else:
        from loop.store.db import Store

        with Store(args.workspace, read_only=True) as store:
            if mode == "benchmarks":
                out, n = exports.export_lm_eval(store, args.benchmarks, Path(args.out))
                what = f"lm-eval results JSON ({n} tasks and groups)"
            else:
                out, n = exports.export_items(store, args.failures, Path(args.out), args.format)
                what = f"{args.format} of an eval run's items ({n} rows)"
    if args.json:
        _print_json({"written": str(out), "rows": n, "mode": mode})
    else:
        print(f"{what} written to {out}")
    return 0


def _check_export_paths(args: argparse.Namespace, mode: str) -> None:
    """Every path an export writes, checked before anything is read or written."""
    from loop.core.paths import check_output_dir, check_output_file, file_problem

    protected, roots = _protected(args), [Path(args.workspace)]
    if mode in ("benchmarks", "failures"):
        check_output_file(Path(args.out), protected)
    elif mode == "data":
        if problem := file_problem(Path(args.data)):
            raise EvalloopError(f"--data {args.data} {problem}.")
        out = check_output_dir(Path(args.hf_card), protected, roots, "--hf-card")
        for name in ("data/train.jsonl", "README.md", "manifest.json"):
            check_output_file(out / name, protected, "--hf-card")
    elif mode == "merge":
        check_output_dir(Path(args.merge), protected, roots, "--merge")
    elif mode == "adapter":
        check_output_dir(Path(args.adapter_out), protected, roots, "--out")


def _export_adapter(args: argparse.Namespace) -> int:
    """A PEFT folder + model card from the store; optionally pushed to the Hugging Face Hub."""
    from loop.adapter_export import export_adapter, push_to_hub
    from loop.store.db import Store

    with Store(args.workspace, read_only=True) as store:
        out, model = export_adapter(store, args.adapter, Path(args.adapter_out), args.base)
    url = push_to_hub(out, args.push_to_hub) if args.push_to_hub else None
    if args.json:
        _print_json({"written": str(out), "mode": "adapter", "model_id": model["model_id"],
                     "pushed": url})
    else:
        print(f"PEFT adapter folder with a model card (README.md) written to {out}")
        if url:
            print(f"uploaded to {args.push_to_hub} (a new repo is private): {url}")
    return 0


def _export_mode(args: argparse.Namespace) -> str:
    """Which export the flags ask for; every conflict or gap in one message. --format defaults
    to the OUT file's suffix."""
    from loop.exports import FORMATS

    modes = [m for m, flag in (("merge", args.adapter), ("benchmarks", args.benchmarks),
                               ("failures", args.failures), ("data", args.data)) if flag]
    if len(modes) != 1:
        raise EvalloopError("evalloop export needs exactly one of --adapter (with --out or "
                            "--merge), "
                            "--benchmarks MODEL, --failures RUN|latest, --data JSONL"
                            + (f"; got {', '.join('--' + m for m in modes)}." if modes else "."))
    mode, errors = modes[0], []
    if mode == "merge" and bool(args.merge) == bool(args.adapter_out):
        errors.append("--adapter needs --out DIR (PEFT folder + model card) or --merge OUT_DIR "
                      "(merged checkpoint), one of them")
    elif mode == "merge" and args.adapter_out:
        mode = "adapter"
    if args.push_to_hub and mode != "adapter":
        errors.append("--push-to-hub REPO_ID goes with --adapter MODEL --out DIR")
    if args.adapter_out and mode not in ("merge", "adapter"):
        errors.append(f"--out DIR belongs to --adapter, not --{mode}")
    if mode == "data" and not args.hf_card:
        errors.append("--data needs --hf-card OUT_DIR")
    if mode in ("benchmarks", "failures"):
        wanted = ("lm-eval",) if mode == "benchmarks" else ("csv", "parquet")
        if not args.out:
            errors.append(f"--{mode} needs an output file (OUT)")
        elif args.format is None:
            args.format = next((f for f in wanted if args.out.endswith(FORMATS[f])), None)
        if args.out and args.format not in wanted:
            errors.append(f"--{mode} writes --format {' or '.join(wanted)}"
                          + (f", not {args.format}" if args.format else
                             " (none given and OUT's suffix names none)"))
    elif args.out or args.format:
        errors.append(f"OUT and --format belong to --benchmarks/--failures, not --{mode}")
    if errors:
        raise EvalloopError("Invalid export: " + "; ".join(errors) + ".")
    return mode


def cmd_bench(args: argparse.Namespace) -> int:
    from evals.benchmarks import format_table, to_json
    from loop.evaluation.benchmarks import run_benchmarks
    from evals.benchmark_tasks import DEFAULT_TASKS
    from loop.store.db import Store

    if args.limit is not None and args.limit < 1:
        raise EvalloopError(f"--limit must be a positive integer, got {args.limit}.")
    with Store(args.workspace) as store:
        tasks = args.tasks or DEFAULT_TASKS
        results = run_benchmarks(store, args.model, tasks, args.limit, args.benchmark_data,
                                 args.backend, progress=not args.json)
        # The other model runs on the same seeded subsets, so the deltas are paired.
        other = run_benchmarks(store, args.compare, tasks, args.limit, args.benchmark_data,
                               args.backend, progress=not args.json) if args.compare else None
    if args.json:
        _print_json({"results": to_json(results), "compare": to_json(other)} if other is not None
                    else to_json(results))
    else:
        print(format_table(results, other))
    return 0


def cmd_arena(args: argparse.Namespace) -> int:
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
        _print_json(result)
    else:
        print(format_leaderboard(result["leaderboard"]))
        print(f"\n{result['judged']} matches judged by '{args.judge}'; win-rate plot: "
              f"{result['plot']}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
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
        _print_json({"leaderboard": board, "judge_human_agreement": agreement,
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


def cmd_app(args: argparse.Namespace) -> int:
    from loop.app.serve import serve

    return serve(args.workspace, args.host, args.port, args.allow_remote)


def _print_cycle(summary: dict) -> None:
    champ, cand = summary["champion"], summary["candidate"]
    if summary.get("already_finished"):
        print(f"cycle {summary['cycle_id']} already finished on these inputs (use --force to run "
              "a new one); its summary:")
    print(f"\ntask {summary['task']}, cycle {summary['cycle_id']}")
    print(f"champion : {champ['name']}\ncandidate: {cand['name']}\n")
    print(f"{'test pass rate':<24}{'champion':>10}{'candidate':>11}{'change':>9}")
    for cat, before in champ["test"]["per_category"].items():
        after = cand["test"]["per_category"].get(cat, 0.0)
        print(f"{cat:<24}{before:>10.1%}{after:>11.1%}{after - before:>+9.1%}")
    b, a = champ["test"]["pass_rate"], cand["test"]["pass_rate"]
    print(f"{'overall':<24}{b:>10.1%}{a:>11.1%}{a - b:>+9.1%}")
    for name, delta in summary["benchmark_deltas"].items():
        print(f"benchmark {name:<30}{delta:>+9.3f}")
    gate = summary["gate"]
    print(f"\ngate: {'PROMOTED' if gate['promote'] else 'kept the champion'} "
          f"(McNemar p = {gate['p_value']:.3g})")
    for reason in gate["reasons"]:
        print(f"  [{'ok' if reason['passed'] else 'NO'}] {reason['check']}: {reason['detail']}")
    arm = summary.get("prompt_arm")
    if arm:
        print(f"  prompt arm: {arm.get('note') or 'skipped (' + str(arm.get('reason')) + ')'}")
    times = summary.get("stage_times", {})
    if times:
        print(f"\n{'stage':<20}{'seconds':>9}  throughput")
        for stage, row in times.items():
            rate = f"{row['per_s']:.1f} {row['unit']}/s" if "per_s" in row else ""
            print(f"{stage:<20}{row['seconds']:>9.1f}  {rate}")
        print(f"{'total':<20}{sum(r['seconds'] for r in times.values()):>9.1f}")
    print(f"\nreport: {summary['report']}")


def cmd_cycle(args: argparse.Namespace) -> int:
    from loop.cycle.run import run_cycle

    _load_task(args)  # the load note; run_cycle loads the task itself
    summary = run_cycle(args.task, args.workspace, force=args.force, progress=not args.json)
    _print_json(summary) if args.json else _print_cycle(summary)
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
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
        _print_json({**summary, "log": str(log_path)})
    else:
        _print_cycle(summary)
        print(f"log: {log_path}")
    return nightly.EXIT_PROMOTED if summary["gate"]["promote"] else nightly.EXIT_KEPT


def cmd_demo(args: argparse.Namespace) -> int:
    from loop.cycle.run import run_cycle

    from loop.data.demo_task import demo_task

    task = demo_task(Path(args.workspace))
    if args.prepare_only:
        print(task)
        return 0
    print(f"evalloop demo: one full cycle of the embedded SmolLM2-135M-Instruct on {task}")
    summary = run_cycle(task, args.workspace, force=args.force, progress=True)
    _print_cycle(summary)
    db = Path(args.workspace).resolve() / "evalloop.duckdb"
    print(f"database: {db}")
    print(f"open the review app: .venv/bin/evalloop app --workspace {args.workspace}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
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


def cmd_rollback(args: argparse.Namespace) -> int:
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


def cmd_schema(args: argparse.Namespace) -> int:
    from loop.core.settings import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        from loop.core.cache import write_atomic
        from loop.core.paths import check_output_file

        write_atomic(check_output_file(Path(args.output), (), "--output"), text)
        print(f"wrote the task TOML's JSON Schema to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# ---------------------------------------------------------------------------- parser

def package_version() -> str:
    """The installed distribution's version, else the source tree's (`loop.__version__`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evalloop")
    except PackageNotFoundError:
        from loop import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    from loop.models.loading import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="evalloop", description="Evaluation-driven LoRA "
                                     "fine-tuning: evaluate, find failures, target, train, gate.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show library logs")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error too (or set EVALLOOP_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"evalloop {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, task: bool = True) -> None:
        if task:
            p.add_argument("--task", required=True, help="task TOML (see README: task format)")
        p.add_argument("--workspace", default=os.environ.get("EVALLOOP_WORKSPACE",
                                                             DEFAULT_WORKSPACE),
                       help="directory holding evalloop.duckdb, adapters and reports "
                            f"(default ./{DEFAULT_WORKSPACE})")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("eval", help="generate and score a model on a task split")
    common(p)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model name, directory, hub id or BASE+ADAPTER_DIR (default {DEFAULT_MODEL})")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--limit", type=int, default=None, help="first N examples of the split")
    p.add_argument("--min-pass-rate", type=float, default=None, metavar="X",
                   help="CI gate: exit 1 when the overall pass rate is below X (0..1)")
    p.add_argument("--min-category-pass-rate", action="append", default=[], metavar="CAT=X",
                   help="CI gate per category, repeatable: exit 1 when CAT's pass rate < X")
    p.add_argument("--junit", default=None, metavar="PATH",
                   help="write a JUnit XML report (one testcase per item) for CI systems")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="generate on N processes (GPUs, or CPU ranks), each a shard of the "
                        "items; default [generation] processes (docs/scale.md)")
    p.add_argument("--backend", default=None, choices=["auto", "hf", "vllm"],
                   help="generation engine: vllm needs CUDA and `pip install 'evalloop[gpu]'`; "
                        "auto picks it when both are there, else hf (default [generation] "
                        "backend)")
    p.add_argument("--shots", type=int, default=None, metavar="K",
                   help="show K train-pool rows as earlier turns (few-shot; default "
                        "[generation] shots)")
    p.add_argument("--shot-selection", default=None, choices=["random", "nearest"],
                   help="random: the same seeded rows for every item; nearest: each item's "
                        "nearest pool rows (default [generation] shot_selection)")
    p.add_argument("--prompt", default=None, metavar="NAME",
                   help="a [[prompts]] variant of the task (system prompt, wording, shots)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("failures", help="failures of the latest evaluation, by category and "
                       "cluster")
    common(p)
    p.add_argument("--model", default=None, help="default: the latest evaluated model")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.set_defaults(func=cmd_failures)

    p = sub.add_parser("generate", help="targeted training data from the dev failures")
    common(p)
    p.add_argument("--model", default=None, help="whose dev failures (default: latest)")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="corrections retrieval generator teacher (default: [targeted] section)")
    p.add_argument("--n", type=int, default=None, help="targeted examples wanted")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="LoRA fine-tuning (peft + trl) on a task or exported data")
    common(p)
    p.add_argument("--model", default=DEFAULT_MODEL, help="base, or BASE+ADAPTER to continue")
    p.add_argument("--data", default=None, help="exported JSONL (default: the task's train)")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="train on N ranks through accelerate (DDP/FSDP); default [training] "
                        "processes (docs/scale.md)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pairs", help="preference pairs (DPO) from votes, corrections and "
                       "failures, decontaminated, as JSONL + manifest")
    common(p)
    p.add_argument("--sources", nargs="+", default=None,
                   help="human judge correction failure (default: all)")
    p.add_argument("--out", default=None, help="directory (default WS/data/TASK/pairs)")
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("export", help="an adapter with a model card (or merged); benchmark "
                       "results as lm-eval JSON; an eval run as CSV/Parquet; training data as a "
                       "Hugging Face dataset")
    common(p, task=False)
    p.add_argument("--adapter", default=None, help="ADAPTER_DIR or BASE+ADAPTER_DIR (or, with "
                   "--out, a stored model name or id prefix) to export or merge")
    p.add_argument("--base", default=DEFAULT_MODEL)
    p.add_argument("--merge", default=None, metavar="OUT_DIR", help="merged checkpoint directory")
    p.add_argument("--out", dest="adapter_out", default=None, metavar="DIR",
                   help="with --adapter (a BASE+ADAPTER_DIR, adapter dir, stored model name or id "
                        "prefix): a PEFT adapter folder with a model card built from the store")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="with --adapter --out: upload the folder to this Hugging Face model repo "
                        "(token from HF_TOKEN; a new repo is created private)")
    p.add_argument("--benchmarks", default=None, metavar="MODEL",
                   help="a model's stored benchmark results (write OUT with --format lm-eval)")
    p.add_argument("--failures", default=None, metavar="RUN",
                   help="an eval run id (or prefix, or 'latest'): one row per item, with "
                        "reference, prediction, failed checks and signatures")
    p.add_argument("--format", default=None, choices=["lm-eval", "csv", "parquet"],
                   help="output format (default: from OUT's suffix)")
    p.add_argument("--data", default=None, metavar="JSONL", help="training data to publish")
    p.add_argument("--hf-card", default=None, metavar="OUT_DIR",
                   help="with --data: a datasets-loadable folder with a README.md card")
    p.add_argument("out", nargs="?", default=None, metavar="OUT",
                   help="output file for --benchmarks / --failures")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="ARC, HellaSwag, MMLU, TruthfulQA through lm-eval (cached)")
    common(p, task=False)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tasks", nargs="+", default=None, help="lm-eval task names")
    p.add_argument("--limit", type=int, default=None, help="fixed seeded subset per task")
    p.add_argument("--benchmark-data", default=None, metavar="DIR",
                   help="local JSONL copies in the Hugging Face schemas (offline)")
    p.add_argument("--backend", default="evalloop", choices=["evalloop", "hf", "vllm"],
                   help="evalloop (our model class), hf (lm-eval's HFLM) or vllm (lm-eval's "
                        "VLLM: CUDA and `pip install 'evalloop[gpu]'`)")
    p.add_argument("--compare", default=None, metavar="OTHER",
                   help="a second model: print its values and the deltas (model - other)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("arena", help="pairwise matches between model versions on test items")
    common(p)
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
    p.set_defaults(func=cmd_arena)

    p = sub.add_parser("leaderboard", help="Bradley-Terry ratings with 95%% intervals")
    common(p, task=False)
    p.add_argument("--task", default=None)
    p.add_argument("--judge", default=None, help="one judge's matches (default: all)")
    p.set_defaults(func=cmd_leaderboard)

    from loop.app import MAIN_SCRIPT

    p = sub.add_parser("app", help="the Streamlit review app (binds 127.0.0.1 by default)",
                       description=f"Serves {MAIN_SCRIPT} with Streamlit.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # path unwrapped
    common(p, task=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host; needs $EVALLOOP_APP_PASSWORD, which "
                        "every session must enter")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("cycle", help="run or resume one evaluate-target-train-gate cycle")
    common(p)
    p.add_argument("--force", action="store_true", help="run again even if finished")
    p.set_defaults(func=cmd_cycle)

    p = sub.add_parser("nightly", help="one cycle under a lock, with a time budget and a log; "
                       "exit 0 promoted, 10 kept, 20 failed, 75 locked or an endpoint down "
                       "(retry later), 124 over budget")
    common(p)
    p.add_argument("--max-minutes", type=float, default=None, help="time budget")
    p.set_defaults(func=cmd_nightly)

    p = sub.add_parser("demo", help="one full cycle of the embedded model on the demo task")
    common(p, task=False)
    p.add_argument("--force", action="store_true", help="run a new cycle even if one finished")
    p.add_argument("--prepare-only", action="store_true",
                   help="print the demo task's path and stop (outside a checkout the task is "
                        "generated into WORKSPACE/demo-task/ first)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("promote", help="make a model the task's champion by hand")
    common(p)
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="restore the previous champion")
    common(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("schema", help="the task TOML's JSON Schema, for editors (Taplo, Even "
                       "Better TOML)")
    p.add_argument("--output", "-o", help="write it to this file (default: stdout)")
    p.set_defaults(func=cmd_schema)

    from loop.commands import init as init_command  # its own parser and handler

    init_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_libraries()
    debug = args.debug or os.environ.get("EVALLOOP_DEBUG", "") not in ("", "0")
    restore = stopping.install()
    try:
        from loop.core.launch import refuse_outside_launcher

        refuse_outside_launcher()  # every command opens the store: one writer, never N ranks
        return args.func(args)
    except SystemExit:
        raise
    except BaseException as exc:  # the one error path: one paragraph and a code from the table
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        kind, message, code = explain(exc)
        hint = (" Rerun with --debug (or EVALLOOP_DEBUG=1) for the traceback, and report it."
                if code == EXIT_INTERNAL and not debug else "")
        print(f"evalloop: {kind}: {message}{hint}", file=sys.stderr)
        return code
    finally:
        restore()


EXIT_BAD_INPUT, EXIT_STORE, EXIT_NO_SPACE, EXIT_INTERNAL = 2, 3, 4, 70
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def explain(exc: BaseException) -> tuple[str, str, int]:
    """(kind, one-paragraph message, exit code) for any exception that reaches main()."""
    if isinstance(exc, KeyboardInterrupt) or stopping.received():
        exc = stopping.received() or exc  # a signal inside DuckDB or torch: still the signal
        name = getattr(exc, "signal_name", "SIGINT")
        return ("interrupted", f"stopped by {name}; finished work is kept (an unfinished "
                "evaluation is marked interrupted), rerun to resume.",
                getattr(exc, "exit_code", 130))
    if isinstance(exc, StoreError):
        return "store error", str(exc), EXIT_STORE
    if isinstance(exc, EvalloopError):
        return "error", str(exc), exc.exit_code
    if isinstance(exc, OSError):
        return os_error(exc)
    if type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb"):
        return ("store error", f"the database failed: {str(exc).splitlines()[0]}. Work "
                "committed before this point is kept.", EXIT_STORE)
    if isinstance(exc, MemoryError):
        return ("error", "out of memory. Lower [generation] batch_size or [training] "
                "micro_batch_tokens, or use --limit.", EXIT_BAD_INPUT)
    text = str(exc).strip().splitlines()
    return ("internal error", f"{type(exc).__name__}: {text[0] if text else '(no message)'}. "
            "This is a bug in evalloop, not in your input.", EXIT_INTERNAL)


def os_error(exc: OSError) -> tuple[str, str, int]:
    """What an OSError means, in words: the path and its real cause."""
    what = exc.filename or "a file"
    if exc.errno in SPACE_ERRNOS:
        return ("error", f"no space left while writing {what} ({exc.strerror}). Work finished "
                "before this point is kept; free space and rerun to resume.", EXIT_NO_SPACE)
    causes = {errno.EISDIR: f"{what} is a directory, not a file",
              errno.ENOTDIR: f"a parent of {what} is a file, not a directory",
              errno.EACCES: f"permission denied on {what}",
              errno.EPERM: f"operation not permitted on {what}",
              errno.EROFS: f"{what} is on a read-only file system",
              errno.ENOENT: f"{what} does not exist",
              errno.EADDRINUSE: "the address or port is already in use by another process",
              errno.ENXIO: f"{what} is not a regular file (a FIFO or device with no reader)"}
    cause = causes.get(exc.errno, f"cannot use {what}: {exc.strerror or exc}")
    return "error", f"{cause}.", EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
