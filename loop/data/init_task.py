"""A task from a team's data as it is: what `evalloop init DATA` decides and writes.

    plan = plan_task(Path("tickets.csv"), instruction="Classify the ticket.")
    plan.summary.lines()        # rows, duplicates, answer kind, labels, shared prompt, splits
    write_task(plan, Path("tickets"), force=False)   # task.toml (+ drawn splits, schema)

The answer kind and label set come from the shared answer model (evals/answers.py, the same
inference a task gets when it loads). Splits the data lacks are drawn from it: seeded,
stratified by label (a label task) or else by category, and every group of rows with the same
prompt (so every exact duplicate) on one side. A split the data has is referenced where it is,
with the team's columns named in [columns]; a drawn split is written beside the TOML as JSONL
with the same columns. `plan_task` only reads; `write_task` writes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from evals.answers import AnswerModel, infer_answers, normalize
from loop.core.cache import write_atomic
from loop.core.errors import EvalloopError, TaskDataError
from loop.core.paths import OutputPathError, check_output_dir, check_output_file
from loop.core.prompts import user_message
from loop.core.records import Example
from loop.core.settings import ColumnSettings
from loop.core.settings_load import json_schema
from loop.core.template import Template
from loop.data.readers import dataset_dict_splits, read_table
from loop.data.tasks import RowFormat, check_columns, drop_exact_duplicates, parse_rows

# the column names a team's data most often gives its inputs and answers, tried in order
INPUT_NAMES = ("input", "text", "question", "prompt", "query", "sentence", "utterance")
OUTPUT_NAMES = ("output", "label", "answer", "target", "completion", "response", "labels")
TEST_SHARE, DEV_SHARE = 0.2, 0.1  # of the rows, when the data has no test or dev split
MAX_TEST, MAX_DEV = 1000, 500  # rows: every cycle scores them, on a CPU too
SHOWN_LABELS = 12  # labels listed in the summary (all of them go in the TOML)
SCHEMA_FILE = "task.schema.json"


@dataclass(frozen=True)
class Split:
    """One split of the new task: the records it holds (`drawn` from the data, or `source`
    read where it lies) and its rows as the loader reads them."""

    name: str
    examples: tuple[Example, ...]
    records: tuple[dict, ...] = ()
    source: Path | None = None  # the file (or datasets folder) it is read from, if not drawn

    @property
    def drawn(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class Summary:
    """What init found, in figures (printed by `lines`)."""

    data: str
    rows: int
    duplicates: int  # rows repeating an earlier row exactly
    answers: AnswerModel
    label_counts: tuple[tuple[str, int], ...]  # (label, rows), most common first
    shared_prompt: float  # share of the prompt words that every row has (the fixed template)
    split_sizes: tuple[tuple[str, int], ...]
    drawn: tuple[str, ...]  # the splits drawn from the data
    stratified_by: str  # "label", "category" or "" (one stratum)
    seed: int

    def lines(self) -> list[str]:
        out = [f"{self.data}: {self.rows:,} rows, {self.duplicates:,} exact duplicates",
               self.answers.describe()]
        if self.label_counts:
            shown = ", ".join(f"{label} {n}" for label, n in self.label_counts[:SHOWN_LABELS])
            more = len(self.label_counts) - SHOWN_LABELS
            out.append(f"labels: {shown}" + (f" and {more} more" if more > 0 else ""))
        out.append(f"prompt text shared by all rows: {self.shared_prompt:.0%}")
        sizes = ", ".join(f"{name} {n:,}" for name, n in self.split_sizes)
        how = ""
        if self.drawn:
            by = f", stratified by {self.stratified_by}" if self.stratified_by else ""
            how = (f" ({', '.join(self.drawn)} drawn with seed {self.seed}{by}; rows with the "
                   "same prompt kept on one side)")
        out.append(f"splits: {sizes}{how}")
        return out


@dataclass(frozen=True)
class TaskPlan:
    name: str
    columns: dict[str, str]  # part -> the team's column, where it is not the part's own name
    fmt: RowFormat
    splits: tuple[Split, ...]
    summary: Summary
    model: str | None = None
    instruction: str | None = None


# ---------------------------------------------------------------------------- reading

def guess_columns(names: Sequence[str], input_col: str | None = None,
                  output_col: str | None = None) -> dict[str, str]:
    """part -> column for the parts whose column is not named like the part: the flags when
    given, else the first of INPUT_NAMES / OUTPUT_NAMES the data has. Chat data (a `messages`
    column) needs none."""
    have = list(names)
    missing = [c for c in (input_col, output_col) if c and c not in have]
    if missing:
        raise TaskDataError(f"No column {' or '.join(repr(c) for c in missing)} in the data; "
                            f"its columns are {', '.join(have) or 'none'}.")
    if "messages" in have and not (input_col or output_col):
        return {}
    chosen = {"input": input_col or next((c for c in INPUT_NAMES if c in have), None),
              "output": output_col or next((c for c in OUTPUT_NAMES if c in have), None)}
    if not chosen["output"] or not (chosen["input"] or "instruction" in have):
        what = "answer" if not chosen["output"] else "input"
        raise TaskDataError(f"Cannot tell which column holds the {what} (columns: "
                            f"{', '.join(have) or 'none'}): give --input-col and --output-col.")
    return {part: col for part, col in chosen.items() if col and col != part}


def column_names(path: Path, split: str) -> tuple[str, ...]:
    """A table's header, or the keys of a JSONL file's first rows."""
    table = read_table(path, split)
    if table.columns is not None:
        return table.columns
    first = [r for _, r in itertools.islice(table.rows, 100) if isinstance(r, dict)]
    return tuple(dict.fromkeys(k for r in first for k in r))


def _read(path: Path, split: str, fmt: RowFormat) -> Split:
    table = read_table(path, split)
    fmt = replace(fmt, noun=table.noun)
    check_columns(table, fmt)
    records = list(table.rows)
    examples = parse_rows(records, split, fmt)
    if not examples:
        raise TaskDataError(f"{path} has no rows for {split}.")
    used = {fmt.column(p) for p in ColumnSettings.model_fields} | {"metadata"}
    kept = tuple({k: v for k, v in r.items() if k in used} for _, r in records)
    return Split(split, tuple(examples), kept, path)


def plan_task(data: Path, test: Path | None = None, instruction: str | None = None,
              input_col: str | None = None, output_col: str | None = None,
              name: str | None = None, model: str | None = None, seed: int = 0) -> TaskPlan:
    """Read the data, infer its answers, draw the splits it lacks; nothing is written."""
    given = dataset_dict_splits(data) if data.is_dir() else ()
    columns = guess_columns(column_names(data, "train"), input_col, output_col)
    fmt = RowFormat(ColumnSettings(**columns), instruction=instruction)
    train = _read(data, "train", fmt)
    have = {"train": train}
    if test is not None:
        have["test"] = _read(test, "test", fmt)
    for split, wanted in (("dev", ("validation", "dev", "valid")), ("test", ("test",))):
        if split not in have and any(w in given for w in wanted):
            have[split] = _read(data, split, fmt)
    everything = [e for s in have.values() for e in s.examples]
    answers = infer_answers([e.output for e in everything],
                            categories=[e.category for e in everything])
    by = ("label" if answers.kind == "label" else
          "category" if len({e.category for e in everything}) > 1 else "")
    drawn = [s for s in ("test", "dev") if s not in have]
    splits = dict(have)
    if drawn:
        splits.update(draw_splits(train, drawn, by, seed))
    order = [s for s in ("train", "dev", "test") if s in splits]
    rows = [e for s in have.values() for e in s.examples]
    label_counts = Counter(normalize(e.output) for e in rows) if by == "label" else Counter()
    summary = Summary(
        data=str(data) + (f" + {test}" if test else ""), rows=len(rows),
        duplicates=len(rows) - len(drop_exact_duplicates(rows)), answers=answers,
        label_counts=tuple(sorted(label_counts.items(), key=lambda x: (-x[1], x[0]))),
        shared_prompt=shared_prompt_share([user_message(e) for e in rows]),
        split_sizes=tuple((s, len(splits[s].examples)) for s in order),
        drawn=tuple(s for s in order if s in drawn), stratified_by=by, seed=seed)
    return TaskPlan(name or data.stem.split(".")[0] or "task", columns, fmt,
                    tuple(splits[s] for s in order), summary, model, instruction)


# ---------------------------------------------------------------------------- pure parts

def shared_prompt_share(prompts: Sequence[str]) -> float:
    """The share of the prompts' words that belong to text every prompt has (word 4-grams
    present in all of them: the fixed instruction or template)."""
    if len(prompts) < 2:
        return 0.0
    template = Template.fit(prompts, share=1.0, min_docs=2)
    covered = total = 0
    for text in prompts:
        words, mask = template.template_mask(text)
        covered, total = covered + int(mask.sum()), total + len(words)
    return covered / total if total else 0.0


def draw_splits(source: Split, names: Sequence[str], stratify_by: str, seed: int
                ) -> dict[str, Split]:
    """`names` ("test", "dev") drawn from `source`, the rest its new train split. Seeded;
    each stratum (label or category) gives each split its share of rows; rows with the same
    prompt (instruction and input) move together, so exact duplicates stay on one side."""
    n = len(source.examples)
    wanted = {"test": min(MAX_TEST, round(TEST_SHARE * n)), "dev": min(MAX_DEV,
                                                                        round(DEV_SHARE * n))}
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, e in enumerate(source.examples):
        groups[(e.instruction, e.input)].append(i)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        strata[_stratum(source.examples[members[0]], stratify_by)].append(members)
    rng = random.Random(seed)
    taken: dict[str, list[int]] = {name: [] for name in names}
    for key in sorted(strata):
        members = strata[key]
        rng.shuffle(members)
        size = sum(len(m) for m in members)
        for name in names:
            quota = math.floor(wanted[name] * size / n + rng.random())  # unbiased rounding
            while members and len(taken[name]) < wanted[name] and quota > 0:
                group = members.pop()
                taken[name] += group
                quota -= len(group)
    for name in names:  # rounding left a split empty: it gets a group if two are left
        left = [ms for ms in strata.values() if ms]
        if not taken[name] and sum(map(len, left)) > 1:
            taken[name] += max(left, key=len).pop()
    out = {}
    used = {i for idx in taken.values() for i in idx}
    for name, idx in [*taken.items(), ("train", [i for i in range(n) if i not in used])]:
        idx = sorted(idx)
        out[name] = Split(name, tuple(replace(source.examples[i], split=name) for i in idx),
                          tuple(source.records[i] for i in idx))
    return out


def _stratum(example: Example, by: str) -> str:
    if by == "label":
        return normalize(example.output)
    return example.category if by == "category" else ""


def max_new_tokens(references: Sequence[str]) -> int:
    """Room for the longest reference: about two tokens a word, plus a margin, in 16..512."""
    longest = max((len(r.split()) for r in references), default=0)
    return max(16, min(512, 2 * longest + 8))


def task_toml(plan: TaskPlan, files: dict[str, str]) -> str:
    """The task TOML: every decision init made, each with a comment saying why."""
    s = plan.summary
    answers = s.answers
    lines = [f"#:schema ./{SCHEMA_FILE}",
             f"# Written by `evalloop init` from {s.data}: {s.rows:,} rows, "
             f"{s.duplicates:,} exact duplicates.",
             "# Every key is explained in the README (task format) and in the schema "
             "beside this file.", f"name = {_q(plan.name)}", ""]
    strata = f", stratified by {s.stratified_by}" if s.stratified_by else ""
    for split, path in files.items():
        sp = next(x for x in plan.splits if x.name == split)
        why = ("read where it lies" if not sp.drawn else f"drawn with seed {s.seed}{strata}"
               if split != "train" else "the rows not drawn for dev or test")
        lines.append(f"{split} = {_q(path)}  # {len(sp.examples):,} rows, {why}")
    if plan.instruction:
        lines += ["", "# the instruction of every row that has none (the model sees it, a "
                      "blank line, then the input)", f"instruction = {_q(plan.instruction)}"]
    lines += ["", f"# inferred from the references by evals/answers.py: "
                  f"{answers.describe().removeprefix('answers: ')}",
              "# (delete these lines to infer again when the task loads)",
              f"answer = {_q(answers.kind)}"]
    if answers.kind in ("label", "labels") and len(answers.labels) >= 2:
        lines.append("labels = [" + ", ".join(_q(x) for x in sorted(answers.labels)) + "]")
    if plan.columns:
        lines += ["", "[columns]  # which of your columns holds each part of a row"]
        lines += [f"{part} = {_q(col)}" for part, col in plan.columns.items()]
    refs = [e.output for sp in plan.splits for e in sp.examples]
    lines += ["", "[generation]",
              f"max_new_tokens = {max_new_tokens(refs)}  # about 2 tokens a word of the "
              "longest reference, plus a margin"]
    if plan.model:
        lines += ["", "[cycle]", f"base_model = {_q(plan.model)}  # the first champion"]
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string


# ---------------------------------------------------------------------------- writing

def write_task(plan: TaskPlan, out: Path, force: bool = False,
               protected: Sequence[Path] = ()) -> Path:
    """Write the TOML, the drawn splits (JSONL, the team's columns) and the schema into `out`;
    refuse to replace a file that exists unless `force`, and never replace the data itself.
    Returns the TOML's path."""
    check_output_dir(out, protected, flag="--out")
    sources = [sp.source for sp in plan.splits if sp.source is not None]
    targets = {sp.name: out / f"{sp.name}.jsonl" for sp in plan.splits if sp.drawn}
    toml, schema = out / "task.toml", out / SCHEMA_FILE
    for path in [toml, schema, *targets.values()]:
        check_output_file(path, [*protected, *sources], "--out")
    existing = [p for p in [toml, schema, *targets.values()] if p.exists()]
    if existing and not force:
        raise OutputPathError(f"{', '.join(str(p) for p in existing)} already exist"
                              f"{'s' if len(existing) == 1 else ''}; give --force to replace "
                              f"{'it' if len(existing) == 1 else 'them'}, or another --out.")
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for sp in plan.splits:
        if sp.drawn:
            write_atomic(targets[sp.name], "".join(
                json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in sp.records))
            files[sp.name] = targets[sp.name].name
        else:
            files[sp.name] = Path(os.path.relpath(sp.source.resolve(), out.resolve())).as_posix()
    write_atomic(schema, json.dumps(json_schema(), indent=2) + "\n")
    write_atomic(toml, task_toml(plan, files))  # last: its presence means complete
    return toml


def check_instruction(instruction: str | None) -> None:
    if instruction is not None and not instruction.strip():
        raise EvalloopError("--instruction is empty; give the instruction the model should "
                            "see, or leave the flag out.")

