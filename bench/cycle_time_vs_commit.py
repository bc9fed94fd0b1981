"""Is a cycle slower than it was at an older commit? The same small cycle, timed on both trees in
one run, alternating, each from a fresh workspace.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cycle_time_vs_commit.py --commit f9c6e64 \
        [--repeats 3] [--workspace /tmp/evalloop-ctc] [--no-tracking]

The task is the tests' planted classification task (80 pool rows, 24 dev, 24 test, 12 training
steps, one benchmark of 16 items when ../shared/benchmarks is there), written once and read by
both trees. With the tiny random model the model's own compute is small, so this measures what
the stages around it cost: loading the task, evaluations, targeting, the arena, the store.
Printed: each side's wall seconds per repeat (`evalloop cycle` as a subprocess), the medians and
new / old; then each stage's median seconds on both sides (from the workspace's cycle_stages
rows), and the ratio over the stages both trees run, so a stage one tree added (more work by
design) is told apart from the same work done slower.

`--no-tracking` runs this tree with `[tracking] enabled = false`, for an older commit that
predates experiment tracking: the MLflow runs a cycle logs (its first stage also creates the
workspace's sqlite store, ~2 s) are work the old tree never did.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"
sys.path.insert(0, str(REPO / "tests"))


def write_cycle_task(directory: Path) -> Path:
    """tests/test_cycle.py's task (tiny-random), with its benchmark when the data is there."""
    from test_cycle import cycle_task

    return cycle_task(directory, (SHARED_BENCHMARKS / "arc_easy" / "test.jsonl").is_file())


def stage_seconds(workspace: Path) -> dict[str, float]:
    """Each finished stage's seconds, read with this tree's store from either tree's workspace
    (the cycle_stages table is the same in both)."""
    from loop.store.cycles import stage_seconds as seconds_of
    from loop.store.db import Store

    with Store(workspace) as store:
        cycle_id = store.query("SELECT cycle_id FROM cycles ORDER BY started_at DESC LIMIT 1")
        return seconds_of(store, cycle_id[0]["cycle_id"]) if cycle_id else {}


def timed_cycle(tree: Path, task: Path, workspace: Path) -> float:
    shutil.rmtree(workspace, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "cycle", "--task", str(task),
                           "--workspace", str(workspace), "--json"], cwd=tree, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{tree}: evalloop cycle failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/evalloop-ctc"))
    parser.add_argument("--no-tracking", action="store_true",
                        help="this tree without MLflow tracking (an old tree without it)")
    args = parser.parse_args()
    task = write_cycle_task(args.workspace / "task")
    tasks = {"old": task, "new": task}
    if args.no_tracking:
        tasks["new"] = task.with_name("task-untracked.toml")
        tasks["new"].write_text(task.read_text() + "\n[tracking]\nenabled = false\n")
    old_tree = Path(tempfile.mkdtemp(prefix="evalloop-old-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(old_tree),
                    args.commit], check=True, capture_output=True)
    times: dict[str, list[float]] = {"old": [], "new": []}
    stages: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    try:
        for k in range(args.repeats):
            for side, tree in (("old", old_tree), ("new", REPO)):
                times[side].append(timed_cycle(tree, tasks[side], args.workspace / side))
                for stage, sec in stage_seconds(args.workspace / side).items():
                    stages[side].setdefault(stage, []).append(sec)
                print(f"repeat {k + 1}: {side} {times[side][-1]:.1f} s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)],
                       capture_output=True)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"median: {args.commit} {old:.1f} s, this tree {new:.1f} s, new / old {new / old:.2f}")
    medians = {side: {k: statistics.median(v) for k, v in per.items()}
               for side, per in stages.items()}
    for stage in dict.fromkeys([*medians["old"], *medians["new"]]):
        cells = [f"{medians[side][stage]:6.1f} s" if stage in medians[side] else "   (none)"
                 for side in ("old", "new")]
        print(f"  {stage:<20} {cells[0]}  {cells[1]}")
    both = [k for k in medians["old"] if k in medians["new"]]
    old_both = sum(medians["old"][k] for k in both)
    new_both = sum(medians["new"][k] for k in both)
    if old_both:
        print(f"stages both trees run ({len(both)}): {old_both:.1f} s -> {new_both:.1f} s, "
              f"new / old {new_both / old_both:.2f}; outside the stages (start-up, task load): "
              f"{old - sum(medians['old'].values()):.1f} s -> "
              f"{new - sum(medians['new'].values()):.1f} s")


if __name__ == "__main__":
    main()
