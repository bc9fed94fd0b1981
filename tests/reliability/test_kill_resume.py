"""SIGKILL at seeded random points of every cycle stage, then resume: nothing lost, nothing doubled.

Each trial starts `evalloop cycle` as a fresh process with `EVALLOOP_KILL_AT=STAGE:SECONDS`
(`loop/core/faults.py`): when STAGE starts, the process SIGKILLs itself SECONDS later, a random
fraction of that stage's duration in an uninterrupted reference run. No handler runs and nothing
is flushed. A chain of trials shares one workspace and kills in stages taken in cycle order; when
the chain ends, the cycle is resumed to completion and every table must hold exactly the rows,
and the same content, as the uninterrupted run (clock columns aside).
"""

from __future__ import annotations

import json
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import classification_records, write_task

from loop.cycle.run import STAGES
from loop.core.faults import ENV
from loop.store.db import DB_NAME, Store
from reliability.harness import VOLATILE, cli, table_digests, table_lines

STAGE_NAMES = tuple(s.__name__ for s in STAGES)
MIN_TRIALS = 30
KILLS_PER_CHAIN = 5
MAX_CHAINS = 10
SEED = 20261129
BENCHMARKS = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"


@dataclass(frozen=True)
class Trial:
    chain: int
    target: str  # the stage chosen to be killed in
    delay_s: float
    killed_in: str | None  # the stage running when the kill landed (None: between stages)


def cycle_task(directory: Path) -> Path:
    extra = ("[generation]\nmax_new_tokens = 4\nbatch_size = 8\n"
             "[cycle]\nbase_model = \"tiny-random\"\nseed = 5\n"
             "[targeted]\nn = 16\n"
             "[training]\nmax_steps = 8\nsave_steps = 2\nbatch_size = 4\n")
    if (BENCHMARKS / "arc_easy" / "test.jsonl").is_file():
        extra += (f"[benchmarks]\ndata_dir = \"{BENCHMARKS}\"\ntasks = [\"arc_easy\"]\n"
                  "limit = 8\n")
    return write_task(directory, {"train": classification_records(48, 100),
                                  "dev": classification_records(16, 300),
                                  "test": classification_records(16)}, extra)


def running_stage(workspace: Path) -> str | None:
    """The stage the killed process was in, from the database itself."""
    if not (workspace / DB_NAME).exists():
        return None
    with Store(workspace, read_only=True) as store:
        rows = store.query("SELECT stage FROM cycle_stages WHERE status = 'running'")
    return rows[0]["stage"] if rows else None


# Left out besides clocks: how the work was done, which a resume changes by design (how many
# predictions were generated or reused, whether the targeted batch was reused from the store,
# matches judged now, the step training resumed from), and a rating snapshot's id, which hashes
# model names holding the workspace path (the snapshot's content is compared).
HOW_DONE = ("generated", "reused", "cached", "judged", "new_matches", "resumed_from_step",
            "snapshot_id")


def digests(workspace: Path) -> dict:
    return table_digests(workspace, {str(workspace): "<workspace>"}, volatile=VOLATILE + HOW_DONE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The task, one uninterrupted cycle, and how long each of its stages took."""
    root = tmp_path_factory.mktemp("reference")
    task = cycle_task(root / "task")
    proc = cli("cycle", "--task", str(task), "--workspace", str(root / "ws"), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Store(root / "ws", read_only=True) as store:
        durations = {r["stage"]: r["s"] for r in store.query(
            "SELECT stage, epoch(finished_at - started_at) AS s FROM cycle_stages")}
    return task, root / "ws", durations


def differing_rows(workspace: Path, reference_ws: Path, got: dict, want: dict) -> dict:
    """Per table whose digests differ: the values that differ, by row and key path, when both
    sides hold the same number of rows; else the rows only one side holds (three at most)."""
    tables = {t for t in set(got) | set(want) if got.get(t) != want.get(t)}
    ours = table_lines(workspace, {str(workspace): "<workspace>"}, VOLATILE + HOW_DONE)
    theirs = table_lines(reference_ws, {str(reference_ws): "<workspace>"}, VOLATILE + HOW_DONE)
    out = {}
    for t in tables:
        mine, reference_rows = ours.get(t, []), theirs.get(t, [])
        if len(mine) == len(reference_rows):
            out[t] = [d for a, b in zip(mine, reference_rows) if a != b
                      for d in leaf_differences(json.loads(a), json.loads(b))][:10]
        else:
            out[t] = {"resumed only": sorted(set(mine) - set(reference_rows))[:3],
                      "reference only": sorted(set(reference_rows) - set(mine))[:3]}
    return out


def leaf_differences(resumed, reference, path: str = "") -> list[str]:
    """'path: resumed != reference' for each leaf of two JSON values that differs."""
    if isinstance(resumed, dict) and isinstance(reference, dict):
        return [d for k in sorted(set(resumed) | set(reference))
                for d in leaf_differences(resumed.get(k), reference.get(k), f"{path}.{k}")]
    return [] if resumed == reference else [f"{path or '.'}: {resumed!r} != {reference!r}"]


def kill_in(workspace: Path, task: Path, stage: str, delay: float) -> bool:
    """Run a cycle that kills itself `delay` s into `stage`; False if it finished first."""
    proc = cli("cycle", "--task", str(task), "--workspace", str(workspace), "--json",
               env={ENV: f"{stage}:{delay:.4f}"})
    if proc.returncode == 0:
        return False
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return True


def trials_in(trials: list[Trial]) -> dict[str, int]:
    return {s: sum(t.killed_in == s for t in trials) for s in STAGE_NAMES}


def test_sigkill_at_random_points_of_every_stage_then_resume(reference, tmp_path):
    task, reference_ws, durations = reference
    want = digests(reference_ws)
    rng = random.Random(SEED)
    trials: list[Trial] = []
    chain = 0
    misses = dict.fromkeys(STAGE_NAMES, 0)  # kills aimed at a stage that landed after it
    while len(trials) < MIN_TRIALS or (not all(trials_in(trials).values())
                                       and chain < MAX_CHAINS):
        workspace = tmp_path / f"chain-{chain}"
        # Stages in cycle order, so each kill lands in a stage the chain has not finished;
        # stages no kill has landed in yet come first.
        unhit = [s for s, n in trials_in(trials).items() if not n]
        others = rng.sample([s for s in STAGE_NAMES if s not in unhit], len(STAGE_NAMES) -
                            len(unhit))
        chosen = (unhit + others)[:KILLS_PER_CHAIN]
        for target in sorted(chosen, key=STAGE_NAMES.index):
            # A stage of a few milliseconds: aim earlier each time a kill landed after it.
            delay = rng.uniform(0, durations[target]) * 0.5 ** misses[target]
            if kill_in(workspace, task, target, delay):
                trial = Trial(chain, target, round(delay, 4), running_stage(workspace))
                misses[target] += trial.killed_in != target
                trials.append(trial)
        proc = cli("cycle", "--task", str(task), "--workspace", str(workspace), "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = digests(workspace)
        assert got == want, differing_rows(workspace, reference_ws, got, want)
        chain += 1
    hit = trials_in(trials)
    print(f"\n{len(trials)} SIGKILL trials in {chain} chains, all resumed to the reference "
          f"rows; kills per stage: {hit}")
    assert len(trials) >= MIN_TRIALS
    assert all(hit.values()), f"stages never killed in: {[s for s, n in hit.items() if not n]}"
