"""Load a task's JSONL splits into `Example` records, with errors that name file, line and field.

Record contract (one JSON object per line): `instruction` (str, required), `output` (str, the
reference, required), `input` (str, optional), `category` (str, optional), `id` (str, optional:
a content hash of instruction, input and output otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loop.config import TaskConfig, load_task_config
from loop.errors import TaskDataError
from loop.records import Example, content_hash

REQUIRED_FIELDS = ("instruction", "output")
OPTIONAL_FIELDS = ("input", "category", "id")
MAX_RECORD_CHARS = 1_000_000


@dataclass(frozen=True)
class Task:
    config: TaskConfig
    splits: dict[str, tuple[Example, ...]]

    @property
    def name(self) -> str:
        return self.config.name

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


def read_jsonl(path: Path, split: str) -> list[Example]:
    """Parse one split file; every bad record raises TaskDataError naming file:line and field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskDataError(f"Cannot read {path}: {exc.strerror}.") from None
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
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
            raise TaskDataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
        examples.append(_to_example(record, where, split))
        if examples[-1].id in seen:
            raise TaskDataError(f"{where}: duplicate id '{examples[-1].id}' (first seen on line "
                                f"{seen[examples[-1].id]}).")
        seen[examples[-1].id] = lineno
    return examples


def _to_example(record: object, where: str, split: str) -> Example:
    if not isinstance(record, dict):
        raise TaskDataError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    for key in REQUIRED_FIELDS:
        if key not in record:
            raise TaskDataError(f"{where}: missing required field '{key}'.")
        if not isinstance(record[key], str):
            raise TaskDataError(f"{where}: field '{key}' must be a string, got "
                                f"{type(record[key]).__name__}.")
    for key in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise TaskDataError(f"{where}: field '{key}' must be a string, got "
                                f"{type(value).__name__}.")
    if not record["instruction"].strip():
        raise TaskDataError(f"{where}: field 'instruction' is empty.")
    instruction, output = record["instruction"], record["output"]
    input_text = record.get("input") or ""
    return Example(
        id=record.get("id") or Example.make_id(instruction, input_text, output),
        instruction=instruction,
        input=input_text,
        output=output,
        category=record.get("category") or "default",
        split=split,
    )


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
    """Load config and every split. The test split must exist and be non-empty."""
    config = load_task_config(path)
    splits: dict[str, list[Example]] = {"test": read_jsonl(config.test, "test")}
    if not splits["test"]:
        raise TaskDataError(f"The test split {config.test} of task '{config.name}' is empty: "
                            "it needs at least one JSON record.")
    if config.train:
        splits["train"] = read_jsonl(config.train, "train")
    if config.dev:
        splits["dev"] = read_jsonl(config.dev, "dev")
    elif splits.get("train"):
        splits["train"], splits["dev"] = split_off_dev(splits["train"], config.dev_fraction)
    return Task(config=config, splits={k: tuple(v) for k, v in splits.items()})
