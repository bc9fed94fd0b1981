"""The cycle's pool plan (loop/targeted/plan.py) and the cycle data it builds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from loop.targeted.cycle_data import is_format_failure
from loop.targeted.plan import (TRAIN_SHARE, PoolFacts, forward_tokens_per_row, hard_rows,
                                plan_pool)


def facts(rows=1000, trained=False, failures=50, fmt=0, per_row=0.1):
    return PoolFacts(rows, trained, failures, fmt, per_row, "test")


def test_untrained_champion_trains_on_the_whole_pool():
    plan = plan_pool(facts(), budget_s=None, epochs=2.0)
    assert (plan.mode, plan.rows, plan.epochs) == ("whole_pool", 1000, 2.0)


def test_format_failures_majority_is_whole_pool_content_failures_focused():
    assert plan_pool(facts(trained=True, fmt=30), None, 2.0).mode == "whole_pool"
    focused = plan_pool(facts(trained=True, fmt=10), None, 2.0)
    assert focused.mode == "focused" and "20%" in focused.reason


def test_budget_cuts_epochs_then_rows():
    # 1000 rows x 0.1 s = 100 s an epoch; a 300 s budget gives training 150 s: 1.5 epochs
    plan = plan_pool(facts(), budget_s=300, epochs=2.0)
    assert plan.rows == 1000 and plan.epochs == 1.5
    assert plan.estimated_train_s <= 300 * TRAIN_SHARE
    # 100 s of training cannot see every row once: 500 rows, one epoch
    small = plan_pool(facts(), budget_s=100, epochs=2.0)
    assert (small.rows, small.epochs) == (500, 1.0)
    assert "500 of 1000 pool rows" in small.reason


def test_focused_weighted_rows_count_against_the_budget():
    # a whole-pool plan ignores extra rows (targeted rows there are pool rows, written once)
    assert plan_pool(facts(), None, 2.0, extra_rows=300).extra_rows == 0
    focused = plan_pool(facts(trained=True), None, 2.0, extra_rows=300)
    assert (focused.rows, focused.extra_rows, focused.epochs) == (1000, 300, 2.0)
    # 1300 rows x 0.1 s = 130 s an epoch; 150 s of training: one epoch (quarter steps down)
    cut = plan_pool(facts(trained=True), 300, 2.0, extra_rows=300)
    assert (cut.rows, cut.extra_rows, cut.epochs) == (1000, 300, 1.0)
    # 50 s of training holds 500 rows once: the weighted rows first, then pool rows
    small = plan_pool(facts(trained=True), 100, 2.0, extra_rows=300)
    assert (small.rows, small.extra_rows, small.epochs) == (200, 300, 1.0)
    assert small.estimated_train_s <= 100 * TRAIN_SHARE
    tiny = plan_pool(facts(trained=True), 20, 2.0, extra_rows=300)
    assert (tiny.rows, tiny.extra_rows) == (0, 100)


def test_forward_tokens_count_the_shared_prefix_once_per_chunk():
    # batch of 4 rows of 10 tokens behind a 100-token prefix, chunks of <= 130 tokens: the
    # first chunk holds 3 rows (100 + 30), the fourth row opens a chunk that runs the prefix again
    assert forward_tokens_per_row(100, [10] * 8, 4, 130, 32) == pytest.approx((200 + 40) / 4)
    # a budget that holds the whole batch: the prefix once per batch
    assert forward_tokens_per_row(100, [10] * 8, 4, 10**6, 32) == pytest.approx(10 + 100 / 4)
    # a prefix too short to share: every row runs it
    assert forward_tokens_per_row(20, [10, 30], 4, 10**6, 32) == pytest.approx(40.0)


def test_hard_rows_are_the_unsure_ones_least_known_first():
    worst = np.array([0.1, 2.0, 0.5, math.log(2) + 1e-3, 5.0])
    assert hard_rows(worst, 10).tolist() == [4, 1, 3]
    assert hard_rows(worst, 2).tolist() == [4, 1]
    assert hard_rows(worst).tolist() == [4, 1, 3]


@pytest.mark.parametrize("sigs, expected", [
    (("invalid_json",), True), (("label:a->unknown",), True),
    (("invalid_json", "label:a->unknown"), True), (("label:a->b",), False),
    (("missing_key:x",), False), ((), False), (("invalid_json", "wrong_answer"), False)])
def test_format_failure(sigs, expected):
    assert is_format_failure(sigs) is expected


def test_cycle_trains_on_the_whole_pool_then_focuses(tiny_task, workspace):
    """A first cycle's data is every curated pool row (plus targeted rows); the plan is in the
    stage result and the written JSONL holds what it says."""
    from loop.cycle.run import run_cycle
    from loop.store import cycles
    from loop.store.db import Store

    summary = run_cycle(tiny_task, workspace, progress=False)
    with Store(workspace) as store:
        data = cycles.stage_result(store, summary["cycle_id"], "targeted")
    plan = data["plan"]
    assert plan["mode"] == "whole_pool"
    rows = [json.loads(line) for line in open(data["dataset_path"], encoding="utf-8")]
    assert len(rows) == plan["targeted_rows"] + plan["pool_rows"]
    # the tiny task's pool holds 40 rows (some near-duplicates curation drops); targeted rows are
    # pool rows too, written once
    distinct = {(r["instruction"], r["input"], r["output"]) for r in rows}
    assert len(distinct) == len(rows) and 20 <= len(rows) <= 40
    assert not {r["input"] for r in rows} & {json.loads(line)["input"] for line in
                                             open(tiny_task.parent / "test.jsonl")}


# ---------------------------------------------------------------------------- recipe search

def test_recipe_trials_fit_the_budget_configured_rate_first():
    from loop.train.search import recipe_trials

    def rates(*args, **kw):
        return [p.learning_rate for p in recipe_trials(*args, **kw)]

    assert rates(1e-3, 100, None) == [1e-3, 2e-3, 5e-4]
    assert rates(1e-3, 100, 250) == [1e-3, 2e-3]
    assert rates(1e-3, 100, 50) == [1e-3]  # even one does not fit: the configured rate
    assert rates(1e-3, 100, None, enabled=False) == [1e-3]
    assert rates(1e-3, 100, None, n_dev=20) == [1e-3]  # too few dev items to choose by
    assert {p.start for p in recipe_trials(1e-3, 100, None)} == {"base"}  # nothing to continue


def test_a_trained_champion_is_continued_then_retrained_from_the_base():
    from loop.train.search import TrialPlan, recipe_trials

    assert recipe_trials(1e-3, 100, 250, champion_trained=True) == [
        TrialPlan(1e-3, "champion"), TrialPlan(1e-3, "base")]
    assert recipe_trials(1e-3, 100, 150, champion_trained=True) == [TrialPlan(1e-3, "champion")]
    assert [p.start for p in recipe_trials(1e-3, 100, None, champion_trained=True)] == [
        "champion", "base", "champion", "champion"]


def test_a_cycle_keeps_the_retrained_trial_when_it_beats_continuing_on_dev(tmp_path, monkeypatch):
    """The train stage's search on a trained champion: one run continues from its adapter, one
    retrains from the base on the same data; dev decides which is the candidate."""
    from types import SimpleNamespace

    from conftest import classification_records, write_task

    from loop.cycle import run
    from loop.data.tasks import load_task
    from loop.models.loading import parse_model_name
    from loop.train import sft

    def adapter(name):
        path = tmp_path / name
        path.mkdir()
        (path / "adapter_config.json").write_text("{}")
        return path

    task = load_task(write_task(tmp_path / "task", {"train": classification_records(40),
                                                    "dev": classification_records(40, 300),
                                                    "test": classification_records(8, 500)}))
    champion = parse_model_name(f"tiny-random+{adapter('champion')}")
    started, from_base = [], set()

    def train(store, task, workspace, model, data_path, dataset_hash, config, progress):
        started.append(model)
        out = adapter(f"run{len(started)}")
        if model.adapter is None:
            from_base.add(out.resolve())
        return SimpleNamespace(adapter_dir=str(out), train_id=f"t{len(started)}",
                               best_eval_loss=0.5, elapsed_s=1.0)

    def dev_run(store, task, model, split, progress):
        return SimpleNamespace(pass_rate=0.6 if model.adapter in from_base else 0.4)

    monkeypatch.setattr(sft, "train_for_task", train)
    monkeypatch.setattr(run, "evaluate", dev_run)
    plan = {"targeted_rows": 10, "pool_rows": 30, "epochs": 1.0, "seconds_per_row_epoch": 1.0,
            "budget_s": 100.0}  # 40 s a run: two fit
    ctx = SimpleNamespace(results=SimpleNamespace(targeted=SimpleNamespace(
        plan=plan, dataset_path="data.jsonl", manifest_hash="h")), task=task,
        settings=task.settings, store=None, workspace=tmp_path, progress=False)
    result, trials = run._sft_search(ctx, task.settings.training, champion)
    assert [(m.base, m.adapter) for m in started] == [(champion.base, champion.adapter),
                                                      (champion.base, None)]
    assert result.train_id == "t2" and trials[0].start == "base"
    assert [t.start for t in trials] == ["base", "champion"]


def test_pick_best_dev_pass_rate_then_loss_then_order():
    from loop.train.search import Trial, pick

    def t(rate, passed, loss):
        return Trial(rate, f"id{rate}", f"m{rate}", passed, loss, 1.0)

    assert pick([t(1, 0.8, 0.2), t(2, 0.9, 0.3)]).learning_rate == 2
    assert pick([t(1, 0.9, 0.2), t(2, 0.9, 0.1)]).learning_rate == 2
    assert pick([t(1, 0.9, None), t(2, 0.9, None)]).learning_rate == 1


def test_pool_rows_drop_held_out_questions_keep_near_duplicates(tmp_path):
    from conftest import write_task

    from loop.data.tasks import load_task
    from loop.targeted.cycle_data import pool_rows

    row = {"instruction": "Label it.", "output": "a"}
    path = write_task(tmp_path, {
        "train": [{**row, "input": "same as test"}, {**row, "input": "Same  as TEST "},
                  {**row, "input": "hello there"}, {**row, "input": "hello there!"},
                  {**row, "input": "hello there", "output": "b"}],
        "dev": [{**row, "input": "a dev item"}],
        "test": [{**row, "input": "same as test", "output": "z"}]})
    task = load_task(path)
    rows = pool_rows(task, seed=0)
    assert sorted((e.input, e.output) for e in rows) == [
        ("hello there", "a"), ("hello there", "b"), ("hello there!", "a")]
    assert [e.id for e in rows] == [e.id for e in pool_rows(task, seed=0)]


def test_written_data_whole_pool_once_focused_weighted_twice(tmp_path):
    """A whole-pool cycle writes a targeted row that is also a pool row once; a focused cycle
    writes it again beside the pool, and its unsure rows twice (hard rows, then the pool)."""
    from conftest import write_task

    from loop.data.tasks import load_task
    from loop.targeted.cycle_data import _write, pool_rows
    from loop.targeted.inputs import FailureSet

    row = {"instruction": "Label it.", "output": "a"}
    path = write_task(tmp_path, {
        "train": [{**row, "input": f"message {i}"} for i in range(6)],
        "dev": [{**row, "input": "a dev item"}], "test": [{**row, "input": "a test item"}]})
    task = load_task(path)
    pool = pool_rows(task, seed=0)
    targeted, hard = pool[:2], pool[2:3]

    def written(mode, chosen):
        plan = plan_pool(facts(rows=len(pool), trained=mode == "focused"), None, 1.0,
                         extra_rows=len(targeted) + len(hard))
        assert plan.mode == mode
        out = _write(task, None, targeted, chosen, len(hard) if mode == "focused" else 0, plan,
                     f"b-{mode}", tmp_path / "data", FailureSet("run", "", ()), True)
        lines = open(out.dataset_path, encoding="utf-8").read().splitlines()
        return [json.loads(line)["input"] for line in lines], out.plan

    inputs, plan = written("whole_pool", pool)
    assert sorted(inputs) == sorted(e.input for e in pool)  # each row once
    assert plan["pool_rows"] == 4 and plan["targeted_rows"] == 2
    inputs, plan = written("focused", hard + pool)
    assert len(inputs) == 2 + 1 + 6
    assert {e.input: inputs.count(e.input) for e in pool} == {
        pool[0].input: 2, pool[1].input: 2, pool[2].input: 2, pool[3].input: 1,
        pool[4].input: 1, pool[5].input: 1}
    assert (plan["hard_rows"], plan["replay_rows"], plan["pool_rows"]) == (1, 6, 7)


def test_plan_rate_is_a_token_estimate_set_by_tokens_per_s(tmp_path):
    """The plan never reads earlier runs' wall time (it moves with the machine's load, and the
    same seeds would train different data): its rate is the token estimate at
    `[cycle] tokens_per_s`, or the device's default."""
    from conftest import classification_records, write_task

    from loop.data.tasks import load_task
    from loop.targeted.cycle_data import DEFAULT_TOKENS_PER_S, pool_rows, seconds_per_row_epoch

    splits = {"train": classification_records(12, offset=100),
              "dev": classification_records(4, offset=200), "test": classification_records(4)}
    rates = {}
    for name, extra in (("default", ""), ("slow", "tokens_per_s = 100\n"),
                        ("fast", "tokens_per_s = 200\n")):
        task = load_task(write_task(tmp_path / name, splits,
                                    f'[cycle]\nbase_model = "tiny-random"\n{extra}'))
        rates[name] = seconds_per_row_epoch(task, pool_rows(task, seed=0))
    assert rates["slow"][0] == pytest.approx(2 * rates["fast"][0])
    assert "at 100 tokens/s ([cycle] tokens_per_s)" in rates["slow"][1]
    assert rates["default"][0] == pytest.approx(rates["fast"][0] * 200 / DEFAULT_TOKENS_PER_S["cpu"])
    assert "(cpu)" in rates["default"][1]


def test_dev_generation_estimate_counts_prompts_and_each_batchs_longest_answer(tmp_path):
    """A recipe trial is scored by generating dev: its estimate grows with the dev items, with
    longer answers (decode steps of each batch's longest), is capped by max_new_tokens, and
    moves with `[cycle] tokens_per_s` as the training estimate does."""
    from conftest import classification_records, write_task

    from loop.data.tasks import load_task
    from loop.targeted.cycle_data import seconds_per_dev_eval

    def task(name, dev, extra=""):
        splits = {"train": classification_records(8, offset=100), "dev": dev,
                  "test": classification_records(4)}
        return load_task(write_task(tmp_path / name, splits,
                                    f'[cycle]\nbase_model = "tiny-random"\n{extra}'))

    short = classification_records(8, offset=200)
    long = [{**r, "output": r["output"] + " and a much longer answer " * 4} for r in short]
    base = task("base", short)
    s8, how = seconds_per_dev_eval(base, base.split("dev"))
    s4, _ = seconds_per_dev_eval(base, base.split("dev")[:4])
    assert 0 < s4 < s8 and "decode steps for 8 items" in how
    longer = task("long", long)
    s_long = seconds_per_dev_eval(longer, longer.split("dev"))[0]
    assert s_long > s8
    capped = task("capped", long, "[generation]\nmax_new_tokens = 2\n")
    assert seconds_per_dev_eval(capped, capped.split("dev"))[0] < s_long
    small_batches = task("batch", short, "[generation]\nbatch_size = 2\n")
    assert seconds_per_dev_eval(small_batches, small_batches.split("dev"))[0] > s8  # 4 batches
    slow = task("slow", short, "tokens_per_s = 10\n")
    fast = task("fast", short, "tokens_per_s = 20\n")
    assert seconds_per_dev_eval(slow, slow.split("dev"))[0] == pytest.approx(
        2 * seconds_per_dev_eval(fast, fast.split("dev"))[0])
    assert seconds_per_dev_eval(base, ())[0] == 0.0


def test_search_budget_counts_each_trials_dev_generation(tmp_path, monkeypatch):
    """Two 40 s trainings fit a 100 s budget, but not with 15 s of dev generation each: one
    trial runs (and is not scored on dev, there being nothing to choose between)."""
    from types import SimpleNamespace

    from conftest import classification_records, write_task

    from loop.cycle import run
    from loop.data.tasks import load_task
    from loop.models.loading import parse_model_name
    from loop.train import sft

    task = load_task(write_task(tmp_path, {"train": classification_records(8, offset=100),
                                           "dev": classification_records(48, offset=200),
                                           "test": classification_records(4)},
                                '[cycle]\nbase_model = "tiny-random"\n'))
    started = []

    def train(store, task, workspace, model, data_path, dataset_hash, config, progress):
        started.append(model)
        out = tmp_path / f"run{len(started)}"
        out.mkdir()
        (out / "adapter_config.json").write_text("{}")
        return SimpleNamespace(adapter_dir=str(out), train_id=f"t{len(started)}",
                               best_eval_loss=0.5, elapsed_s=1.0)

    monkeypatch.setattr(sft, "train_for_task", train)
    monkeypatch.setattr(run, "evaluate", lambda *a, **k: pytest.fail("one trial needs no dev"))
    plan = {"targeted_rows": 10, "pool_rows": 30, "epochs": 1.0, "seconds_per_row_epoch": 1.0,
            "budget_s": 100.0, "dev_eval_s": 15.0}
    ctx = SimpleNamespace(results=SimpleNamespace(targeted=SimpleNamespace(
        plan=plan, dataset_path="data.jsonl", manifest_hash="h")), task=task,
        settings=task.settings, store=None, workspace=tmp_path, progress=False)
    result, trials = run._sft_search(ctx, task.settings.training, parse_model_name("tiny-random"))
    assert len(started) == 1 and len(trials) == 1 and result.train_id == "t1"
