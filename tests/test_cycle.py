"""The cycle on a task built in a temp dir: summary, idempotence, kills and resume, nightly lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import classification_records, write_task
from loop.store import cycles
from loop.store.db import SNAPSHOT_NAME, Store

SHARED_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
NEEDS_BENCH = pytest.mark.skipif(not (SHARED_BENCHMARKS / "arc_easy" / "test.jsonl").is_file(),
                                 reason=f"benchmark data not found at {SHARED_BENCHMARKS}")


def cycle_task(directory: Path, benchmarks: bool) -> Path:
    extra = ("[generation]\nmax_new_tokens = 6\nbatch_size = 8\n"
             "[cycle]\nbase_model = \"tiny-random\"\nseed = 3\n"
             "[targeted]\nn = 24\n"
             "[training]\nmax_steps = 12\nsave_steps = 3\nbatch_size = 4\n")
    if benchmarks:
        extra += (f"[benchmarks]\ndata_dir = \"{SHARED_BENCHMARKS}\"\ntasks = [\"arc_easy\"]\n"
                  "limit = 16\n")
    return write_task(directory, {"train": classification_records(80, 100),
                                  "dev": classification_records(24, 300),
                                  "test": classification_records(24)}, extra)


def evalloop(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def table_counts(workspace: Path) -> dict[str, int]:
    with Store(workspace) as store:
        return {t: store.count(t) for t in store.tables()}


def stage_status(workspace: Path) -> dict[str, str]:
    snapshot = workspace / SNAPSHOT_NAME
    if not snapshot.exists():
        return {}
    try:
        with Store(workspace, read_only=True, path=snapshot) as store:
            return {r["stage"]: r["status"] for r in
                    store.query("SELECT stage, status FROM cycle_stages")}
    except Exception:  # noqa: BLE001 - a snapshot being replaced; poll again
        return {}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted cycle (with a benchmark) to compare others against."""
    root = tmp_path_factory.mktemp("baseline")
    task = cycle_task(root / "task", benchmarks=SHARED_BENCHMARKS.is_dir())
    proc = evalloop("cycle", "--task", str(task), "--workspace", str(root / "ws"), "--json")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return task, root / "ws", json.loads(out)


def test_cycle_summary_on_an_external_task(baseline):
    task, workspace, summary = baseline
    assert summary["task"] == "tiny"
    for role in ("champion", "candidate"):
        assert set(summary[role]["test"]["per_category"]) == {
            "colour_red", "colour_green", "colour_blue", "colour_yellow"}
        assert 0.0 <= summary[role]["test"]["pass_rate"] <= 1.0
    assert summary["candidate"]["name"].startswith("tiny-random+")
    assert {r["check"] for r in summary["gate"]["reasons"]} >= {"gain", "significance",
                                                                 "categories", "rating"}
    assert Path(summary["report"]).is_file()
    times = summary["stage_times"]  # every stage but the report itself has finished by now
    assert set(times) >= {"eval_champion_dev", "failures", "targeted", "train", "gate"}
    assert all(row["seconds"] >= 0 for row in times.values())
    assert times["train"]["unit"] == "tokens" and times["train"]["per_s"] > 0
    report = Path(summary["report"]).parent
    assert (report / "report.md").is_file() and (report / "categories.png").is_file()
    assert "## Stage times" in (report / "report.md").read_text()
    arm = summary["prompt_arm"]  # the champion zero- and 4-shot on dev, beside the candidate
    assert arm["shots"] == 4 and arm["n"] == 24
    assert "prompt" not in arm["zero_shot"]  # zero-shot summaries are stored as before
    assert arm["k_shot"]["prompt"] == "4-shot random (seed 0)"
    assert arm["zero_shot"]["pass_rate"] == summary["champion"]["dev"]["pass_rate"]
    assert set(arm["per_category"]) == set(summary["champion"]["test"]["per_category"])
    assert ("a fine-tune is not needed" in arm["note"]) == arm["prompting_matches"]
    assert "## Prompt arm" in (report / "report.md").read_text()
    if summary["champion"]["dev"]["pass_rate"] < 1.0:  # failures, so clusters with an example
        text = (report / "report.md").read_text()
        section = text.split("## Examples per cluster")[1].split("\n## ")[0]
        assert section.count("\n| ") >= 3  # header, rule, at least one cluster
    bench = [r for r in summary["gate"]["reasons"] if r["check"].startswith("benchmark:")]
    if SHARED_BENCHMARKS.is_dir():  # every benchmark line: paired interval and MDE
        assert {r["check"] for r in bench} >= {"benchmark:arc_easy/acc",
                                               "benchmark:pooled/accuracy"}
        assert all("interval [" in r["detail"] and r["mde"] > 0 and r["status"] for r in bench)
        assert "| MDE |" in (report / "report.md").read_text()
    with Store(workspace) as store:
        stages = store.query("SELECT stage, status FROM cycle_stages")
        assert {r["status"] for r in stages} == {"done"} and len(stages) == 10
        assert store.count("gate_decisions") == 1
        trials = len(cycles.stage_result(store, summary["cycle_id"], "train")["search"])
        # one training per recipe trial (loop/train/search.py), the kept one the candidate
        assert store.count("training_runs") == trials and store.count("matches") >= 1


def test_finished_cycle_is_not_rerun_and_adds_no_rows(baseline):
    task, workspace, summary = baseline
    before = table_counts(workspace)
    proc = evalloop("cycle", "--task", str(task), "--workspace", str(workspace), "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    again = json.loads(out)
    assert again["already_finished"] and again["cycle_id"] == summary["cycle_id"]
    assert table_counts(workspace) == before


def _kill_when(proc: subprocess.Popen, workspace: Path, stage: str, delay: float) -> bool:
    """SIGKILL the cycle `delay` s after `stage` starts; False if the process ended first."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if stage_status(workspace).get(stage) == "running":
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            return False
        time.sleep(0.2)
    return False


@NEEDS_BENCH
def test_sigkill_during_generation_training_and_benchmarks_then_resume(baseline, tmp_path):
    task, base_ws, _ = baseline
    workspace = tmp_path / "ws"
    killed = []
    for stage, delay in (("eval_champion_dev", 1.0), ("train", 4.0), ("benchmarks", 1.0)):
        proc = evalloop("cycle", "--task", str(task), "--workspace", str(workspace))
        if _kill_when(proc, workspace, stage, delay):
            killed.append(stage)
        else:
            proc.communicate()
    assert killed == ["eval_champion_dev", "train", "benchmarks"]
    proc = evalloop("cycle", "--task", str(task), "--workspace", str(workspace), "--json")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    with Store(workspace) as store:
        resumed = store.query("SELECT resumed_from_step, total_steps, steps_done FROM "
                              "training_runs")[0]
    assert resumed["total_steps"] == resumed["steps_done"] == 12
    assert table_counts(workspace) == table_counts(base_ws)


def test_two_nightly_runs_one_runs_one_exits_with_the_lock_message(tmp_path):
    task = cycle_task(tmp_path / "task", benchmarks=False)
    workspace = tmp_path / "ws"
    runs = [evalloop("nightly", "--task", str(task), "--workspace", str(workspace))
            for _ in range(2)]
    deadline = time.monotonic() + 120
    while all(p.poll() is None for p in runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    loser = next(p for p in runs if p.poll() is not None)
    winner = next(p for p in runs if p is not loser)
    _, err = loser.communicate()
    running = winner.poll() is None
    winner.kill()
    winner.wait()
    assert loser.returncode == 75, err[-2000:]
    assert "Another evalloop nightly run holds" in err and "Traceback" not in err
    assert running  # the other one was still at work


def test_time_budget_stops_between_stages_and_the_next_run_resumes(tmp_path):
    task = cycle_task(tmp_path / "task", benchmarks=False)
    workspace = tmp_path / "ws"
    proc = evalloop("nightly", "--task", str(task), "--workspace", str(workspace),
                    "--max-minutes", "0.0001")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 124, err[-2000:]
    assert "Time budget" in err
    assert list((workspace / "logs").glob("nightly-*.log"))


def test_nightly_json_prints_one_json_document(tmp_path, monkeypatch, capsys):
    """`nightly --json` used to print a `log:` line after the document."""
    from loop import cli
    from loop.cycle import run

    task = cycle_task(tmp_path / "task", benchmarks=False)
    monkeypatch.setattr(run, "run_cycle", lambda *a, **kw: {"cycle_id": "c",
                                                            "gate": {"promote": False}})
    for name in ("loop", "evals"):  # the log file handler nightly attaches goes with the test
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "level", logger.level)
    code = cli.main(["nightly", "--task", str(task), "--workspace", str(tmp_path / "ws"),
                     "--json"])
    out = capsys.readouterr().out
    assert code == 10
    document = json.loads(out)  # nothing before or after it
    assert document["cycle_id"] == "c" and Path(document["log"]).parent.name == "logs"


def test_a_cycle_evaluates_each_model_and_split_once(tmp_path, monkeypatch):
    """The arena used to evaluate both models on test again after eval_candidate had."""
    from loop.cycle import run
    from loop.evaluation import evaluate as evaluation

    calls = []
    real = evaluation.evaluate

    def counted(store, task, model_name, split="test", *args, **kwargs):
        prompt = kwargs.get("prompt")
        calls.append((model_name, split, prompt.label if prompt else None))
        return real(store, task, model_name, split, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", counted)
    monkeypatch.setattr(run, "evaluate", counted)
    task = write_task(tmp_path / "task", {"train": classification_records(40, 100),
                                          "dev": classification_records(8, 300),
                                          "test": classification_records(8)},
                      "[generation]\nmax_new_tokens = 4\nbatch_size = 8\n"
                      "[cycle]\nbase_model = \"tiny-random\"\nbenchmarks = false\n"
                      "[targeted]\nn = 8\n[training]\nmax_steps = 2\nbatch_size = 4\n"
                      "search = false\n")  # a recipe search also scores each trial on dev
    summary = run.run_cycle(task, tmp_path / "ws", progress=False)
    # the champion and the candidate on dev and test, and the champion 4-shot on dev (the prompt
    # arm's zero-shot is the first dev run)
    assert summary["gate"]["reasons"] and len(calls) == len(set(calls)) == 5, calls
    assert {split for _, split, _ in calls} == {"dev", "test"}
    assert sum(prompt is not None for *_, prompt in calls) == 1
