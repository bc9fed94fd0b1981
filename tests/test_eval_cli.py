"""`evalloop eval` end to end: tiny model on an external task, reuse, errors, the real model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import DEMO_TASK, classification_records, write_task
from loop.cli import main
from loop.store.db import Store


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loop.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_eval_on_an_external_task_stores_predictions_scores_and_failures(tiny_task, workspace,
                                                                         capsys):
    assert main(["eval", "--task", str(tiny_task), "--model", "tiny-random", "--workspace",
                 str(workspace), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n"] == 8 and first["generated"] == 8 and first["reused"] == 0
    assert set(first["per_category"]) == {"colour_red", "colour_green", "colour_blue",
                                          "colour_yellow"}
    assert "exact_match" in first["per_check"]
    with Store(workspace) as store:
        assert store.count("predictions") == 8
        assert store.query("SELECT count(DISTINCT prediction_id) AS n FROM scores")[0]["n"] == 8
        n_failures = store.count("failures")
        assert n_failures == round(8 * (1 - first["pass_rate"]))
        row = store.query("SELECT latency_s, prompt_tokens, output_tokens FROM predictions")[0]
        assert row["latency_s"] > 0 and row["prompt_tokens"] > 10 and row["output_tokens"] >= 1
    # the same model on the same data: predictions are reused, nothing generated
    assert main(["eval", "--task", str(tiny_task), "--model", "tiny-random", "--workspace",
                 str(workspace), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["generated"] == 0 and second["reused"] == 8
    assert second["pass_rate"] == first["pass_rate"]
    with Store(workspace) as store:
        assert store.count("predictions") == 8 and store.count("failures") == n_failures
    assert main(["failures", "--task", str(tiny_task), "--workspace", str(workspace),
                 "--json"]) == 0
    failures = json.loads(capsys.readouterr().out)
    assert failures["n_failures"] == n_failures
    assert sum(c["size"] for c in failures["clusters"]) == n_failures


def test_table_output_has_categories_and_checks(tiny_task, workspace, capsys):
    assert main(["eval", "--task", str(tiny_task), "--model", "tiny-random", "--workspace",
                 str(workspace), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "colour_red" in out and "overall" in out and "exact_match" in out


@pytest.mark.parametrize("problem", ["malformed", "missing_output", "empty_test", "unknown_model",
                                     "negative_limit"])
def test_bad_input_gives_one_paragraph_error_and_nonzero_exit(tmp_path, problem):
    records = classification_records(3)
    model = "tiny-random"
    if problem == "malformed":
        toml = write_task(tmp_path, {"test": records})
        with (tmp_path / "test.jsonl").open("a") as fh:
            fh.write('{"instruction": "x", "output": \n')
    elif problem == "missing_output":
        toml = write_task(tmp_path, {"test": records + [{"instruction": "no answer"}]})
    elif problem == "empty_test":
        toml = write_task(tmp_path, {"test": []})
    else:
        toml = write_task(tmp_path, {"test": records})
        model = "no-such-model" if problem == "unknown_model" else model
    extra = ["--limit", "-3"] if problem == "negative_limit" else []
    proc = run_cli("eval", "--task", str(toml), "--model", model, "--workspace",
                   str(tmp_path / "ws"), *extra)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("evalloop: error:") and "\n" not in message
    expected = {"malformed": "test.jsonl:4", "missing_output": "missing required field 'output'",
                "empty_test": "is empty", "unknown_model": "Known names",
                "negative_limit": "--limit"}[problem]
    assert expected in message
    if problem != "unknown_model":
        assert not (tmp_path / "ws" / "evalloop.duckdb").exists()


@pytest.mark.slow
def test_real_embedded_model_on_a_handful_of_demo_examples(workspace, capsys):
    assert main(["eval", "--task", str(DEMO_TASK), "--workspace", str(workspace), "--limit",
                 "6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 6 and summary["model"] == "smollm2-135m-instruct"
    with Store(workspace) as store:
        outputs = [r["output"] for r in store.query("SELECT output FROM predictions")]
    assert len(outputs) == 6 and all(o.strip() for o in outputs)
    # a real instruction model answers in words related to the task, unlike the random one
    assert summary["mean_similarity"] > 0.3


def test_ci_gate_exits_1_with_the_missed_threshold_and_writes_junit(tiny_task, workspace,
                                                                    tmp_path):
    # the tiny random model answers nothing right: any positive minimum is missed
    report = tmp_path / "reports" / "evalloop.xml"
    proc = run_cli("eval", "--task", str(tiny_task), "--model", "tiny-random", "--workspace",
                   str(workspace), "--limit", "4", "--min-pass-rate", "0.25",
                   "--min-category-pass-rate", "colour_red=0", "--junit", str(report))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "threshold missed: overall pass rate 0.0% (0/4) is below --min-pass-rate 25.0%" \
        in proc.stderr
    assert "colour_red" not in proc.stderr  # a minimum of 0 is met
    import xml.etree.ElementTree as ET

    root = ET.parse(report).getroot()
    assert (root.get("tests"), root.get("failures")) == ("4", "4")
    assert len(root.findall("testsuite")) == 4 and len(root.findall(".//testcase")) == 4


@pytest.mark.parametrize("args, expected", [
    (["--min-pass-rate", "80"], "did you mean 0.8"),
    (["--min-category-pass-rate", "colour_rde=0.5"], "did you mean colour_red"),
    (["--min-category-pass-rate", "colour_red"], "CATEGORY=RATE"),
])
def test_bad_thresholds_fail_before_evaluating(tiny_task, workspace, capsys, args, expected):
    assert main(["eval", "--task", str(tiny_task), "--model", "tiny-random", "--workspace",
                 str(workspace), *args]) == 2
    assert expected in capsys.readouterr().err
    assert not (workspace / "evalloop.duckdb").exists()
