"""Rubric checks: a judge grades open answers against criteria; threshold, unparseable replies,
validation, the endpoint judge, and the reasoning stored with the item's scores."""

from __future__ import annotations

import json

import pytest
from conftest import ChatHandler, classification_records, write_task

from evals.rubric import UNPARSEABLE, Rubric, grade, parse_score, rubric_prompt
from evals.rules import CheckInput
from evals.suites import DEFAULT_SUITE, Suite, SuiteCheck, load_suite, score_suite
from loop.cli import main
from loop.core.errors import ConfigError
from loop.data.tasks import load_task
from loop.store.db import Store

ITEMS = [CheckInput("Capital of France?", "", "Paris", "Paris"),
         CheckInput("Capital of France?", "", "Paris", "Lyon"),
         CheckInput("Capital of France?", "", "Paris", "I think maybe"),
         CheckInput("Capital of France?", "", "Paris", "somewhere")]


def scripted_judge(prompts: list[str]) -> list[str]:
    """Grades by the answer shown: Paris 5, Lyon 2, a reply without a score, a score off the
    scale (9 on 1..5)."""
    replies = {"Paris": "Correct and concise.\nSCORE: 5", "Lyon": "Wrong city.\nSCORE: 2",
               "I think maybe": "I cannot decide.", "somewhere": "Vague.\nSCORE: 9"}
    return [next(r for answer, r in replies.items()
                 if f"[Answer to grade]\n{answer}\n" in p) for p in prompts]


def test_rubric_passes_by_threshold_and_keeps_the_reasoning():
    results = grade(ITEMS, Rubric("Names the right city.", 1, 5, threshold=4), scripted_judge,
                    judge="fake")
    assert [r.passed for r in results] == [True, False, False, False]
    assert [r.value for r in results[:2]] == [5.0, 2.0]
    assert results[0].detail["reasoning"].startswith("Correct and concise")
    assert results[0].detail["score"] == 5 and results[0].detail["judge"] == "fake"
    for unparseable in results[2:]:  # no score, or a score off the scale
        assert unparseable.detail["reason"] == UNPARSEABLE and "score" not in unparseable.detail
    lenient = grade(ITEMS[:2], Rubric("Names a city.", 1, 5, threshold=2), scripted_judge)
    assert [r.passed for r in lenient] == [True, True]


def test_the_prompt_shows_criteria_scale_and_answer_and_the_last_score_counts():
    prompt = rubric_prompt(ITEMS[1], Rubric("Names the right city.", 0, 10, 7))
    for part in ("Names the right city.", "Lyon", "Paris", "from 0 (worst) to\n10", "SCORE:"):
        assert part in prompt, part
    assert parse_score("SCORE: 2\nOn reflection...\nScore: 4", 1, 5) == 4
    assert parse_score("**SCORE:** 3", 1, 5) == 3
    assert parse_score("a score of 3", 1, 5) is None


def test_suite_rubric_check_calls_the_judge_its_params_name():
    params = {"criteria": "Names the right city.", "scale": "1-5", "threshold": 4,
              "model": "judge-x"}
    suite = Suite("1", (SuiteCheck("rubric", required=True, params=params),
                        SuiteCheck("too_long")))
    asked = []

    def factory(p):
        asked.append(p["model"])
        return scripted_judge

    good, bad = score_suite(suite, ITEMS[:2], judge=factory)
    assert asked == ["judge-x"]
    assert good.passed and not bad.passed and bad.failed_required == ("rubric",)
    assert bad.categories == ("wrong_answer",)
    assert suite.check_versions() == {"rubric": "1", "too_long": "1"}
    with pytest.raises(ValueError, match="pass a judge"):
        score_suite(suite, ITEMS[:1])
    assert not suite.without_judge().needs_judge and suite.needs_judge
    assert not DEFAULT_SUITE.needs_judge  # open answers keep the offline default


def test_rubric_params_are_validated_when_the_task_loads(tmp_path):
    toml = write_task(tmp_path, {"test": [{"instruction": "i", "output": "o"}]},
                      '[suite]\nversion = "1"\nchecks = [{name = "rubric", required = true, '
                      'params = {scale = "5-1", critera = "x"}}, {name = "rubric", '
                      'params = {criteria = "c", model = "m", scale = [1, 5], threshold = 6}}, '
                      '{name = "rubrik"}]\n')
    with pytest.raises(ConfigError) as err:
        load_task(toml)
    message = str(err.value)
    assert "checks[0].params: unknown param 'critera' for rubric" in message
    assert "rubric needs criteria" in message and "rubric needs model" in message
    assert "scale low must be below high" in message
    assert "checks[1].params: rubric threshold must be a whole number in 1..5, got 6" in message
    assert "checks[2].name: unknown check 'rubrik' (did you mean 'rubric'?" in message


def test_eval_with_an_endpoint_rubric_judge_stores_score_and_reasoning(tmp_path, workspace,
                                                                       chat_server, capsys):
    ChatHandler.answers = ["Mentions a colour but not the right one.\nSCORE: 2",
                           "Right colour, one word.\nSCORE: 5"]
    toml = write_task(tmp_path / "task", {"test": classification_records(4)}, (
        "[generation]\nmax_new_tokens = 4\nbatch_size = 4\n"
        '[suite]\nversion = "r1"\nchecks = [{name = "rubric", required = true, params = {'
        f'criteria = "Names the colour in one word.", threshold = 4, model = "judge", '
        f'base_url = "{chat_server}"}}}}]\n'))
    assert load_suite(load_task(toml).settings).needs_judge
    assert main(["eval", "--task", str(toml), "--model", "tiny-random", "--workspace",
                 str(workspace), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pass_rate"] == 0.5 and summary["per_check"] == {"rubric": 0.5}
    assert len(ChatHandler.seen) == 4
    assert "Names the colour in one word." in json.dumps(ChatHandler.seen[0]["body"])
    with Store(workspace) as store:
        rows = store.query("SELECT passed, value, detail FROM scores WHERE check_name = 'rubric' "
                           "ORDER BY value")
    assert [(r["passed"], r["value"]) for r in rows] == [(False, 2.0)] * 2 + [(True, 5.0)] * 2
    detail = json.loads(rows[0]["detail"])
    assert detail["reasoning"].startswith("Mentions a colour") and detail["score"] == 2
    assert detail["judge"] == f"judge@{chat_server}"
