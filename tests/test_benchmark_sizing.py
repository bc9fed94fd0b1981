"""Sizing a cycle's benchmark items from a time budget: the pooled check's variance is smallest,
the budget holds, the counts are the same everywhere, and explicit counts still win."""

from __future__ import annotations

import math

import pytest

from evals.benchmark_sizing import (COST_S, cost, planned_pooled_mde, planned_seconds,
                                    size_items, spread)
from loop.core.settings import DEFAULT_BENCHMARK_TASKS, BenchmarksSettings
from loop.evaluation.benchmarks import cycle_items


def _variance(counts: dict[str, int]) -> float:
    return sum(spread(n) ** 2 / k for n, k in counts.items()) / len(counts) ** 2


def test_default_budget_plans_a_pooled_mde_under_three_points_within_three_minutes():
    counts = cycle_items(BenchmarksSettings())
    assert list(counts) == list(DEFAULT_BENCHMARK_TASKS)
    assert planned_seconds(counts) <= BenchmarksSettings().seconds <= 180
    assert planned_pooled_mde(counts) <= 0.03
    # cheap ARC gets more items than the long-context benchmarks; quiet mc2 fewer than mc1
    assert counts["arc_easy"] > counts["hellaswag"] and counts["arc_easy"] > counts["mmlu"]
    assert counts["truthfulqa_mc2"] < counts["truthfulqa_mc1"]


def test_the_split_is_proportional_to_spread_over_root_cost_and_beats_uniform():
    counts = size_items(DEFAULT_BENCHMARK_TASKS, 150)
    weight = {n: spread(n) / math.sqrt(cost(n)) for n in counts}
    scale = 150 / sum(weight[n] * cost(n) for n in counts)  # spends the whole budget
    assert all(0 <= scale * weight[n] - k < 1 for n, k in counts.items())  # floor rounding only
    uniform = math.floor(150 / sum(COST_S.values()))
    assert planned_seconds(dict.fromkeys(counts, uniform)) <= 150
    assert _variance(counts) < _variance(dict.fromkeys(counts, uniform))
    # the Lagrange bound (sum sd sqrt(cost))^2 / (B^2 seconds), the least any split reaches
    bound = sum(spread(n) * math.sqrt(cost(n)) for n in counts) ** 2 / 36 / 150
    assert bound <= _variance(counts) < bound * 1.01
    # moving 10 s of budget between any two benchmarks makes the pooled variance larger
    for a in counts:
        for b in counts:
            if a != b:
                moved = {**counts, a: counts[a] + round(10 / cost(a)),
                         b: counts[b] - round(10 / cost(b))}
                assert _variance(moved) > _variance(counts)


def test_counts_are_deterministic_and_grow_with_the_budget():
    assert size_items(DEFAULT_BENCHMARK_TASKS, 150) == size_items(list(DEFAULT_BENCHMARK_TASKS),
                                                                  150.0)
    small, large = size_items(["arc_easy", "mmlu"], 30), size_items(["arc_easy", "mmlu"], 300)
    assert all(large[n] > small[n] for n in small)
    assert size_items(["arc_easy"], 0.01) == {"arc_easy": 2}  # a paired interval needs two
    assert size_items(["some_lm_eval_task"], 19) == {"some_lm_eval_task": 100}  # costliest


def test_explicit_counts_win_and_the_rest_share_what_is_left():
    settings = BenchmarksSettings(items={"arc_easy": 900})
    counts = cycle_items(settings)
    assert counts["arc_easy"] == 900
    rest = size_items([n for n in DEFAULT_BENCHMARK_TASKS if n != "arc_easy"],
                      150 - 900 * cost("arc_easy"))
    assert {n: k for n, k in counts.items() if n != "arc_easy"} == rest


def test_an_explicit_limit_is_one_count_for_every_task_as_before():
    assert cycle_items(BenchmarksSettings(limit=40)) == dict.fromkeys(DEFAULT_BENCHMARK_TASKS, 40)
    both = cycle_items(BenchmarksSettings(limit=40, items={"mmlu": 57}, tasks=("arc_easy",
                                                                              "mmlu")))
    assert both == {"arc_easy": 40, "mmlu": 57}


def test_settings_reject_counts_of_tasks_not_run(tmp_path):
    from loop.core.errors import ConfigError
    from loop.core.settings_load import load_settings

    (tmp_path / "t.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    toml = tmp_path / "task.toml"
    toml.write_text('test = "t.jsonl"\n[benchmarks]\ntasks = ["arc_easy"]\n'
                    'items = {mmlu = 10, arc_easy = 0}\nseconds = 60\n')
    with pytest.raises(ConfigError) as err:
        load_settings(toml)
    assert "'mmlu' is not among the tasks" in str(err.value) and "items.arc_easy" in str(err.value)
    toml.write_text('test = "t.jsonl"\n[benchmarks]\nseconds = 60\nitems = {mmlu = 10}\n')
    settings = load_settings(toml).benchmarks
    assert (settings.seconds, settings.limit, settings.items) == (60.0, None, {"mmlu": 10})
