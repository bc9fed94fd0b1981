"""Load: one full cycle on the tiny model with 20,000 eval items and a 100,000-row pool.

    .venv/bin/python bench/load_cycle.py [--eval-items 20000] [--pool 100000] [--json out.json]

Writes a classification task (not the demo) into a temp directory: `test` holds the eval items,
`dev` a tenth as many (the failures the cycle mines), `train` the pool that retrieval searches.
It runs `evalloop cycle` on `tiny-random` as a child process and, while it runs:
  * samples the child's resident memory every 0.5 s (peak RSS comes from the kernel:
    `getrusage(RUSAGE_CHILDREN).ru_maxrss`, which misses nothing between samples);
  * every 2 s opens the app's read-only snapshot and times the failures page's queries
    (`filter_failures`, `failure_options`), as the app would while the cycle holds the database.
Prints wall time, stage durations, peak RSS, the RSS curve and the app's query latency
(median, p95, max); exits 1 if the cycle fails or the app's p95 exceeds --app-budget-ms.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loop.store.app_failures import FailureFilter, failure_options, filter_failures  # noqa: E402
from loop.store.app_queries import snapshot  # noqa: E402
from loop.store.db import SNAPSHOT_NAME, Store  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
WORDS = ("harbour", "lantern", "orchard", "violin", "glacier", "meadow", "saddle", "compass",
         "thimble", "quarry", "anchor", "biscuit", "canyon", "ferret", "gondola", "hammock",
         "igloo", "jackal", "kettle", "lagoon", "marble", "nectar", "oyster", "pepper", "quiver",
         "raven", "satchel", "tundra", "umbrella", "velvet", "walrus", "yodel", "zephyr",
         "attic", "bramble", "cobbler", "dune", "ember", "fjord", "garnet", "hazel", "ivory",
         "juniper", "kiln", "lichen", "mosaic", "nomad", "opal", "parsley", "quill", "rustic",
         "sable", "thistle", "urchin", "vortex", "willow", "yarrow", "zinnia", "banner", "cellar")


def records(n: int, seed: int) -> list[dict]:
    """Items with varied wording (word salad around one colour), so that decontamination does
    not reject the whole pool as paraphrases of the eval items."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        colour = rng.choice(COLOURS)
        words = rng.sample(WORDS, rng.randint(6, 12))
        words.insert(rng.randrange(len(words) + 1), colour)
        out.append({"id": f"s{seed}-{i}",
                    "instruction": "Name the colour mentioned in the sentence. One word.",
                    "input": " ".join(words).capitalize() + ".", "output": colour,
                    "category": f"colour_{colour}"})
    return out


def write_task(directory: Path, eval_items: int, pool: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in (("test", records(eval_items, 1)),
                        ("dev", records(max(eval_items // 10, 50), 2)),
                        ("train", records(pool, 3))):
        with (directory / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    (directory / "task.toml").write_text(
        'name = "load"\ntrain = "train.jsonl"\ndev = "dev.jsonl"\ntest = "test.jsonl"\n'
        "[generation]\nmax_new_tokens = 4\nbatch_size = 64\n"
        '[cycle]\nbase_model = "tiny-random"\nbenchmarks = false\n'
        "[targeted]\nn = 200\n[training]\nmax_steps = 20\nbatch_size = 8\n")
    return directory / "task.toml"


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def app_probe(workspace: Path, stop: threading.Event, latencies: list[float],
              errors: list[str]) -> None:
    """The app's failures page, every 2 s, on the snapshot the cycle publishes."""
    while not stop.wait(2.0):
        if not (workspace / SNAPSHOT_NAME).exists():
            continue
        start = time.perf_counter()
        try:
            with snapshot(workspace) as store:
                if store is not None and "failures" in store.tables():
                    filter_failures(store, FailureFilter())
                    filter_failures(store, FailureFilter(search="blue"))
                    failure_options(store)
        except Exception as exc:  # noqa: BLE001 - reported, not fatal: the app would show it
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        latencies.append(time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-items", type=int, default=20_000)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--app-budget-ms", type=float, default=1000.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalloop-load-") as tmp:
        root = Path(tmp)
        task = write_task(root / "task", args.eval_items, args.pool)
        workspace = root / "ws"
        stop, latencies, errors, curve = threading.Event(), [], [], []
        probe = threading.Thread(target=app_probe, args=(workspace, stop, latencies, errors))
        probe.start()
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "cycle", "--task", str(task),
                                 "--workspace", str(workspace), "--json"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: setattr(proc, "out", proc.communicate()))
        reader.start()
        while reader.is_alive():
            mb = rss_mb(proc.pid)
            if mb is not None:
                curve.append((round(time.perf_counter() - start, 1), round(mb)))
            reader.join(0.5)
        wall = time.perf_counter() - start
        stop.set()
        probe.join()
        _out, err = proc.out
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            print(err[-4000:], file=sys.stderr)
            return 1
        with Store(workspace, read_only=True) as store:
            stages = {r["stage"]: round(r["s"], 1) for r in store.query(
                "SELECT stage, epoch(finished_at - started_at) AS s FROM cycle_stages "
                "ORDER BY started_at")}
            rows = {t: store.count(t) for t in ("examples", "predictions", "scores",
                                                "failures", "generated_examples", "embeddings")}
        db_mb = (workspace / "evalloop.duckdb").stat().st_size / 2**20
    ms = sorted(1000 * x for x in latencies)
    app = {"probes": len(ms), "errors": errors[:5],
           "median_ms": round(statistics.median(ms), 1) if ms else None,
           "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1) if ms else None,
           "max_ms": round(ms[-1], 1) if ms else None}
    report = {"eval_items": args.eval_items, "pool": args.pool, "wall_s": round(wall, 1),
              "peak_rss_mb": round(peak_mb), "db_mb": round(db_mb), "stages_s": stages,
              "rows": rows, "app": app, "rss_curve_mb": curve[:: max(1, len(curve) // 40)]}
    print(f"cycle on {args.eval_items} eval items, {args.pool} pool rows: {wall:.0f} s, "
          f"peak RSS {peak_mb:.0f} MB, database {db_mb:.0f} MB")
    print("stages (s): " + ", ".join(f"{k} {v}" for k, v in stages.items()))
    print("rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
    print(f"app failures page while the cycle ran: {app['probes']} probes, median "
          f"{app['median_ms']} ms, p95 {app['p95_ms']} ms, max {app['max_ms']} ms, "
          f"errors {len(errors)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if not errors and (app["p95_ms"] or 0) <= args.app_budget_ms else 1


if __name__ == "__main__":
    sys.exit(main())
