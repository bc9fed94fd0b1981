"""Paths from users and from data: what is wrong with an input file, names made safe to be path
parts, and output paths checked before anything is written.

    path_part("../../x")                        # -> "x-3b1f0c2a" (one safe component)
    file_problem(Path("test.jsonl"))            # -> None, or "is a directory, not a file"
    check_output_file(Path(out), protected)     # raises OutputPathError before any write

`protected` is what no output may replace: the store, its snapshot and WAL, the inbox, a task's
own files (loop.store.db.protected_paths + the task's files). Any existing DuckDB database is
refused as an output too, whichever workspace it belongs to. Pure checks on the file system, no
writes.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from loop.core.errors import EvalloopError
from loop.core.records import content_hash

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_PART = 80  # characters of a name kept in a path part (the hash keeps it unique)
DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file


class OutputPathError(EvalloopError):
    """An output path would replace something evalloop must keep, or is not writable as asked."""


def path_part(name: str) -> str:
    """`name` as one safe path component: letters, digits, '.', '_' and '-' only, no leading dot
    (so never '.', '..' or hidden), never empty. A name that is already safe is returned as is;
    any other gets a short hash of the original, so two names never share a folder."""
    safe = _UNSAFE.sub("_", name).strip("._-")[:MAX_PART]
    if safe == name and name:
        return name
    return f"{safe or 'task'}-{content_hash(name, length=8)}"


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a regular file, in words; None when it can."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a parent of it is a file, not a directory)"
    except PermissionError:
        return "cannot be read (permission denied on a parent directory)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(mode):
        return f"is not a regular file (it is a {_kind(mode)})"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


# the file forms a task's split may take (loop/data/readers.py reads each), by file name ending
DATA_FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".csv": "csv", ".csv.gz": "csv",
                ".tsv": "tsv", ".tsv.gz": "tsv", ".parquet": "parquet"}
DATASETS_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")  # save_to_disk's


def data_format(path: Path) -> str | None:
    """A split path's form: a DATA_FORMATS value by its ending, "datasets" for a folder saved
    with `datasets`' save_to_disk, None when it is neither."""
    if path.is_dir():
        return "datasets" if any((path / name).is_file() for name in DATASETS_FILES) else None
    name = path.name.lower()
    return next((form for end, form in DATA_FORMATS.items() if name.endswith(end)), None)


def data_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a task split (a data file or a datasets folder), in words;
    None when it can."""
    if path.is_dir():
        if data_format(path):
            return None
        return ("is a directory, not a file or a datasets folder (save_to_disk writes "
                f"{' or '.join(DATASETS_FILES[:2])} into one)")
    if problem := file_problem(path):
        return problem
    if data_format(path) is None:
        return (f"has no data form evalloop reads (file names ending in "
                f"{', '.join(DATA_FORMATS)}, or a datasets folder)")
    return None


def dir_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a directory, in words; None when it can."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file, not a directory"
    return None


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return word
    return "special file"


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (through links too), or would once written."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def is_duckdb_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def check_output_file(path: Path, protected: Iterable[Path] = (), flag: str = "OUT") -> Path:
    """`path` if a file may be written there: not a protected file (or inside a protected
    directory), not an existing DuckDB database, not a directory or special file, and in a
    directory that exists or can be made. OutputPathError otherwise, before any write."""
    path = Path(path)
    for guarded in protected:
        guarded = Path(guarded)
        # a protected folder may not exist yet (no review sent): nothing goes under it either
        same = _same(path, guarded)
        inside = not same and not guarded.is_file() and _inside(path, guarded)
        if inside or same:
            raise OutputPathError(f"{flag} {path} {'lies in' if inside else 'is'} {guarded}, "
                                  "which evalloop keeps (the "
                                  "store, its snapshot, the inbox or a task file); give another "
                                  "path.")
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a directory; give a file path.")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{flag} {path} is not a regular file (it is a "
                              f"{_kind(path.stat().st_mode)}); give a file path.")
    if is_duckdb_file(path):
        raise OutputPathError(f"{flag} {path} is a DuckDB database; evalloop never overwrites "
                              "one with an export. Give another path.")
    _check_parent(path, flag)
    return path


def check_output_dir(path: Path, protected: Iterable[Path] = (), roots: Iterable[Path] = (),
                     flag: str = "OUT_DIR") -> Path:
    """`path` if a folder of outputs may be written there: not a file, not a protected path or
    inside a protected folder (the inbox), not one of `roots` itself (a workspace, whose files
    would mix with the store's). OutputPathError otherwise, before any write."""
    path, protected = Path(path), [Path(p) for p in protected]
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file, not a directory; give a directory "
                              "path.")
    for guarded in [*protected, *map(Path, roots)]:
        same = _same(path, guarded)
        inside = (not same and guarded in protected and not guarded.is_file()
                  and _inside(path, guarded))
        if same or inside:
            raise OutputPathError(f"{flag} {path} {'lies in' if inside else 'is'} {guarded}, "
                                  "which holds what evalloop keeps (the store, its snapshot, "
                                  "the inbox or a task file); give another directory.")
    _check_parent(path, flag)
    return path


def _check_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor must be a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {path}: {parent} is a file, not a directory.")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"{flag} {path}: {parent} is not writable (permission denied or "
                              "a read-only file system).")
