"""Load a task's splits into `Example` records, with errors that name file, line or row, and
field or column. loop/data/readers.py reads each file form (JSONL, CSV/TSV, Parquet, a
`datasets` folder); this module says what a record means.

Which column holds each part comes from the task's [columns] (default: the part's own name).
Two row shapes, decided per row:

- `{"instruction"?, "output", "input"?, "category"?, "id"?}`: `output` (the reference) is a
  required string. A row without an instruction takes the task's `instruction`; without either,
  its input alone is what the model is asked.
- OpenAI-style chat `{"messages": [...], "id"?, "category"?, "metadata"?: {"id", "category"}}`:
  the last message is the assistant's reply (the reference), the one before it the user turn
  (the instruction). System messages before them are prepended to the instruction with a blank
  line between, except one equal to the task's `system_prompt` (already sent as the system turn).
  Earlier user/assistant turns are rejected: multi-turn history is not supported yet, and folding
  it into one instruction would train a prompt the model never sees at inference. In a table,
  the messages cell may hold the list as JSON text.

Ids: an explicit `id`, else a content hash of instruction, input and output. Real data repeats
rows (short replies like "yes"), so an exact repeat (same instruction, input, output, category)
is not an error: the 2nd, 3rd... copy gets an occurrence suffix (`<id>.2`), so the first copy keeps
its id and stores written before stay valid. In dev and test every row stays its own item; the
train pool drops exact repeats before the dev split is drawn from it, so dev and pool never share
an identical row. One explicit id on two rows with different content stays an error.
`Task.report.line()` says what loading did, in one line (loop/data/load_report.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from evals.answers import AnswerModel, infer_answers
from evals.suites import CHECKS  # the suite's check names live with the scorers
from loop.core.errors import TaskDataError
from loop.core.prompts import user_message
from loop.core.records import Example, content_hash
from loop.core.settings import ColumnSettings, TaskSettings
from loop.core.settings_load import load_settings
from loop.core.template import Template
from loop.data.load_report import LoadReport, SplitReport
from loop.data.readers import Table, Where, read_table

REQUIRED_FIELDS = ("instruction", "output")
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Task:
    settings: TaskSettings  # the TOML, validated in full when the task loaded
    splits: dict[str, tuple[Example, ...]]
    report: LoadReport | None = None
    answers: AnswerModel = AnswerModel()  # what its answers are, decided once (evals.answers)

    @property
    def name(self) -> str:
        return self.settings.name

    def split(self, name: str) -> tuple[Example, ...]:
        examples = self.splits.get(name, ())
        if not examples:
            hint = {
                "dev": "give a 'dev' file or a 'train' file to split one off",
                "train": "give a 'train' file in the task TOML",
            }.get(name, "check the file")
            raise TaskDataError(f"Task '{self.name}' has no {name} examples: {hint}.")
        return examples

    @property
    def data_hash(self) -> str:
        return content_hash([[e.id for e in self.splits.get(s, ())] for s in sorted(self.splits)])

    @cached_property
    def template(self) -> Template:
        """The text every question shares, fitted once on every item of the task (train, dev,
        test) so that the same text counts as template in every split and stage."""
        return Template.fit([user_message(e) for split in self.splits.values() for e in split])

    def varying_part(self) -> Callable[[str], str]:
        """question -> its varying part (`template`); memoised for the life of the returned
        function (one stage)."""
        template = self.template
        memo: dict[str, str] = {}

        def vary(text: str) -> str:
            if text not in memo:
                memo[text] = template.varying(text)
            return memo[text]

        return vary


@dataclass(frozen=True)
class _Row:
    """One parsed record before ids are assigned (ids depend on the rows before it)."""

    where: Where
    id: str | None  # explicit id, if the row gave one
    instruction: str
    input: str
    output: str
    category: str

    @property
    def content(self) -> tuple[str, str, str, str]:
        return self.instruction, self.input, self.output, self.category


# ---------------------------------------------------------------------------- reading files

@dataclass(frozen=True)
class RowFormat:
    """How a file's records become rows: which column holds each part (the task's [columns]),
    what a key is called in messages ("field" in JSONL, "column" in tables), the task-level
    `instruction` for rows without one, and the `system_prompt` chat rows may repeat."""

    columns: ColumnSettings = ColumnSettings()
    noun: str = "field"
    instruction: str | None = None
    system_prompt: str | None = None

    @classmethod
    def of(cls, settings: TaskSettings) -> RowFormat:
        return cls(settings.columns, "field", settings.instruction, settings.system_prompt)

    def column(self, part: str) -> str:
        return getattr(self.columns, part)

    def name(self, part: str, suffix: str = "") -> str:
        """`field 'output'`, `column 'label' (the output)`, `field 'messages[0].role'`."""
        column = self.column(part)
        own = f" (the {part})" if column != part and not suffix else ""
        return f"{self.noun} '{column}{suffix}'{own}"


def read_split(path: Path, split: str, fmt: RowFormat = RowFormat()) -> list[Example]:
    """Parse one split (any form loop/data/readers.py reads), one Example per row; a bad
    record raises TaskDataError naming file, line or row, and field or column."""
    table = read_table(path, split)
    fmt = replace(fmt, noun=table.noun)
    check_columns(table, fmt)
    return parse_rows(table.rows, split, fmt)


def parse_rows(records: Iterable[tuple[Where, object]], split: str, fmt: RowFormat
               ) -> list[Example]:
    """One Example per record, in order (ids: see the module docstring)."""
    return _with_ids([_parse_row(record, where, fmt) for where, record in records], split)


def check_columns(table: Table, fmt: RowFormat) -> None:
    """A table's header holds what its rows need: the output and the input or instruction (or
    chat messages), and every optional part the task's [columns] names."""
    if table.columns is None:
        return
    have = set(table.columns)
    if fmt.column("messages") in have:
        return
    missing = [fmt.name("output")] if fmt.column("output") not in have else []
    if fmt.column("input") not in have and fmt.column("instruction") not in have:
        missing.append(f"{fmt.name('input')} or {fmt.name('instruction')}")
    missing += [fmt.name(part) for part in ("category", "id")
                if fmt.column(part) != part and fmt.column(part) not in have]
    if missing:
        raise TaskDataError(f"{table.path}: no {' and no '.join(missing)}; the file's columns "
                            f"are {', '.join(table.columns) or 'none'}. Name yours in the task "
                            "TOML's [columns] table (e.g. input = \"text\", output = "
                            "\"label\").")


def _with_ids(rows: list[_Row], split: str) -> list[Example]:
    """Explicit id, else content hash; a repeat gets the first free `<id>.<occurrence>`."""
    first: dict[str, _Row] = {}
    for row in rows:
        if row.id is not None and first.setdefault(row.id, row).content != row.content:
            raise TaskDataError(f"{row.where}: duplicate id '{row.id}' with different content "
                                f"(first seen on {first[row.id].where.position}).")
    used: set[str] = set()
    examples = []
    for row in rows:
        base = row.id or Example.make_id(row.instruction, row.input, row.output)
        new_id, occurrence = base, 1
        # an explicit id is reserved for its own first row, even when that row comes later
        while new_id in used or (new_id in first and new_id != row.id):
            occurrence += 1
            new_id = f"{base}.{occurrence}"
        used.add(new_id)
        examples.append(Example(new_id, row.instruction, row.output, row.input, row.category,
                                split))
    return examples


# ---------------------------------------------------------------------------- row shapes

def _parse_row(record: object, where: Where, fmt: RowFormat) -> _Row:
    if not isinstance(record, dict):
        raise TaskDataError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    if fmt.column("messages") in record:
        return _chat_row(record, where, fmt)
    output = record.get(fmt.column("output"))
    if output is None and fmt.column("output") not in record:
        raise TaskDataError(f"{where}: " + (
            f"{fmt.name('output')} is empty (a blank reference would let an empty answer "
            "pass)." if fmt.noun == "column" else
            f"missing required {fmt.name('output')} (or give the row as chat: a "
            f"'{fmt.column('messages')}' list)."))
    for part in ("instruction", "output", "input", "category", "id"):
        _check_str(record.get(fmt.column(part)), where, fmt, part,
                   required=fmt.column(part) in record and part in REQUIRED_FIELDS)
    if not output.strip():
        raise TaskDataError(f"{where}: {fmt.name('output')} is empty (a blank reference would "
                            "let an empty answer pass).")
    instruction, text = _instruction(record, where, fmt)
    return _Row(where, record.get(fmt.column("id")) or None, instruction, text, output,
                record.get(fmt.column("category")) or "default")


def _instruction(record: dict, where: Where, fmt: RowFormat) -> tuple[str, str]:
    """(instruction, input): the row's own instruction, else the task's, else the input alone
    is what the model is asked."""
    own, text = record.get(fmt.column("instruction")), record.get(fmt.column("input")) or ""
    if own is not None and own.strip():
        return own, text
    if fmt.instruction:
        return fmt.instruction, text
    if own is None and text.strip():
        return text, ""
    if own is None:
        raise TaskDataError(f"{where}: missing required {fmt.name('instruction')} (give "
                            f"{fmt.name('input')} or `instruction` in the task TOML, or the row "
                            f"as chat: a '{fmt.column('messages')}' list).")
    raise TaskDataError(f"{where}: {fmt.name('instruction')} is empty (give `instruction` in "
                        "the task TOML for rows without one).")


def _chat_row(record: dict, where: Where, fmt: RowFormat) -> _Row:
    clash = [fmt.column(k) for k in ("instruction", "input", "output")
             if fmt.column(k) in record]
    if clash:
        raise TaskDataError(f"{where}: {fmt.noun} '{clash[0]}' next to "
                            f"'{fmt.column('messages')}': give a row either as "
                            "instruction/output or as chat messages, not both.")
    messages = record[fmt.column("messages")]
    if isinstance(messages, str) and fmt.noun == "column":  # a cell holds the list as JSON
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{where}: {fmt.name('messages')} is not valid JSON "
                                f"({exc.msg} at column {exc.colno}).") from None
    if not isinstance(messages, list) or not messages:
        raise TaskDataError(f"{where}: {fmt.name('messages')} must be a non-empty list of "
                            "{\"role\", \"content\"} objects.")
    for i, message in enumerate(messages):
        at = fmt.name("messages", f"[{i}]")
        if not isinstance(message, dict):
            raise TaskDataError(f"{where}: {at} must be an object with 'role' and 'content', "
                                f"got {type(message).__name__}.")
        if message.get("role") not in CHAT_ROLES:
            raise TaskDataError(f"{where}: {fmt.name('messages', f'[{i}].role')} must be one "
                                f"of {', '.join(CHAT_ROLES)}, got {message.get('role')!r}.")
        if not isinstance(message.get("content"), str):
            raise TaskDataError(f"{where}: {fmt.name('messages', f'[{i}].content')} must be a "
                                f"string, got {type(message.get('content')).__name__}.")
    roles = [m["role"] for m in messages]
    last = len(messages) - 1
    if roles[-1] != "assistant":
        raise TaskDataError(f"{where}: {fmt.name('messages', f'[{last}]')} must be the "
                            f"assistant's reply (the reference), got role '{roles[-1]}'.")
    if last < 1 or roles[-2] != "user":
        raise TaskDataError(f"{where}: {fmt.name('messages', f'[{last - 1}]')} must be the "
                            "user turn the reply answers, got "
                            f"{repr(roles[-2]) if last else 'nothing'}.")
    history = [i for i, role in enumerate(roles[:-2]) if role != "system"]
    if history:
        raise TaskDataError(f"{where}: {fmt.name('messages', f'[{history[0]}]')} is an "
                            f"earlier {roles[history[0]]} turn: multi-turn history is not "
                            "supported yet; give system messages, one user turn and the "
                            "assistant reply.")
    user = messages[-2]["content"]
    if not user.strip():
        raise TaskDataError(f"{where}: {fmt.name('messages', f'[{last - 1}].content')} is "
                            "empty.")
    if not messages[-1]["content"].strip():
        raise TaskDataError(f"{where}: {fmt.name('messages', f'[{last}].content')} (the "
                            "reference) is empty (a blank reference would let an empty answer "
                            "pass).")
    system = [m["content"].strip() for m in messages[:-2]]
    system = [s for s in system if s and s != (fmt.system_prompt or "").strip()]
    meta = record.get("metadata", {})
    if not isinstance(meta, dict):
        raise TaskDataError(f"{where}: {fmt.noun} 'metadata' must be an object, got "
                            f"{type(meta).__name__}.")
    extra = {}
    for key in ("id", "category"):
        top, nested = record.get(fmt.column(key)), meta.get(key)
        _check_str(top, where, fmt, key)
        if nested is not None and not isinstance(nested, str):
            raise TaskDataError(f"{where}: {fmt.noun} 'metadata.{key}' must be a string, got "
                                f"{type(nested).__name__}.")
        extra[key] = top or nested or None
    return _Row(where, extra["id"], "\n\n".join([*system, user]), "", messages[-1]["content"],
                extra["category"] or "default")


def _check_str(value: object, where: Where, fmt: RowFormat, part: str,
               required: bool = False) -> None:
    if (value is not None or required) and not isinstance(value, str):
        raise TaskDataError(f"{where}: {fmt.name(part)} must be a string, got "
                            f"{type(value).__name__}.")


# ---------------------------------------------------------------------------- splits

def drop_exact_duplicates(examples: list[Example]) -> list[Example]:
    """The first of each exact repeat (same instruction, input, output, category), in order."""
    seen: set[tuple[str, str, str, str]] = set()
    kept = []
    for e in examples:
        if (key := (e.instruction, e.input, e.output, e.category)) not in seen:
            seen.add(key)
            kept.append(e)
    return kept


def split_off_dev(train: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """Deterministic dev split: the `fraction` of train examples with the smallest id hash."""
    if len(train) < 2:
        return train, []
    ranked = sorted(train, key=lambda e: content_hash("dev-split", e.id))
    n_dev = max(1, round(len(train) * fraction))
    dev_ids = {e.id for e in ranked[:n_dev]}
    keep = [e for e in train if e.id not in dev_ids]
    dev = [Example(e.id, e.instruction, e.output, e.input, e.category, "dev")
           for e in train if e.id in dev_ids]
    return keep, dev


def load_task(path: str | Path) -> Task:
    """Validate the task's settings (every problem in one ConfigError, before any data or model
    is read), then load every split. The test split must exist and be non-empty."""
    settings = load_settings(path, checks=CHECKS)
    fmt = RowFormat.of(settings)
    read = {name: read_split(file, name, fmt)
            for name, file in (("train", settings.train), ("dev", settings.dev),
                               ("test", settings.test)) if file}
    if not read["test"]:
        raise TaskDataError(f"The test split {settings.test} of task '{settings.name}' is empty: "
                            "it needs at least one row.")
    splits = dict(read)
    reports = {name: SplitReport(name, len(rows), len(rows) - len(drop_exact_duplicates(rows)))
               for name, rows in read.items()}
    if "train" in read:
        splits["train"] = drop_exact_duplicates(read["train"])
        reports["train"] = SplitReport("train", len(read["train"]), reports["train"].repeated,
                                       dropped=len(read["train"]) - len(splits["train"]))
    if "dev" not in read and splits.get("train"):
        splits["train"], splits["dev"] = split_off_dev(splits["train"], settings.dev_fraction)
        reports["dev"] = SplitReport("dev", len(splits["dev"]), drawn_from="train")
    order = [name for name in ("train", "dev", "test") if name in reports]
    rows = [e for name in order for e in splits.get(name, ())]
    answers = infer_answers([e.output for e in rows], settings.answer, settings.labels,
                            [e.category for e in rows])
    return Task(settings=settings, splits={k: tuple(v) for k, v in splits.items()},
                report=LoadReport(settings.name, tuple(reports[name] for name in order),
                                  answers.describe()),
                answers=answers)
