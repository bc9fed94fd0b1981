"""Standard errors for benchmark groups (MMLU) that lm-eval leaves undefined.

lm-eval pools a group's stderr from its subtasks' stderrs and gives up ("N/A") when any subtask
has a single item, which a seeded `--limit` spread over MMLU's 57 subjects always produces: the
gate then read MMLU's forgetting noise as ±0.000 and an MMLU drop of two items decided promotion.
A size-weighted group's value is the mean over all its items, so its standard error is that of
the item mean, computed here from the per-item scores (lm-eval's logged samples, or the stored
`benchmark_samples`). It ignores the stratification by subject, which makes it slightly
conservative. Pure functions; `evals.benchmarks` applies them to fresh results,
`loop.evaluation.benchmarks` to cached ones.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import TypeVar

from lm_eval.api.metrics import mean_stderr

Row = TypeVar("Row")  # a BenchmarkResult (task, metric, value, stderr)


def group_leaves(group_subtasks: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each group's leaf tasks; groups nest (mmlu -> mmlu_stem -> mmlu_physics)."""

    def leaves(name: str, path: frozenset[str]) -> list[str]:
        kids = group_subtasks.get(name) or []
        if not kids:
            return [name]
        return [leaf for kid in kids if kid not in path for leaf in leaves(kid, path | {kid})]

    return {group: leaves(group, frozenset({group})) for group, kids in group_subtasks.items()
            if kids}


def item_scores(samples: dict[str, list[dict]]) -> dict[tuple[str, str], list[float]]:
    """(task, metric as result rows name it) -> per-item values, from lm-eval's logged samples."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for task, logged in samples.items():
        for sample in logged:
            filt = sample.get("filter", "none")
            for metric in sample.get("metrics", []):
                value = _number(sample.get(metric))
                if value is not None:
                    scores[(task, metric if filt == "none" else f"{metric},{filt}")].append(value)
    return dict(scores)


def stored_item_scores(rows: Iterable[dict]) -> dict[tuple[str, str], list[float]]:
    """The same from `benchmark_samples` rows (task, metrics JSON); their filter is not stored."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        metrics = row["metrics"]
        for metric, raw in (json.loads(metrics) if isinstance(metrics, str) else metrics or
                            {}).items():
            if (value := _number(raw)) is not None:
                scores[(row["task"], metric)].append(value)
    return dict(scores)


def fill_group_stderr(rows: list[Row], leaves: dict[str, list[str]],
                      scores: dict[tuple[str, str], list[float]]) -> list[Row]:
    """Group rows without a stderr get the standard error of the mean over their items.

    Filled only where the row's value is that item mean (lm-eval's size-weighted aggregation),
    so a group aggregated another way (unweighted mean of subtasks) is never given a wrong error.
    """
    filled = []
    for row in rows:
        items = [v for leaf in leaves.get(row.task, ()) for v in scores.get((leaf, row.metric), ())]
        if (row.stderr is None and row.value is not None and len(items) > 1
                and math.isclose(row.value, sum(items) / len(items), rel_tol=1e-9, abs_tol=1e-9)):
            row = replace(row, stderr=float(mean_stderr(items)))
        filled.append(row)
    return filled


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if hasattr(value, "item"):  # numpy scalar
        return _number(value.item())
    return None
