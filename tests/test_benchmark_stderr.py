"""A benchmark group's stderr (MMLU under --limit) from its items: fresh, cached, hand-checked."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from evals import benchmark_stderr as gs
from evals.benchmarks import result_rows, sample_rows
from loop.evaluation.benchmarks import cached_results, save
from loop.store.db import Store, now

# mmlu -> (mmlu_stem -> mmlu_a, mmlu_b), mmlu_c; mmlu_a has one item, so lm-eval says "N/A"
ITEMS = {"mmlu_a": [1.0], "mmlu_b": [0.0, 1.0, 1.0], "mmlu_c": [0.0, 0.0]}
SUBTASKS = {"mmlu": ["mmlu_stem", "mmlu_c"], "mmlu_stem": ["mmlu_a", "mmlu_b"]}


def _context() -> dict:
    return dict(model_id="m1", model_name="tiny-random", limit=6, backend="evalloop",
                dtype="float32", lm_eval_version="x", seed=1, benchmark="mmlu",
                benchmark_version="2", shots=0, data_source="local", wall_s=1.0,
                created_at=now())


def _lm_eval_output(group_value=None) -> dict:
    """The shape of simple_evaluate's output for a nested group, with lm-eval's N/A stderrs."""
    def entry(items, stderr):
        return {"alias": "x", "acc,none": sum(items) / len(items), "acc_stderr,none": stderr,
                "sample_len": len(items)}

    stem = ITEMS["mmlu_a"] + ITEMS["mmlu_b"]
    every = stem + ITEMS["mmlu_c"]
    results = {"mmlu_a": entry(ITEMS["mmlu_a"], "N/A"), "mmlu_b": entry(ITEMS["mmlu_b"], 0.33),
               "mmlu_c": entry(ITEMS["mmlu_c"], 0.0)}
    groups = {"mmlu_stem": entry(stem, "N/A"), "mmlu": entry(every, "N/A")}
    if group_value is not None:
        groups["mmlu"]["acc,none"] = group_value
    samples = {task: [{"doc_id": i, "doc": {}, "target": "A", "arguments": [], "filter": "none",
                       "filtered_resps": [], "metrics": ["acc"], "acc": v}
                      for i, v in enumerate(values)] for task, values in ITEMS.items()}
    return {"results": {**results, **groups}, "groups": groups, "group_subtasks": SUBTASKS,
            "versions": {"mmlu": 2}, "higher_is_better": {t: {"acc": True} for t in results},
            "samples": samples}


def _by_task(rows):
    return {r.task: r for r in rows if r.metric == "acc"}


def test_group_stderr_is_the_stderr_of_its_item_mean():
    rows = _by_task(result_rows(_lm_eval_output(), _context()))
    # by hand: mmlu items 1,0,1,1,0,0 -> mean 1/2, sample variance 6 * 1/4 / 5 = 0.3,
    # stderr sqrt(0.3 / 6); mmlu_stem items 1,0,1,1 -> mean 3/4, variance 0.75 / 3 = 0.25
    assert rows["mmlu"].value == pytest.approx(0.5)
    assert rows["mmlu"].stderr == pytest.approx(math.sqrt(0.3 / 6))
    assert rows["mmlu_stem"].stderr == pytest.approx(math.sqrt(0.25 / 4))
    assert rows["mmlu_a"].stderr is None  # one item: undefined, and not a group
    assert rows["mmlu_b"].stderr == 0.33 and rows["mmlu_c"].stderr == 0.0  # lm-eval's kept


def test_a_group_aggregated_otherwise_gets_no_invented_stderr():
    # an unweighted mean of subtask means (1, 2/3, 0 -> 5/9) is not the item mean (1/2)
    rows = _by_task(result_rows(_lm_eval_output(group_value=5 / 9), _context()))
    assert rows["mmlu"].stderr is None
    assert rows["mmlu_stem"].stderr == pytest.approx(0.25)


def test_group_leaves_follow_nested_groups():
    assert gs.group_leaves(SUBTASKS) == {"mmlu": ["mmlu_a", "mmlu_b", "mmlu_c"],
                                         "mmlu_stem": ["mmlu_a", "mmlu_b"]}
    assert gs.group_leaves({"a": ["b"], "b": ["a", "c"]}) == {"a": ["c"], "b": ["c"]}  # no loop


def test_cached_rows_stored_without_a_group_stderr_get_one_from_stored_samples(tmp_path):
    out, context = _lm_eval_output(), _context()
    fresh = result_rows(out, context)
    stale = [replace(r, stderr=None) if r.task == "mmlu" else r for r in fresh]
    with Store(tmp_path / "ws") as store:
        save(store, stale, sample_rows(out, context))
        cached = _by_task(cached_results(store, "m1", "mmlu", "2", 0, 6, seed=1))
    assert cached["mmlu"].cached and cached["mmlu"].stderr == pytest.approx(math.sqrt(0.3 / 6))
    assert cached["mmlu_stem"].stderr == pytest.approx(0.25)  # stored as computed
