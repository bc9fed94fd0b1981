"""Faults tried on purpose: a damaged adapter, a deleted or damaged model cache, a full disk and a
database held by another process each give a clear error and leave no partial state."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import classification_records, random_adapter, write_task

from loop.models import loading as models
from loop.store.db import DB_NAME, Store
from reliability.harness import cli, error_line, table_digests


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory.mktemp("task"), {
        "dev": classification_records(12, 300), "test": classification_records(12)},
        "[generation]\nmax_new_tokens = 4\nbatch_size = 4\n")


@pytest.fixture(scope="module")
def evaluated(task, tmp_path_factory) -> Path:
    """A workspace holding one finished evaluation of the tiny model."""
    workspace = tmp_path_factory.mktemp("ws")
    proc = cli("eval", "--task", str(task), "--workspace", str(workspace), "--model",
               "tiny-random", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workspace


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return random_adapter(tmp_path_factory.mktemp("adapter") / "adapter")


def _damage(adapter: Path, target: Path, how: str) -> Path:
    shutil.copytree(adapter, target)
    weights, config = target / "adapter_model.safetensors", target / "adapter_config.json"
    if how == "truncated_weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif how == "garbage_weights":
        weights.write_bytes(b"\x00\x01not a safetensors file" * 100)
    elif how == "empty_weights":
        weights.write_bytes(b"")
    elif how == "garbage_config":
        config.write_text("{ this is not json")
    elif how == "wrong_target_modules":
        cfg = json.loads(config.read_text())
        config.write_text(json.dumps({**cfg, "target_modules": ["no_such_proj"]}))
    elif how == "wrong_shapes":
        cfg = json.loads(config.read_text())
        config.write_text(json.dumps({**cfg, "r": 16}))  # weights were saved with r = 4
    elif how == "weights_deleted":
        weights.unlink()
    return target


DAMAGE = ["truncated_weights", "garbage_weights", "empty_weights", "garbage_config",
          "wrong_target_modules", "wrong_shapes", "weights_deleted"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_adapter_is_refused_and_the_store_is_untouched(how, task, evaluated, adapter,
                                                                  tmp_path):
    damaged = _damage(adapter, tmp_path / "adapter", how)
    before = table_digests(evaluated)
    proc = cli("eval", "--task", str(task), "--workspace", str(evaluated), "--model",
               f"tiny-random+{damaged}", "--json")
    assert proc.returncode != 0
    message = error_line(proc)
    assert str(damaged) in message, message
    assert table_digests(evaluated) == before


def test_a_deleted_or_damaged_model_cache_is_rebuilt_to_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path / "home"))
    first = models.load_model("tiny-random")
    cache = Path(first.base_path)
    weights = (cache / "model.safetensors").read_bytes()
    damage = [lambda: shutil.rmtree(tmp_path / "home"),                      # all of it
              lambda: (cache / "model.safetensors").unlink(),                 # one file
              lambda: (cache / "model.safetensors").write_bytes(weights[:1000]),  # cut short
              lambda: (cache / models.CACHE_MANIFEST).unlink()]               # never finished
    for hurt in damage:
        hurt()
        again = models.load_model("tiny-random")
        assert again.model_id == first.model_id
        assert (cache / "model.safetensors").read_bytes() == weights
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def _limit_file_size(max_bytes: int):
    """A full disk for one process: its writes past `max_bytes` in any file fail with EFBIG."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


@contextmanager
def _small_filesystem(directory: Path, free_bytes: int):
    """A tmpfs holding `directory`'s files with `free_bytes` to spare: a real ENOSPC, for the
    workspace only. Needs root (mount); None where mounting is not allowed."""
    used = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    mount = directory.parent / f"{directory.name}-full"
    mount.mkdir()
    size = used + free_bytes + 64 * 1024  # tmpfs rounds to pages and keeps some for inodes
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                        capture_output=True, check=False).returncode == 0
    if not ok:
        yield None
        return
    try:
        for item in directory.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, mount / item.name)
        yield mount
        shutil.rmtree(directory)
        shutil.copytree(mount, directory)  # keep what survived, for the checks after
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


FULL_DISKS = [("fsize", 16 * 1024), ("fsize", 256 * 1024), ("tmpfs", 0), ("tmpfs", 256 * 1024),
              ("tmpfs", 2 * 1024 * 1024)]


@pytest.mark.parametrize("kind,spare", FULL_DISKS, ids=[f"{k}-{n // 1024}k" for k, n in FULL_DISKS])
def test_a_full_disk_gives_a_clear_error_and_the_rerun_completes(kind, spare, task, evaluated,
                                                                 tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(evaluated, workspace)
    before = table_digests(workspace)
    # A dev evaluation writes a run, predictions, scores, embeddings and a snapshot.
    args = ("eval", "--task", str(task), "--model", "tiny-random", "--split", "dev", "--json")
    if kind == "fsize":
        proc = cli(*args, "--workspace", str(workspace), preexec_fn=_limit_file_size(spare))
    else:
        with _small_filesystem(workspace, spare) as mount:
            if mount is None:
                pytest.skip("mounting a small tmpfs needs root")
            proc = cli(*args, "--workspace", str(mount))
    if proc.returncode == 0:
        assert kind == "tmpfs" and spare >= 1024 * 1024, "the run fit: the fault never happened"
    else:
        message = error_line(proc)
        assert any(s in message for s in ("no space", "Cannot write", "Cannot publish")), message
    after = table_digests(workspace)  # the database still opens and reads
    assert {t: after[t] for t in ("examples", "tasks", "models")} == {
        t: before[t] for t in ("examples", "tasks", "models")}
    # Nothing half-done is marked finished: a dev run marked done has all its items scored
    # (the snapshot copy, written last, may be what ran out of space).
    with Store(workspace, read_only=True) as store:
        for run in store.query("SELECT run_id, status FROM runs WHERE split = 'dev'"):
            scored = store.query(
                "SELECT count(DISTINCT ri.example_id) AS n FROM run_items ri JOIN scores s "
                "ON s.prediction_id = ri.prediction_id WHERE ri.run_id = ?", [run["run_id"]])
            assert run["status"] == "running" or scored[0]["n"] == 12, run
    # With space again, the same command finishes and matches a run that never failed.
    proc = cli(*args, "--workspace", str(workspace))
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = tmp_path / "reference"
    shutil.copytree(evaluated, reference)
    assert cli(*args, "--workspace", str(reference)).returncode == 0
    got, want = table_digests(workspace), table_digests(reference)
    for table in ("predictions", "scores", "run_items", "failures"):
        assert got[table] == want[table], table
    assert _runs(workspace) == _runs(reference)


def _runs(workspace: Path) -> list[tuple]:
    """Each run's status and results (its summary also counts reused predictions: left out)."""
    with Store(workspace, read_only=True) as store:
        return [(r["run_id"], r["status"], json.loads(r["summary"])["pass_rate"])
                for r in store.query("SELECT run_id, status, summary FROM runs ORDER BY run_id")]


def test_a_database_held_by_another_process_is_a_clear_error(task, evaluated):
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(120)"), str(evaluated / DB_NAME)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        proc = cli("eval", "--task", str(task), "--workspace", str(evaluated), "--model",
                   "tiny-random", "--json")
        assert proc.returncode == 3
        message = error_line(proc)
        assert str(evaluated / DB_NAME) in message and "Another evalloop process" in message
        assert str(holder.pid) in message  # DuckDB names the process holding the lock
    finally:
        holder.kill()
        holder.wait()
    before = table_digests(evaluated)
    proc = cli("eval", "--task", str(task), "--workspace", str(evaluated), "--model",
               "tiny-random", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table_digests(evaluated)["predictions"] == before["predictions"]  # cached, no dupes
