"""Which lm-eval tasks a benchmark run loads, where their data comes from, and which items it scores.

The tasks are lm-eval's own (prompts, metrics, versions). With a local data directory (laid out
like `shared/benchmarks`, see its README) each standard task gets a generated YAML that
`include:`s lm-eval's task file and overrides only where the data comes from:

    include: <lm_eval>/tasks/arc/arc_easy.yaml
    task: arc_easy
    dataset_path: json
    dataset_name: null
    dataset_kwargs: {data_files: {test: <dir>/arc_easy/test.jsonl}}
    training_split: null         # splits the local copy does not have
    validation_split: null

MMLU's 57 subject tasks all read the one all-subject file and keep their subject through
`process_docs` (`mmlu_docs_<subject>` below); its group files are included unchanged.

Subsets: `--limit N` scores a seeded sample of N documents per benchmark, the same for every
model. For a group (MMLU) the N documents are spread over its subtasks in proportion to their
size, each subtask getting at least one (lm-eval's own `--limit` would take the first N of each
of the 57 subjects, 57x the work and always the same leading items).
"""

from __future__ import annotations

import difflib
import functools
import random
from dataclasses import dataclass
from pathlib import Path

import lm_eval.tasks
import yaml
from lm_eval.tasks import TaskManager

from loop.core.errors import BenchmarkDataError, ConfigError

LM_EVAL_TASKS = Path(lm_eval.tasks.__file__).parent
SUBJECT_PREFIX = "mmlu_docs_"
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


@dataclass(frozen=True)
class StandardTask:
    folder: str  # lm-eval's folder holding the task's YAML(s)
    files: dict[str, str]  # split -> file relative to the benchmark data directory


STANDARD = {
    "arc_easy": StandardTask("arc", {"test": "arc_easy/test.jsonl"}),
    "arc_challenge": StandardTask("arc", {"test": "arc_challenge/test.jsonl"}),
    "hellaswag": StandardTask("hellaswag", {"validation": "hellaswag/validation.jsonl"}),
    "mmlu": StandardTask("mmlu/default", {"test": "mmlu/test.jsonl", "dev": "mmlu/dev.jsonl"}),
    "truthfulqa_mc1": StandardTask("truthfulqa",
                                   {"validation": "truthfulqa_mc/validation.jsonl"}),
    "truthfulqa_mc2": StandardTask("truthfulqa",
                                   {"validation": "truthfulqa_mc/validation.jsonl"}),
}
DEFAULT_TASKS = tuple(STANDARD)


def data_files(name: str, data_dir: Path) -> dict[str, Path]:
    """The local files a standard task reads; BenchmarkDataError names any that are missing."""
    files = {split: (data_dir / rel).resolve() for split, rel in STANDARD[name].files.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise BenchmarkDataError(
            f"Benchmark '{name}' has no local data: expected {' and '.join(missing)} (JSON lines "
            f"in the Hugging Face schema) under the benchmark data directory {data_dir}. Point "
            "--benchmark-data (or [benchmarks] data_dir) at a directory laid out like "
            "shared/benchmarks, or unset it to read the Hugging Face hub.")
    return files


# ---------------------------------------------------------------------------- local task YAMLs

def write_local_configs(names: list[str], data_dir: Path, out_dir: Path) -> None:
    """Write override YAMLs for the standard tasks among `names` into `out_dir`."""
    for name in dict.fromkeys(n for n in names if n in STANDARD):
        files = data_files(name, data_dir)
        # lm-eval's public TaskManager over the one folder (its index: name -> entry with
        # yaml_path and cfg); tasks and groups are told apart by its all_* lists
        folder = TaskManager(include_path=str(LM_EVAL_TASKS / STANDARD[name].folder),
                             include_defaults=False)
        index, groups = folder.task_index, set(folder.all_groups)
        entries = [index[name]] if name not in groups else [
            index[n] for n in index if n in groups or n in set(folder.all_subtasks)]
        for entry in entries:
            target = out_dir / name / f"{entry.name}.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.name in groups:  # group definitions need no change
                target.write_text(yaml.safe_dump({"include": str(entry.yaml_path)}))
                continue
            target.write_text(_override_yaml(entry, files, subject_filter=name == "mmlu"))


def _override_yaml(entry, files: dict[str, Path], subject_filter: bool) -> str:
    config = {"include": str(entry.yaml_path), "task": entry.name, "dataset_path": "json",
              "dataset_name": None,
              "dataset_kwargs": {"data_files": {s: str(p) for s, p in files.items()}}}
    for key in SPLIT_KEYS:  # a split the local copy lacks would fail at load: drop it
        split = entry.cfg.get(key)
        if split is not None and split not in files:
            config[key] = None
    text = yaml.safe_dump(config, sort_keys=False)
    if subject_filter:
        text += f"process_docs: !function {__name__}.{SUBJECT_PREFIX}{entry.cfg['dataset_name']}\n"
    return text


def filter_subject(dataset, subject: str):
    """MMLU rows of one subject, in file order (the order of cais/mmlu's per-subject splits)."""
    return dataset.filter(lambda doc: doc["subject"] == subject)


def __getattr__(name: str):
    # lm-eval resolves `process_docs: !function evals.benchmark_tasks.mmlu_docs_<subject>`
    # by attribute lookup; one generated filter per subject avoids 57 copies of the same code.
    if name.startswith(SUBJECT_PREFIX):
        return functools.partial(filter_subject, subject=name[len(SUBJECT_PREFIX):])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------- the task manager

def task_manager(names: list[str], data_dir: Path | None, work_dir: Path) -> TaskManager:
    """A TaskManager that knows `names`, indexing as little of lm-eval's tree as possible.

    Standard tasks need only their own folders (or the generated local YAMLs); any other name
    needs lm-eval's whole index (about 15 s to build on a small machine).
    """
    paths: list[Path] = []
    if data_dir is not None:
        write_local_configs(names, data_dir, work_dir)
        paths.append(work_dir)
    others = [n for n in names if n not in STANDARD]
    if data_dir is None:
        paths = sorted({LM_EVAL_TASKS / STANDARD[n].folder for n in names if n in STANDARD})
    manager = TaskManager(include_path=paths or None, include_defaults=bool(others))
    unknown = [n for n in others if n not in manager.all_tasks]
    if unknown:
        hints = "; ".join(
            f"'{n}'" + (f" (did you mean {', '.join(repr(m) for m in close)}?)"
                        if (close := difflib.get_close_matches(n, manager.all_tasks, 3)) else "")
            for n in unknown)
        raise ConfigError(f"Unknown benchmark task(s): {hints}. Standard tasks: "
                          f"{', '.join(STANDARD)}; any lm-eval task name is accepted.")
    return manager


def task_version(manager: TaskManager, name: str) -> str:
    """lm-eval's version of a task or group (for a tag: its members' versions)."""
    entry = manager.task_index[name]
    if name in manager.all_tags:
        return ",".join(f"{t}={task_version(manager, t)}" for t in sorted(entry.tags))
    version = ((entry.cfg or {}).get("metadata") or {}).get("version")
    return str(version) if version is not None else "unversioned"


def default_shots(manager: TaskManager, name: str) -> int:
    """The task's own few-shot count (lm-eval runs 0 when a task sets none)."""
    entry = manager.task_index[name]
    return int((entry.cfg or {}).get("num_fewshot") or 0) if name in manager.all_subtasks else 0


def load_tasks(manager: TaskManager, name: str, data_dir: Path | None) -> dict:
    """lm-eval's TaskDict for one benchmark; data problems become BenchmarkDataError."""
    try:
        return manager.load([name])
    except Exception as exc:  # datasets raises many types (offline, missing file, schema)
        where = (f"the hub (lm-eval's dataset_path for '{name}')" if data_dir is None
                 else f"{data_dir}")
        expected = (", ".join(str(Path("DIR") / f) for f in STANDARD[name].files.values())
                    if name in STANDARD else "no local layout known for this task")
        raise BenchmarkDataError(
            f"Benchmark '{name}' could not load its data from {where}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Offline, "
            f"pass --benchmark-data DIR with {expected}.") from None


# ---------------------------------------------------------------------------- seeded subsets

def seeded_subset(n_docs: int, k: int, seed: int, key: str) -> list[int] | None:
    """k sorted document indices, the same for every model; None means all documents."""
    if k >= n_docs:
        return None
    return sorted(random.Random(f"{seed}:{key}").sample(range(n_docs), k))


def allocate(sizes: dict[str, int], limit: int) -> dict[str, int]:
    """Split `limit` documents over subtasks: one each, the rest in proportion to size.

    Largest-remainder rounding makes the total exactly `limit` (capped by the sizes); a limit
    below the number of subtasks still gives every subtask one document.
    """
    rest = {name: size - 1 for name, size in sizes.items()}
    spare, total = max(limit - len(sizes), 0), sum(rest.values())
    quotas = {name: spare * size / total if total else 0.0 for name, size in rest.items()}
    extra = {name: min(int(q), rest[name]) for name, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda n: (int(quotas[n]) - quotas[n], n))
    for name in by_remainder[: spare - sum(extra.values())]:
        extra[name] += 1 if extra[name] < rest[name] else 0
    return {name: 1 + extra[name] for name in sizes}


def plan_samples(tasks: dict, limit: int | None, seed: int) -> dict[str, list[int]] | None:
    """lm-eval `samples=` for a benchmark's leaf tasks (None: score everything)."""
    if limit is None:
        return None
    sizes = {name: len(task.eval_docs) for name, task in tasks.items()}
    counts = {next(iter(sizes)): limit} if len(sizes) == 1 else allocate(sizes, limit)
    plan = {name: seeded_subset(sizes[name], counts[name], seed, name) for name in sizes}
    plan = {name: idx for name, idx in plan.items() if idx is not None}
    return plan or None
