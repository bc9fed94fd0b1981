"""Does DPO after SFT beat SFT alone on the same budget? Test pass rate, pairwise rating against
the base and benchmark deltas, per task, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/preference.py \
        --tasks datasets/demo/task.toml ../shared/real-tasks/rentalcars/task.toml \
        [--n-data 250] [--sft-steps 32] [--dpo-steps 16] [--test-limit 150] \
        [--bench-limit 50] [--workspace /tmp/evalloop-pref] [--json results.json]

Per task, in a fresh workspace, from the task's [cycle] base_model (the embedded model):
  data      `--n-data` pool rows drawn at random (seeded) through SFT's decontamination
            (`loop.targeted.random_pool_rows`), the same rows for both arms
  sft       SFT on them for sft-steps + dpo-steps optimizer steps (the whole budget)
  sft+dpo   SFT for sft-steps, then DPO for dpo-steps on pairs built by `loop.targeted.pairs` from the
            store: that SFT model's own dev failures (reference vs its answer) plus any votes and
            corrections, decontaminated against test; reference model = the SFT adapter
Both arms use the task's [training] settings otherwise (batch size, lr, rank; DPO's beta and lr
from dpo_beta / dpo_learning_rate). Printed: test pass rates with 95% Wilson intervals, the
paired difference (sft+dpo - sft) with its interval and McNemar p, Bradley-Terry ratings of
base / sft / sft+dpo from the reference judge on the test items (base pinned at 1000), and
each benchmark's delta against the base (--bench-limit 0 skips benchmarks).
Smoke run (seconds): --model tiny-random --n-data 16 --sft-steps 2 --dpo-steps 2 --test-limit 8
--dev-limit 16 --bench-limit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop.core.openmp import wait_briefly  # noqa: E402

wait_briefly()  # before torch loads: how idle OpenMP threads wait

from targeted_vs_random import paired_difference, wilson  # noqa: E402  (same statistics)


def _sft(store, task, workspace: Path, model: str, data: Path, steps: int, config) -> str:
    from loop.models.loading import parse_model_name
    from loop.train.sft import train_for_task

    cfg = config.model_copy(update={"method": "sft", "max_steps": steps, "epochs": None})
    result = train_for_task(store, task, workspace, model=model, data_path=data,
                            dataset_hash=f"pref-{data.stem}", config=cfg, progress=False)
    return parse_model_name(model).with_adapter(result.adapter_dir).name


def _dpo(store, task, workspace: Path, model: str, steps: int, config, dev_limit) -> tuple:
    from loop.evaluation.evaluate import evaluate
    from loop.models.loading import parse_model_name
    from loop.targeted.pairs import build_pairs
    from loop.train.dpo import train_dpo_for_task

    dev = evaluate(store, task, model, "dev", limit=dev_limit, progress=False)  # + failures
    pairs = build_pairs(store, task, failure_run=dev.run_id, out_dir=workspace / "pairs")
    if not pairs.n_pairs:
        return None, pairs
    cfg = config.model_copy(update={"method": "sft+dpo", "max_steps": steps, "epochs": None})
    result = train_dpo_for_task(store, task, workspace, pairs.dataset_path, model=model,
                                dataset_hash=pairs.manifest_hash, config=cfg, progress=False)
    return parse_model_name(model).with_adapter(result.adapter_dir).name, pairs


def _benchmarks(store, task, models: dict[str, str], limit: int) -> dict:
    """Headline metric per benchmark and arm, and each arm's delta against the base (the task's
    [benchmarks] tasks, data and backend, as the cycle runs them)."""
    from evals.benchmarks import headline
    from loop.core.settings import BenchmarksSettings
    from loop.evaluation.benchmarks import run_benchmarks

    settings = task.settings.benchmarks or BenchmarksSettings()
    values = {arm: {f"{r.task}/{r.metric}": r.value for r in headline(
        run_benchmarks(store, name, settings.tasks, limit, settings.data_dir, settings.backend,
                       progress=False))} for arm, name in models.items()}
    return {arm: {k: (v - values["base"].get(k, 0.0)) if v is not None else None
                  for k, v in vals.items()} | {"_values": vals} for arm, vals in values.items()}


def run_task(task_path: Path, workspace: Path, args) -> dict:
    from loop.evaluation.arena import compute_leaderboard, judge_entrants, write_matches, Entrant
    from loop.evaluation.evaluate import evaluate
    from loop.store.db import Store
    from loop.targeted.stage import random_pool_rows
    from loop.data.tasks import load_task

    task = load_task(task_path)
    base = args.model or task.settings.cycle.base_model
    config = task.settings.training
    if args.dpo_learning_rate or args.dpo_beta:  # sweep DPO's own settings; SFT arms unchanged
        config = config.model_copy(update={
            "dpo_learning_rate": args.dpo_learning_rate or config.dpo_learning_rate,
            "dpo_beta": args.dpo_beta or config.dpo_beta})
    workspace = workspace / task.name
    out: dict = {"task": task.name, "base": base, "n_data": args.n_data,
                 "sft_steps": args.sft_steps, "dpo_steps": args.dpo_steps,
                 "dpo_learning_rate": config.dpo_learning_rate or config.learning_rate,
                 "dpo_beta": config.dpo_beta}
    with Store(workspace) as store:
        rows = random_pool_rows(store, task, args.n_data, seed=args.seed)
        data = workspace / "data" / f"pref-{args.seed}-{len(rows)}.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps({"instruction": e.instruction, "input": e.input,
                                            "output": e.output}, ensure_ascii=False) + "\n"
                                for e in rows))
        t0 = time.perf_counter()
        sft_full = _sft(store, task, workspace, base, data, args.sft_steps + args.dpo_steps,
                        config)
        out["sft_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sft_part = _sft(store, task, workspace, base, data, args.sft_steps, config)
        dpo, pairs = _dpo(store, task, workspace, sft_part, args.dpo_steps, config,
                          args.dev_limit)
        out["sft_dpo_seconds"] = time.perf_counter() - t0
        out["pairs"] = pairs.counts
        models = {"base": base, "sft": sft_full, "sft+dpo": dpo or sft_part}
        if dpo is None:
            out["note"] = "no preference pairs: the sft+dpo arm is SFT for sft-steps only"
        entrants, outcomes = [], {}
        for arm, name in models.items():
            summary = evaluate(store, task, name, "test", limit=args.test_limit, progress=False)
            outcomes[arm] = summary.outcomes
            entrants.append(Entrant(name, summary.model_id, summary.run_id,
                                    summary.suite_version))
        out["test"] = {arm: {"passed": sum(o.values()), "n": len(o), "rate": sum(o.values())
                             / max(len(o), 1), "wilson": wilson(sum(o.values()), len(o))}
                       for arm, o in outcomes.items()}
        out["sft_dpo_minus_sft"] = paired_difference(outcomes["sft"], outcomes["sft+dpo"])
        write_matches(store, judge_entrants(store, task, entrants, "reference",
                                            n=args.test_limit))
        board = compute_leaderboard(store, task.name, judge="reference", seed=args.seed,
                                    anchor=base)
        by_id = {r["model_id"]: r for r in board}
        out["ratings"] = {arm: {k: by_id[e.model_id][k] for k in ("rating", "lower", "upper")}
                          for arm, e in zip(models, entrants) if e.model_id in by_id}
        if args.bench_limit:
            out["benchmarks"] = _benchmarks(store, task, models, args.bench_limit)
    return out


def format_task(r: dict) -> str:
    lines = [f"== {r['task']} (base {r['base']}, {r['n_data']} rows, SFT {r['sft_steps']} + "
             f"DPO {r['dpo_steps']} steps (lr {r['dpo_learning_rate']:g}, beta {r['dpo_beta']:g}) "
             f"vs SFT {r['sft_steps'] + r['dpo_steps']})",
             "pairs: " + ", ".join(f"{s} {c['pairs']}" for s, c in r["pairs"].items())]
    for arm, t in r["test"].items():
        rating = r["ratings"].get(arm, {})
        lines.append(f"  {arm:<8} test {t['passed']:>4}/{t['n']:<4} {t['rate']:6.1%} "
                     f"[{t['wilson'][0]:.1%}, {t['wilson'][1]:.1%}]   rating "
                     f"{rating.get('rating', float('nan')):6.0f} "
                     f"[{rating.get('lower', float('nan')):.0f}, "
                     f"{rating.get('upper', float('nan')):.0f}]")
    d = r["sft_dpo_minus_sft"]
    lines.append(f"  sft+dpo - sft: {d['diff']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}], "
                 f"McNemar p {d['mcnemar_p']:.3f} (n {d['n']})")
    for arm, deltas in r.get("benchmarks", {}).items():
        if arm != "base":
            lines.append(f"  {arm:<8} benchmark deltas vs base: " + ", ".join(
                f"{k} {v:+.3f}" for k, v in deltas.items() if k != "_values" and v is not None))
    if r.get("note"):
        lines.append(f"  note: {r['note']}")
    lines.append(f"  wall: sft {r['sft_seconds']:.0f}s, sft+dpo {r['sft_dpo_seconds']:.0f}s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", required=True, type=Path)
    parser.add_argument("--model", default=None, help="default: each task's [cycle] base_model")
    parser.add_argument("--n-data", type=int, default=250)
    parser.add_argument("--sft-steps", type=int, default=32)
    parser.add_argument("--dpo-steps", type=int, default=16)
    parser.add_argument("--test-limit", type=int, default=None, help="first N test items")
    parser.add_argument("--dev-limit", type=int, default=None,
                        help="first N dev items whose failures become pairs")
    parser.add_argument("--bench-limit", type=int, default=50, help="items per benchmark; 0: skip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpo-learning-rate", type=float, help="default: the task's setting")
    parser.add_argument("--dpo-beta", type=float, help="default: the task's setting")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/evalloop-pref"))
    parser.add_argument("--json", type=Path, help="write every figure")
    args = parser.parse_args()
    results = []
    for task_path in args.tasks:
        results.append(run_task(task_path, args.workspace, args))
        print(format_task(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
