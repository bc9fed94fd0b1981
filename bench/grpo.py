"""GRPO against SFT from the same SFT champion and the same wall-time budget, per task.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/grpo.py --tasks ../shared/real-tasks/rentalcars/task.toml \
        ../shared/real-tasks/hotel_intents/task.toml --test-limit 60 --budget-s 240 [--json]

For each task: a champion (SFT for --champion-steps on --n-data random pool rows, seed 0), its
dev failures and targeted data (the cycle's own stages, first --dev-limit dev items), then three
arms, each given --budget-s seconds of training (steps are run until the budget is spent,
checkpoint by checkpoint, via max_steps = what fits at the arm's measured step time):
  sft        another SFT round on the targeted data, from the champion
  grpo       GRPO on pool prompts (targeted pool rows first), from the champion
  sft+grpo   SFT for half the budget, then GRPO from it for the rest
Printed: test pass rates (first --test-limit items) with 95% Wilson intervals, each arm minus
the champion and minus `sft` as paired differences (95% interval, McNemar p), the reward curve
of each GRPO run (mean reward per logging step), training time and peak memory of every arm, and
with --bench-limit the benchmark deltas against the champion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop.core.openmp import wait_briefly  # noqa: E402

wait_briefly()  # before torch loads: how idle OpenMP threads wait

from targeted_vs_random import paired_difference, wilson  # noqa: E402  (same statistics)


def _name(base: str, result) -> str:
    from loop.models.loading import parse_model_name

    return parse_model_name(base).with_adapter(result.adapter_dir).name


def _steps_for(budget_s: float, step_s: float) -> int:
    return max(1, int(budget_s // max(step_s, 1e-6)))


def _probe(fn, steps: int):
    """Run `fn(steps)` and return (result, seconds per step) for budget sizing: the run's own
    recorded training time, not this call's wall time (a probe finished by an earlier run of the
    benchmark comes back at once: sized by wall time, the next SFT arm got 750 steps for 120 s)."""
    result = fn(steps)
    return result, result.elapsed_s / max(result.steps_done, 1)


def run_task(task_path: Path, workspace: Path, args) -> dict:
    from loop.data.tasks import load_task, read_split
    from loop.evaluation.evaluate import evaluate
    from loop.store.db import Store
    from loop.targeted.stage import generate_targeted, random_pool_rows
    from loop.train.grpo import train_grpo_for_task
    from loop.train.sft import train_for_task

    task = load_task(task_path)
    base = args.model or task.settings.cycle.base_model
    cfg = task.settings.training
    ws = workspace / task.name
    out: dict = {"task": task.name, "base": base, "budget_s": args.budget_s, "arms": {}}
    with Store(ws) as store:
        rows = random_pool_rows(store, task, args.n_data, seed=0)
        data = ws / "data" / "champion.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps({"instruction": e.instruction, "input": e.input,
                                            "output": e.output}) + "\n" for e in rows))
        champ = train_for_task(store, task, ws, base, data, config=cfg.model_copy(update={
            "max_steps": args.champion_steps, "epochs": None}), progress=False)
        champion = _name(base, champ)
        dev = evaluate(store, task, champion, "dev", limit=args.dev_limit, progress=False)
        targeted = generate_targeted(store, task, dev.run_id, batch_id=f"bench-{task.name}",
                                     out_dir=ws / "targeted", seed=0, progress=False)
        trows = read_split(Path(targeted.dataset_path), "train")

        def sft(model, steps, tag):
            return train_for_task(store, task, ws, model, targeted.dataset_path,
                                  dataset_hash=f"{tag}-{targeted.manifest_hash}",
                                  config=cfg.model_copy(update={
                                      "method": "sft", "max_steps": steps, "epochs": None,
                                      "save_steps": steps}), progress=False)

        def grpo(model, steps):
            return train_grpo_for_task(store, task, ws, model, targeted=trows,
                                       config=cfg.model_copy(update={
                                           "method": "grpo", "max_steps": steps,
                                           "epochs": None, "save_steps": steps,
                                           "grpo_prompts": args.prompts}), progress=False)

        budget = args.budget_s
        # each arm's training seconds are the runs' recorded training time, as the sizing is: an
        # arm whose steps equal its probe's is the probe's run, back from the store at once
        arms: dict[str, tuple] = {}
        _, sft_step = _probe(lambda n: sft(champion, n, "probe"), 2)
        result = sft(champion, _steps_for(budget, sft_step), "sft")
        arms["sft"] = (result, result.elapsed_s)
        _, grpo_step = _probe(lambda n: grpo(champion, n), 1)
        result = grpo(champion, _steps_for(budget, grpo_step))
        arms["grpo"] = (result, result.elapsed_s)
        half = sft(champion, _steps_for(budget / 2, sft_step), "half")
        both = grpo(_name(base, half), _steps_for(budget / 2, grpo_step))
        arms["sft+grpo"] = (both, half.elapsed_s + both.elapsed_s)
        outcomes = {"champion": evaluate(store, task, champion, "test", limit=args.test_limit,
                                         progress=False).outcomes}
        for arm, (result, seconds) in arms.items():
            outcomes[arm] = evaluate(store, task, _name(base, result), "test",
                                     limit=args.test_limit, progress=False).outcomes
            out["arms"][arm] = {"steps": result.steps_done, "train_s": round(seconds, 1),
                                "peak_mem_mb": round(result.peak_mem_mb),
                                "reward_curve": [round(r.reward, 4) for r in result.logs
                                                 if r.reward is not None]}
        out["test"] = {arm: {"passed": sum(o.values()), "n": len(o),
                             "rate": sum(o.values()) / max(len(o), 1),
                             "wilson": wilson(sum(o.values()), len(o))}
                       for arm, o in outcomes.items()}
        out["vs_champion"] = {arm: paired_difference(outcomes["champion"], outcomes[arm])
                              for arm in arms}
        out["vs_sft"] = {arm: paired_difference(outcomes["sft"], outcomes[arm])
                         for arm in ("grpo", "sft+grpo")}
        out["step_s"] = {"sft": round(sft_step, 2), "grpo": round(grpo_step, 2)}
        if args.bench_limit:
            from preference import _benchmarks

            names = {"base": champion, **{a: _name(base, r) for a, (r, _) in arms.items()}}
            out["benchmarks"] = _benchmarks(store, task, names, args.bench_limit)
    return out


def format_task(r: dict) -> str:
    lines = [f"{r['task']} (base {r['base']}, {r['budget_s']:.0f} s per arm; step s {r['step_s']})"]
    for arm, t in r["test"].items():
        lo, hi = t["wilson"]
        extra = r["arms"].get(arm, {})
        d = "".join(f"  vs {other} {100 * diff['diff']:+.1f} [{100 * diff['low']:+.1f}, "
                    f"{100 * diff['high']:+.1f}] p={diff['mcnemar_p']:.2f}"
                    for other, diff in (("champion", r["vs_champion"].get(arm)),
                                        ("sft", r["vs_sft"].get(arm))) if diff)
        lines.append(f"  {arm:9} {100 * t['rate']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
                     f"({t['passed']}/{t['n']}){d}  steps {extra.get('steps', '-')} "
                     f"train {extra.get('train_s', '-')} s peak {extra.get('peak_mem_mb', '-')} MB")
        if extra.get("reward_curve"):
            lines.append(f"            reward {extra['reward_curve']}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", type=Path, required=True)
    p.add_argument("--workspace", type=Path, default=Path("/tmp/evalloop-bench-grpo"))
    p.add_argument("--model")
    p.add_argument("--n-data", type=int, default=250)
    p.add_argument("--champion-steps", type=int, default=32)
    p.add_argument("--dev-limit", type=int, default=100)
    p.add_argument("--test-limit", type=int, default=150)
    p.add_argument("--budget-s", type=float, default=600.0, help="training seconds per arm")
    p.add_argument("--prompts", type=int, default=64, help="GRPO pool prompts")
    p.add_argument("--bench-limit", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    results = [run_task(t.resolve(), args.workspace, args) for t in args.tasks]
    args.workspace.mkdir(parents=True, exist_ok=True)
    (args.workspace / "grpo_bench.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2) if args.json else "\n\n".join(map(format_task, results)))


if __name__ == "__main__":
    main()
