"""Read one task split in the form a team keeps its data in, as records that name their place.

    table = read_table(Path("train.csv"), "train")
    table.columns        # ("text", "label"): a table's header; None for JSONL (keys per row)
    for where, record in table.rows:     # str(where): "train.csv row 3 (line 4)"
        ...

Forms, by file name ending (loop.core.paths.DATA_FORMATS), or a folder:

- JSONL (`.jsonl`, `.jsonl.gz`): one JSON object per line, its values as JSON has them.
- CSV and TSV (`.csv`, `.tsv`, also `.gz`): a header row naming the columns; every cell is text.
- Parquet (`.parquet`), and a `datasets` folder written by `save_to_disk` (a `DatasetDict`
  gives the split of the same name: `validation` or `dev` for dev).

Cells of tables become what a row of text needs: numbers and booleans their text (a label
column stored as ids), a `datasets` ClassLabel its label name, an empty or null cell is left out
(the row parser says when a needed one is missing); lists and structs stay as they are (chat
messages; anywhere else the row parser calls them the wrong type). Bad input raises
TaskDataError naming the file and the line or row. Reading only: what a row means is
loop/data/tasks.py's.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loop.core.errors import TaskDataError
from loop.core.paths import data_format, data_problem

MAX_RECORD_CHARS = 1_000_000
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
# the split names of a DatasetDict each task split reads, in order of preference
DATASET_SPLITS = {"train": ("train",), "dev": ("validation", "dev", "valid"), "test": ("test",)}
ARROW_BATCH = 1024


@dataclass(frozen=True)
class Where:
    """A record's place: `path:line` (JSONL), `path row N (line L)` (CSV), `path row N`."""

    path: Path
    line: int | None = None
    row: int | None = None

    @property
    def position(self) -> str:
        """The place inside the file: `line 4`, `row 3 (line 4)` or `row 3`."""
        if self.row is None:
            return f"line {self.line}"
        return f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")

    def __str__(self) -> str:
        if self.row is None:
            return f"{self.path}:{self.line}"
        return f"{self.path} {self.position}"


@dataclass(frozen=True)
class Table:
    """One split's records. `columns`: the header of a table form (CSV, TSV, Parquet,
    datasets), None for JSONL, whose rows each have their own keys."""

    path: Path
    form: str
    columns: tuple[str, ...] | None
    rows: Iterator[tuple[Where, object]]

    @property
    def noun(self) -> str:
        """What a key of a record is called in messages."""
        return "field" if self.columns is None else "column"


def read_table(path: Path, split: str) -> Table:
    """The split's records; the file is read here, the records are parsed as they are
    iterated."""
    if problem := data_problem(path):  # a FIFO would block the read forever
        raise TaskDataError(f"Cannot read {path}: it {problem}.")
    form = data_format(path)
    if form == "datasets":
        return _datasets_table(path, split)
    if form == "parquet":
        return _parquet_table(path)
    raw = _read_bytes(path)
    if form == "jsonl":
        return Table(path, form, None, _jsonl_records(path, raw))
    return _csv_table(path, form, raw)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.name.lower().endswith(".gz") else raw
    except OSError as exc:  # gzip.BadGzipFile is an OSError too
        raise TaskDataError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except EOFError:
        raise TaskDataError(f"Cannot read {path}: the gzip stream is cut short.") from None


# ---------------------------------------------------------------------------- JSONL

def _jsonl_records(path: Path, raw: bytes) -> Iterator[tuple[Where, object]]:
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = Where(path, lineno)
        if len(line) > MAX_RECORD_CHARS:
            raise TaskDataError(f"{where}: record is {len(line):,} bytes, over the "
                                f"{MAX_RECORD_CHARS:,}-byte limit per record.")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskDataError(f"{where}: not valid UTF-8 (byte {exc.start}).") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{where}: not valid JSON ({exc.msg} at column "
                                f"{exc.colno}).") from None
        if _SURROGATE.search(text):  # a \ud800-style escape: valid JSON, not valid Unicode
            try:
                json.dumps(record, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise TaskDataError(f"{where}: a \\u escape makes a lone surrogate "
                                    f"({exc.object[exc.start]!r}), which is not valid "
                                    "Unicode.") from None
        yield where, record


# ---------------------------------------------------------------------------- CSV and TSV

def _csv_table(path: Path, form: str, raw: bytes) -> Table:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise TaskDataError(f"{path}:{line}: not valid UTF-8 (byte {exc.start} of the "
                            "file).") from None
    # the limit is the csv module's, process-wide; a record may be this long, as in JSONL
    csv.field_size_limit(MAX_RECORD_CHARS)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if form == "tsv" else ",")
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise TaskDataError(f"{path}: the file is empty; a {form.upper()} split needs a header "
                            "row naming its columns.") from None
    except csv.Error as exc:
        raise TaskDataError(f"{path}:1: not valid {form.upper()} ({exc}).") from None
    if not all(header) or len(set(header)) < len(header):
        twice = sorted({h for h in header if header.count(h) > 1})
        what = f"names {', '.join(repr(h) for h in twice)} twice" if twice else \
            "has an unnamed column"
        raise TaskDataError(f"{path}:1: the header row {what}; each column needs its own "
                            "name.")
    return Table(path, form, tuple(header), _csv_records(path, form, reader, header))


def _csv_records(path: Path, form: str, reader, header: list[str]
                 ) -> Iterator[tuple[Where, object]]:
    row = 0
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TaskDataError(f"{path}:{start}: not valid {form.upper()} ({exc}).") from None
        if not any(cell.strip() for cell in cells):
            continue
        row += 1
        where = Where(path, start, row)
        if len(cells) != len(header):
            sep = "tab" if form == "tsv" else "comma"
            raise TaskDataError(f"{where}: {len(cells)} cells, but the header names "
                                f"{len(header)} columns (a {sep} inside a value needs "
                                "quotes).")
        yield where, {name: cell for name, cell in zip(header, cells) if cell.strip()}


# ---------------------------------------------------------------------------- Parquet, datasets

def _parquet_table(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TaskDataError(f"Cannot read {path} as Parquet: {exc}.") from None
    return Table(path, "parquet", tuple(table.column_names), _arrow_records(path, table, {}))


def dataset_dict_splits(path: Path) -> tuple[str, ...]:
    """The split names of a DatasetDict folder (its dataset_dict.json); () for anything else."""
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return ()
    return tuple(s for s in splits if isinstance(s, str)) if isinstance(splits, list) else ()


def _datasets_table(path: Path, split: str) -> Table:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskDataError(f"Cannot read {path} as a datasets folder (save_to_disk): "
                            f"{exc}.") from None
    if isinstance(data, datasets.DatasetDict):
        names = DATASET_SPLITS.get(split, (split,))
        found = next((n for n in names if n in data), None)
        if found is None:
            raise TaskDataError(f"{path} holds the splits {', '.join(data)}, none named "
                                f"{' or '.join(names)} for {split}: name the folder of the "
                                f"split to read ({path}/<split>) instead.")
        data, path = data[found], path / found
    labels = {name: feature.names for name, feature in data.features.items()
              if isinstance(feature, datasets.ClassLabel)}
    table = data.with_format("arrow")[:] if len(data) else data.data.table
    return Table(path, "datasets", tuple(data.column_names), _arrow_records(path, table, labels))


def _arrow_records(path: Path, table, labels: dict[str, list[str]]
                   ) -> Iterator[tuple[Where, object]]:
    row = 0
    for batch in table.to_batches(max_chunksize=ARROW_BATCH):
        for record in batch.to_pylist():
            row += 1
            yield Where(path, row=row), {k: _cell(v, labels.get(k)) for k, v in record.items()
                                         if v is not None and v != ""}


def _cell(value: object, names: list[str] | None) -> object:
    """A table cell as a row of text needs it (see the module docstring)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return names[value] if names and 0 <= value < len(names) else str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value
