"""Suites: declaration and validation, default suite, verdicts, version comparability."""

from __future__ import annotations

import pytest

from conftest import write_task
from evals.rules import CheckInput
from evals.suites import (DEFAULT_SUITE, ScoreVersionError, Suite, SuiteCheck, assert_comparable,
                          load_suite, score_suite)
from loop.core.errors import ConfigError
from loop.data.tasks import load_task


def test_default_suite_scores_json_items_with_json_equal_and_text_with_exact_match():
    items = [CheckInput("Extract", "", '{"a": 1}', '{"a": 1}'),
             CheckInput("Capital?", "", "Paris", "The capital is Paris.")]
    json_item, text_item = score_suite(DEFAULT_SUITE, items)
    assert json_item.passed and "exact_match" not in {r.check for r in json_item.checks}
    assert not text_item.passed and text_item.failed_required == ("exact_match",)
    assert "wrong_answer" in text_item.categories


def test_non_required_failures_add_categories_but_do_not_fail():
    suite = Suite("1", (SuiteCheck("contains", required=True),
                        SuiteCheck("too_long", params={"max_words": 2})))
    (score,) = score_suite(suite, [CheckInput("q", "", "Paris", "It is Paris of course")])
    assert score.passed and score.categories == ("too_long",)


def test_similarity_pseudo_check_for_open_answers():
    suite = Suite("1", (SuiteCheck("similarity", required=True, params={"threshold": 0.7}),))
    items = [CheckInput("q", "", "r", "a"), CheckInput("q", "", "r", "b")]
    good, bad = score_suite(suite, items, similarities=[0.9, 0.2])
    assert good.passed and not bad.passed and bad.categories == ("wrong_answer",)


def test_suite_from_task_toml_and_from_a_suite_file(tmp_path):
    toml = write_task(tmp_path / "a", {"test": [{"instruction": "i", "output": "o"}]},
                      '[suite]\nversion = "3"\nchecks = [{name = "regex", required = true, '
                      'params = {pattern = "o"}}]\n')
    assert load_suite(load_task(toml).settings).version == "3"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "suite.toml").write_text('version = "7"\nchecks = [{name = "exact_match", '
                                               'required = true}]\n')
    toml = write_task(tmp_path / "b", {"test": [{"instruction": "i", "output": "o"}]},
                      '[suite]\nfile = "suite.toml"\n')
    suite = load_suite(load_task(toml).settings)
    assert suite.version == "7" and suite.required == {"exact_match"}


def test_suite_validation_reports_all_problems(tmp_path):
    toml = write_task(tmp_path, {"test": [{"instruction": "i", "output": "o"}]},
                      '[suite]\nchecks = [{name = "exact_mach", required = true}, '
                      '{name = "too_long", params = {max_wrds = 3}}, '
                      '{name = "regex", applies = "never"}]\n')
    with pytest.raises(ConfigError) as err:
        load_task(toml)
    message = str(err.value)
    assert f"{toml}: [suite] version: is required" in message
    assert "[suite] checks[0].name: unknown check 'exact_mach' (did you mean 'exact_match'?" \
        in message
    assert "[suite] checks[1].params: unknown param 'max_wrds' for too_long" in message
    assert "[suite] checks[2].applies: must be one of" in message


def test_a_suite_file_names_itself_in_its_problems(tmp_path):
    (tmp_path / "suite.toml").write_text('version = "1"\nchecks = [{name = "too_long"}]\n')
    toml = write_task(tmp_path, {"test": [{"instruction": "i", "output": "o"}]},
                      '[suite]\nfile = "suite.toml"\n')
    with pytest.raises(ConfigError) as err:
        load_task(toml)
    assert f"{tmp_path / 'suite.toml'}: checks: at least one check must be required" \
        in str(err.value)
    toml.write_text(toml.read_text().replace("suite.toml", "gone.toml") +
                    "[generation]\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as err:
        load_task(toml)
    assert str(err.value).startswith("2 problem(s)")  # the file alone, not its missing keys
    assert f"{toml}: [suite] file: suite file {tmp_path / 'gone.toml'} does not exist" \
        in str(err.value) and "[generation] batch_size" in str(err.value)


def test_changed_check_version_is_never_compared():
    old = {"__suite__": "1", "exact_match": "1", "too_long": "1"}
    assert assert_comparable(old, dict(old)) == {"exact_match", "too_long"}
    with pytest.raises(ScoreVersionError, match="exact_match"):
        assert_comparable(old, {**old, "exact_match": "2"})
    with pytest.raises(ScoreVersionError, match="suite versions"):
        assert_comparable(old, {**old, "__suite__": "2"})


def test_the_gate_compares_per_check_versions_of_the_two_summaries():
    """The gate used to compare only the suite version; a changed check version slipped by."""
    from loop.evaluation.evaluate import EvalSummary

    def summary(versions):
        return EvalSummary("r", "t", "m", "id", "test", 1, 1, 0, 1.0, {}, {}, 1.0, {}, 0,
                           "default-1", check_versions=versions)

    same = summary({"exact_match": "1", "json_equal": "1"})
    assert assert_comparable(same.versions(), same.versions()) == {"exact_match", "json_equal"}
    with pytest.raises(ScoreVersionError, match="json_equal"):
        assert_comparable(same.versions(), summary({"exact_match": "1",
                                                    "json_equal": "2"}).versions())
