"""Shared pieces of the reliability suite: running the CLI as a process, and store digests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from loop.store.db import Store

REPO = Path(__file__).resolve().parents[2]

# Columns whose values legitimately differ between two identical runs: clocks and timings.
VOLATILE = ("created_at", "started_at", "finished_at", "updated_at", "applied_at", "since",
            "measured_at", "latency_s", "wall_s", "elapsed_s", "tokens_per_s", "peak_mem_mb",
            "stage_times")


def cli(*args: str, env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run `python -m loop.cli ARGS` to completion (a fresh process, like cron would)."""
    return subprocess.run([sys.executable, "-m", "loop.cli", *args], capture_output=True,
                          check=False, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})}, **kw)


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})})


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's one-paragraph error: the last stderr line, and no traceback anywhere."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("evalloop:"), proc.stderr[-3000:]
    return lines[-1]


def _canonical(value, replacements: dict[str, str]) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def table_digests(workspace: Path, replacements: dict[str, str] | None = None,
                  volatile: tuple[str, ...] = VOLATILE) -> dict[str, tuple[int, str]]:
    """{table: (rows, sha256 of its sorted rows)} without clock columns.

    `replacements` maps run-specific strings (a workspace path) to placeholders, so two runs in
    different directories compare equal when their content is the same.
    """
    return {table: (len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16])
            for table, lines in table_lines(workspace, replacements, volatile).items()}


def table_lines(workspace: Path, replacements: dict[str, str] | None = None,
                volatile: tuple[str, ...] = VOLATILE) -> dict[str, list[str]]:
    """{table: its rows as sorted canonical lines} without clock columns: what a digest hashes,
    readable when two digests differ."""
    replacements = replacements or {}
    out = {}
    with Store(workspace, read_only=True) as store:
        for table in store.tables():
            columns = [r["column_name"] for r in store.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position", [table])]
            kept = [c for c in columns if c not in volatile]
            rows = store.query(f'SELECT * FROM "{table}"')  # table names come from the schema
            out[table] = sorted(_canonical(_drop({c: _jsonish(r[c]) for c in kept}, volatile),
                                           replacements) for r in rows)
    return out


def _jsonish(value):
    """JSON columns come back as text: parse them so key order and spacing do not matter."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _drop(value, keys: tuple[str, ...]):
    """The value without the given keys at any depth (timings inside JSON results)."""
    if isinstance(value, dict):
        return {k: _drop(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop(v, keys) for v in value]
    return value
