"""Where evalloop keeps what it can rebuild, and how files are written so a crash leaves no half file.

    cache_dir()                       # $EVALLOOP_HOME, else the platform's user cache folder
    write_atomic(path, text_or_bytes) # temp file beside `path`, then one rename
    write_json_atomic(path, value)
    memoised("fingerprints", key, compute)   # compute() once per key, kept in <cache>/<name>.json

The default cache folder is platformdirs' user cache folder: `~/.cache/evalloop` on Linux (or
`$XDG_CACHE_HOME/evalloop`), `~/Library/Caches/evalloop` on macOS, `%LOCALAPPDATA%\\evalloop\\Cache`
on Windows. Memos only save time: a memo that cannot be read is recomputed, one that cannot be
written is skipped.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

APP_NAME = "evalloop"


def cache_dir() -> Path:
    home = os.environ.get("EVALLOOP_HOME")
    if home:
        return Path(home).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False))


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write to; renamed onto `path` when the block succeeds,
    removed when it fails. For writers that need a file name (Parquet, a database copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid and thread: two writers of the same file never share a temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write all of `data` (str as UTF-8) or nothing: readers see the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: Path, value: Any, indent: int | None = 2) -> Path:
    return write_atomic(path, json.dumps(value, indent=indent, default=str))


def memoised(name: str, key: str, compute: Callable[[], Any]) -> Any:
    """The JSON value stored under `key` in `<cache_dir>/<name>.json`, computing and storing it
    when absent. Concurrent writers may lose each other's new keys (recomputed next time), never
    corrupt the file."""
    path = cache_dir() / f"{name}.json"
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    if key not in memo:
        memo[key] = compute()
        try:
            write_json_atomic(path, memo, indent=1)
        except OSError:
            pass  # a memo only saves time
    return memo[key]
