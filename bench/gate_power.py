"""The gate's own error rates: how often it promotes a candidate that is not better, and how
often it keeps one that is, on planted candidates over repeated seeded draws.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gate_power.py --workspace W \
        --benchmark-data ../shared/benchmarks --task ../shared/real-tasks/rentalcars/task.toml \
        --candidate smollm2-135m-instruct+W/adapters/BENIGN \
        --forgetting smollm2-135m-instruct+W/adapters/OFFTASK \
        [--items 300 | --seconds 150 --seed 0] [--limits 100 200 sized] [--draws 200] \
        [--json out.json]

Measured part: the champion (the embedded model), `--candidate` (a small LoRA trained on the
task: the ordinary candidate) and `--forgetting` (a LoRA trained on off-task data: planted
forgetting) each score `--items` seeded items per benchmark once (cached in W's store, as the
cycle's benchmarks stage does). docs/gate.md gives the two `evalloop train` commands that make
the adapters. `--seconds S` scores instead the counts a cycle scores at `[benchmarks] seconds =
S` without a limit (evals/benchmark_sizing.py; with `--seed 0`, a default cycle's items, and the
scores bench/benchmark_sizing.py left in W are read back). Everything after that is draws, no
model:

  each draw bootstraps `limit` items per benchmark from the scored ones (`sized`: as many as were
  scored of each, a cycle's counts under `--seconds`; the same items for both
  models: paired) and plants task outcomes on the test split's size and categories: champion
  outcomes at the pass rate `--task-pass-rate`, candidate outcomes made from them by
  construction (symmetric noise flips `--task-noise`, plus fail -> pass flips of a known margin).

  a  twin          the champion under another name: same benchmark samples, same outcomes
  a2 no gain       noise flips only (no true gain), the task LoRA's benchmark samples
  b  forgetting    the off-task LoRA's benchmark samples, a task gain of +20 (or +5) points
  b  mix -x        each item takes the off-task LoRA's scores with the probability that makes
                   the pooled accuracy x below the task LoRA's (its true drop), task gain +20
  b  planted -x    by construction: the task LoRA with x of each benchmark's items turned from
                   right to wrong (see `planted`), task gain +20 (or +5)
  c  better by m   a true task gain m, the task LoRA's benchmark samples

Printed: the per-item spread of the paired differences (task LoRA vs champion) and the items it
takes to reach MDE 3 points pooled / 5 points per benchmark; the true drops of the forgetting
adapter on all scored items; per arm and limit the promotion rate with a 95% Wilson interval
(false promotion for a, a2, b; 1 - false rejection for c), and which checks kept the champion.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals import paired as ps  # noqa: E402
from evals.benchmark_tasks import DEFAULT_TASKS  # noqa: E402
from evals.benchmarks import headline  # noqa: E402
from loop.core.settings import GateSettings  # noqa: E402
from loop.cycle.gate import GateInputs, decide  # noqa: E402

from bench.targeted_vs_random import wilson  # noqa: E402


# ---------------------------------------------------------------------------- measured part

def score_models(workspace: Path, models: dict[str, str], tasks, items, data_dir,
                 seed: int) -> tuple[dict, dict]:
    """role -> benchmark -> metric -> (task, doc_id) -> score; and role -> seconds."""
    from loop.evaluation.benchmarks import benchmark_item_scores, run_benchmarks
    from loop.store.db import Store

    scores, seconds = {}, {}
    with Store(workspace) as store:
        for role, model in models.items():
            start = time.perf_counter()
            rows = [r for r in headline(run_benchmarks(store, model, tasks, items, data_dir,
                                                       progress=False, seed=seed))
                    if r.task == r.benchmark and r.value is not None
                    and r.higher_is_better is not False]
            seconds[role] = time.perf_counter() - start
            scores[role] = benchmark_item_scores(store, rows)
    return scores, seconds


# ---------------------------------------------------------------------------- draws (pure)

def task_outcomes(rng: random.Random, n: int, pass_rate: float, noise: float, margin: float):
    """Champion outcomes and a candidate planted from them: `noise` of the items flip (half each
    way), then `margin` of all items flip fail -> pass: a true gain of exactly `margin`."""
    champion = [rng.random() < pass_rate for _ in range(n)]
    candidate = list(champion)
    passing = [i for i, v in enumerate(champion) if v]
    failing = [i for i, v in enumerate(champion) if not v]
    rng.shuffle(passing)
    rng.shuffle(failing)
    flips = int(round(noise * n / 2))
    gains = int(round(margin * n))
    for i in passing[:flips]:
        candidate[i] = False
    for i in failing[:flips + gains]:
        candidate[i] = True
    return champion, candidate


ARMS = (  # name, benchmark samples (a role, or a planted pooled-accuracy drop), task margin
    ("a  twin", "champion", None),
    ("a2 no gain", "candidate", 0.0),
    ("b  forgetting, +20 task", "forgetting", 0.20),
    ("b  forgetting, +5 task", "forgetting", 0.05),
    ("b  mix -5, +20 task", 0.05, 0.20),
    ("b  mix -3, +20 task", 0.03, 0.20),
    ("b  planted -5, +20 task", ("planted", 0.05), 0.20),
    ("b  planted -3, +20 task", ("planted", 0.03), 0.20),
    ("b  planted -5, +5 task", ("planted", 0.05), 0.05),
    ("c  better by +2", "candidate", 0.02),
    ("c  better by +5", "candidate", 0.05),
    ("c  better by +10", "candidate", 0.10),
    ("c  better by +20", "candidate", 0.20),
)


def pooled_accuracy(scores: dict, role: str, config: GateSettings) -> float:
    return ps.compare(scores["champion"], scores[role], config.alpha,
                      config.power)[1]["pooled/accuracy"].delta


def mixed(scores: dict, share: float, rng: random.Random, shared: dict) -> dict:
    """Planted forgetting of a known size: each item takes the off-task LoRA's scores with
    probability `share`, else the task LoRA's (real per-item signals, a scaled drop)."""
    out = {}
    for b, ids in shared.items():
        take = {k: rng.random() < share for k in ids}
        out[b] = {m: {k: scores["forgetting" if take[k] else "candidate"][b][m][k] for k in ids}
                  for m in scores["candidate"][b] if m in scores["forgetting"][b]}
    return out


def planted(scores: dict, drop: float, rng: random.Random, shared: dict) -> dict:
    """Planted forgetting by construction: on each benchmark, items the task LoRA gets right turn
    wrong with the probability that lowers its accuracy by `drop` (every 0/1 metric -> 0, the
    gold log-probability -> the champion's mean on the items it gets wrong)."""
    out = {}
    for b, ids in shared.items():
        mine = scores["candidate"][b]
        metric = next(m for m in (*ps.PRIMARY, *mine) if m in mine)
        right = [k for k in ids if mine[metric][k] == 1.0]
        share = min(1.0, drop * len(ids) / max(len(right), 1))
        flipped = {k for k in right if rng.random() < share}
        champ = scores["champion"][b]
        wrong = [champ.get(ps.GOLD_LOGPROB, {}).get(k) for k in ids if champ[metric][k] == 0.0]
        wrong = [v for v in wrong if v is not None]
        low = sum(wrong) / len(wrong) if wrong else None
        out[b] = {}
        for m, values in mine.items():
            if m == ps.GOLD_LOGPROB:
                out[b][m] = {k: min(values[k], low) if k in flipped and low is not None
                             else values[k] for k in ids}
            else:
                out[b][m] = {k: 0.0 if k in flipped and values[k] in (0.0, 1.0)
                             else values[k] for k in ids}
    return out


def draw_counts(limit, shared: dict) -> dict[str, int]:
    """Items per benchmark in one draw: `limit` of each, or "sized": as many as were scored."""
    return {b: len(ids) if limit == "sized" else int(limit) for b, ids in shared.items()}


def run_arm(arm, scores, limit, draws: int, seed: int, n_test: int, categories: list[str],
            args, config: GateSettings) -> dict:
    name, source, margin = arm
    if (source == "forgetting" or isinstance(source, float)) and "forgetting" not in scores:
        return {"arm": name, "limit": limit, "skipped": "no --forgetting adapter"}
    shared = {b: sorted(set.intersection(*(set(keys) for r in scores
                                           for keys in scores[r][b].values())))
              for b in scores["champion"]}
    counts, share = draw_counts(limit, shared), None
    if isinstance(source, float):  # a planted drop of `source` on the pooled accuracy
        full = (pooled_accuracy(scores, "candidate", config)
                - pooled_accuracy(scores, "forgetting", config))
        if full < source:
            return {"arm": name, "limit": limit, "skipped": f"the off-task LoRA drops only "
                    f"{full:.3f} below the task LoRA"}
        share = source / full
    promoted, blockers = 0, Counter()
    for d in range(draws):
        rng = random.Random(f"{seed}:{name}:{limit}:{d}")
        keys = {b: [rng.choice(ids) for _ in range(counts[b])] for b, ids in shared.items()}
        theirs = (mixed(scores, share, rng, shared) if share is not None
                  else planted(scores, source[1], rng, shared) if isinstance(source, tuple)
                  else scores[source])
        stats, pooled = ps.compare(scores["champion"], theirs, config.alpha, config.power,
                                   items=keys)
        champ, cand = task_outcomes(rng, n_test, args.task_pass_rate, args.task_noise,
                                    margin or 0.0)
        if margin is None:  # the twin: identical outcomes
            cand = list(champ)
        ids = [f"e{i}" for i in range(n_test)]
        decision = decide(GateInputs(dict(zip(ids, champ)), dict(zip(ids, cand)),
                                     dict(zip(ids, categories)), benchmark_stats=stats,
                                     pooled_stats=pooled), config)
        promoted += decision.promote
        for r in decision.reasons:
            if not r.passed:
                blockers[f"{r.check} ({r.status})"] += 1
    low, high = wilson(promoted, draws)
    return {"arm": name, "limit": limit, "draws": draws, "promoted": promoted,
            "rate": promoted / draws, "low": low, "high": high, "share": share,
            "blockers": dict(blockers.most_common(4))}


def spread(scores: dict, role: str, config: GateSettings) -> list[dict]:
    """Per benchmark metric on all scored items: the paired difference and sd of the per-item
    differences (role vs champion), and items needed for MDE 5 points (accuracy) / tolerance."""
    stats, pooled = ps.compare(scores["champion"], scores[role], config.alpha, config.power)
    rows = []
    for name, stat in {**stats, **pooled}.items():
        sd = stat.se * math.sqrt(stat.n) if math.isfinite(stat.se) else float("nan")
        target = (config.logprob_tolerance if stat.unit == "nats" else
                  config.pooled_tolerance if name.startswith("pooled/") else
                  config.benchmark_tolerance)
        rows.append({"name": name, "n": stat.n, "delta": stat.delta, "sd": sd,
                     "mde": stat.mde, "target": target,
                     "items_for_target": None if name.startswith("pooled/") or not target
                     else ps.items_needed(target, stat, config.alpha, config.power)})
    return rows


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--benchmark-data", type=Path, default=None)
    p.add_argument("--task", type=Path, required=True, help="test split size and categories")
    p.add_argument("--champion", default="smollm2-135m-instruct")
    p.add_argument("--candidate", required=True, help="BASE+ADAPTER: a LoRA trained on the task")
    p.add_argument("--forgetting", default=None, help="BASE+ADAPTER: an off-task LoRA")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    size = p.add_mutually_exclusive_group()
    size.add_argument("--items", type=int, default=300, help="scored items per benchmark")
    size.add_argument("--seconds", type=float, default=None, help="score a cycle's counts at "
                      "[benchmarks] seconds = S instead (evals/benchmark_sizing.py)")
    p.add_argument("--limits", nargs="+", default=["100", "200", "300"],
                   type=lambda v: v if v == "sized" else int(v),
                   help="items per benchmark in each draw (a cycle's [benchmarks] limit), or "
                        "'sized': as many as were scored of each (the cycle's counts)")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--seed", type=int, default=1234, help="the scored items' seed (a cycle's "
                   "is [cycle] seed, 0) and the draws'")
    p.add_argument("--task-pass-rate", type=float, default=0.5)
    p.add_argument("--task-noise", type=float, default=0.06, help="share of test items that "
                   "flip between two models of equal quality (half each way)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from loop.data.tasks import load_task

    test = load_task(args.task).split("test")
    categories = [e.category for e in test]
    config = GateSettings(require_rating=False)
    models = {"champion": args.champion, "candidate": args.candidate,
              **({"forgetting": args.forgetting} if args.forgetting else {})}
    items = args.items
    if args.seconds is not None:
        from evals.benchmark_sizing import size_items

        items = size_items(args.tasks, args.seconds)
    scores, seconds = score_models(args.workspace, models, args.tasks, items,
                                   args.benchmark_data, args.seed)
    print(f"scored {items} items per benchmark ({', '.join(args.tasks)}), seed {args.seed}; "
          "seconds: " + ", ".join(f"{r} {s:.0f}" for r, s in seconds.items()))
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": seconds,
           "gate": config.model_dump(), "spread": {}, "arms": []}
    for role in [r for r in ("candidate", "forgetting") if r in scores]:
        rows = out["spread"][role] = spread(scores, role, config)
        print(f"\n{role} - champion on all scored items: difference, sd of per-item "
              f"differences, MDE, items for MDE = tolerance")
        for r in rows:
            need = r["items_for_target"]
            print(f"  {r['name']:<30} {r['delta']:+.4f}  sd {r['sd']:.3f}  MDE {r['mde']:.3f}"
                  f"  n={r['n']}" + (f"  items for MDE {r['target']:.2f}: {need}" if need
                                     else ""))
    print(f"\n{'arm':<26}{'limit':>6}{'promoted':>10}{'rate':>8}  95% interval   kept by")
    for limit in args.limits:
        for arm in ARMS:
            row = run_arm(arm, scores, limit, args.draws, args.seed, len(test), categories,
                          args, config)
            out["arms"].append(row)
            if "skipped" in row:
                print(f"{row['arm']:<26}{limit:>6}  skipped: {row['skipped']}")
                continue
            kept = "; ".join(f"{k} {v}" for k, v in row["blockers"].items())
            print(f"{row['arm']:<26}{limit:>6}{row['promoted']:>6}/{args.draws:<4}"
                  f"{row['rate']:>7.1%}  [{row['low']:.1%}, {row['high']:.1%}]  {kept}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
