"""`evalloop cycle`: run or resume one evaluate-target-train-gate cycle; `print_cycle` is
the summary `nightly` and `demo` print too."""

from __future__ import annotations

import argparse

from loop.commands.common import add_common, load_task_noting, print_json


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("cycle", help="run or resume one evaluate-target-train-gate cycle")
    add_common(p)
    p.add_argument("--force", action="store_true", help="run again even if finished")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.cycle.run import run_cycle

    load_task_noting(args)  # the load note; run_cycle loads the task itself
    summary = run_cycle(args.task, args.workspace, force=args.force, progress=not args.json)
    print_json(summary) if args.json else print_cycle(summary)
    return 0


def print_cycle(summary: dict) -> None:
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
