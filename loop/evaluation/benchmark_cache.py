"""Base models' benchmark runs kept in the user cache folder, so a fresh workspace does not score
the embedded model again (its first cycle's champion) on items another workspace has scored.

    path = shared_run(model_id, "arc_easy", ("1.0", 0), limit=400, seed=0, backend="evalloop",
                      source=data_source("arc_easy", data_dir))
    if restore(store, path): ...      # the run is now in the store, read it back from there
    keep(path, records, samples)      # after scoring: the records put_run wrote

A file is keyed by everything the store's run key holds plus what a workspace may differ in:
seed, backend, lm-eval version and the data (`evals.benchmarks.data_source`: the local files'
sha256). Only base models (no adapter): a candidate is scored once, in its own workspace. The
folder is `loop.core.cache.cache_dir()` (tests get their own per session); like the other memos a
file only saves time: one that cannot be read is scored again, one that cannot be written is
skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lm_eval

from loop.core.cache import cache_dir, write_json_atomic
from loop.store import benchmarks as queries
from loop.store.db import Store
from loop.store.rows import BenchmarkResultRow, BenchmarkSampleRow

FOLDER = "benchmarks"


def shared_run(model_id: str, benchmark: str, key: tuple[str, int], limit: int | None,
               seed: int, backend: str, source: str) -> Path | None:
    """Where this run of a base model is kept (None for a model with an adapter)."""
    if "+" in model_id:
        return None
    version, shots = key
    ident = json.dumps([model_id, benchmark, version, shots, limit or 0, seed, backend,
                        lm_eval.__version__, source])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:24]
    return cache_dir() / FOLDER / f"{benchmark}-{digest}.json"


def restore(store: Store, path: Path | None) -> bool:
    """Copy a kept run into the store; False when there is none (or it cannot be read)."""
    if path is None:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        # a file written with other columns is scored again, like one that cannot be read
        results = [BenchmarkResultRow(**r) for r in data["results"]]
        samples = [BenchmarkSampleRow(**s) for s in data["samples"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not results:
        return False
    queries.put_run(store, results, samples)
    return True


def keep(path: Path | None, results: list[BenchmarkResultRow],
         samples: list[BenchmarkSampleRow]) -> None:
    if path is None:
        return
    try:
        write_json_atomic(path, {"results": [r.as_dict() for r in results],
                                 "samples": [s.as_dict() for s in samples]}, indent=None)
    except OSError:
        pass  # a kept run only saves time
