"""Exports and CI reports: JUnit XML, thresholds, items as CSV/Parquet, lm-eval results JSON,
training data as a Hugging Face dataset folder. One tiny-model eval is shared by the module."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest

from conftest import classification_records, write_task
from loop.evaluation import ci_report
from loop import exports
from loop.cli import main
from loop.core.errors import ConfigError
from loop.store.db import Store

# ---------------------------------------------------------------------------- JUnit structure

SUITE_ATTRS = {"name", "tests", "failures", "errors"}  # required by Jenkins/Surefire's schema
SUITE_CHILDREN = {"testsuite", "properties", "testcase", "system-out", "system-err"}
CASE_CHILDREN = {"skipped", "error", "failure", "system-out", "system-err"}


def assert_consumable_junit(text: str) -> ET.Element:
    """The structure GitHub (action-junit-report, dorny), GitLab and Jenkins read: a
    <testsuites> root of <testsuite name tests failures errors [time]>, each of <testcase name
    classname time> with optional <failure message type>; counts that add up; decimal times."""
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    total = failed = 0
    for suite in root:
        assert suite.tag == "testsuite" and SUITE_ATTRS <= set(suite.attrib)
        assert {child.tag for child in suite} <= SUITE_CHILDREN
        cases = suite.findall("testcase")
        failures = [c for c in cases if c.find("failure") is not None]
        assert int(suite.get("tests")) == len(cases) and int(suite.get("failures")) == len(
            failures)
        assert int(suite.get("errors")) == 0 and float(suite.get("time")) >= 0
        for prop in suite.iter("property"):
            assert {"name", "value"} <= set(prop.attrib)
        for case in cases:
            assert case.get("name") and case.get("classname") and float(case.get("time")) >= 0
            assert {child.tag for child in case} <= CASE_CHILDREN
            for failure in case.findall("failure"):
                assert failure.get("message") and failure.get("type")
        total, failed = total + len(cases), failed + len(failures)
    assert int(root.get("tests")) == total and int(root.get("failures")) == failed
    for element in root.iter():
        if "time" in element.attrib:  # Surefire's pattern: digits, at most 3 decimals
            whole, _, frac = element.get("time").partition(".")
            assert whole.isdigit() and len(frac) <= 3 and (not frac or frac.isdigit())
    return root


def item(example_id: str, category: str, passed: bool, reference: str = "red",
         prediction: str = "red", **extra) -> dict:
    return {"example_id": example_id, "category": category, "passed": passed,
            "reference": reference, "prediction": prediction, "input": "Item 1",
            "failed_checks": [] if passed else ["exact_match"],
            "signatures": [] if passed else ["label:red->blue"],
            "failure_categories": [] if passed else ["wrong_answer"],
            "similarity": None if passed else 0.5, "latency_s": 0.01234, **extra}


def test_junit_document_has_a_suite_per_category_and_failures_with_checks_and_diff():
    rows = [item("a1", "billing", True), item("a2", "billing", False, prediction="blue"),
            item("b1", "shipping", False, reference='{"city": "Paris", "days": 3}',
                 prediction='{"city": "Rome", "days": 3}'),
            item("b2", "shipping", True), item("b3", "shipping", True)]
    root = assert_consumable_junit(ci_report.junit_xml(rows, "tiny", "test", {"run_id": "r1"}))
    suites = {s.get("name"): s for s in root}
    assert set(suites) == {"tiny.test.billing", "tiny.test.shipping"}
    assert (suites["tiny.test.shipping"].get("tests"), suites["tiny.test.shipping"].get(
        "failures")) == ("3", "1")
    case = suites["tiny.test.shipping"].find("testcase[@name='b1']")
    assert case.get("classname") == "tiny.shipping"
    failure = case.find("failure")
    assert "exact_match" in failure.get("message") and "label:red->blue" in failure.get("message")
    # JSON answers are diffed field by field: the wrong field is its own line, the right one not
    assert '-  "city": "Paris",' in failure.text and '+  "city": "Rome",' in failure.text
    assert '-  "days": 3' not in failure.text and '   "days": 3' in failure.text
    assert suites["tiny.test.billing"].find("testcase[@name='a1']/failure") is None


def test_junit_survives_characters_xml_forbids():
    rows = [item("x", "c", False, prediction="bad \x00\x1b[31m output \ufffe")]
    root = assert_consumable_junit(ci_report.junit_xml(rows, "t", "dev", {}))
    assert "output" in root.find(".//failure").text


def test_thresholds_validate_together_and_report_figures():
    with pytest.raises(ConfigError) as err:
        ci_report.parse_thresholds(80, ["billing=2", "biling=0.5", "nonsense"],
                                   {"billing", "shipping"})
    message = str(err.value)
    for part in ("did you mean 0.8", "billing=2", "did you mean billing", "'nonsense'"):
        assert part in message
    thresholds = ci_report.parse_thresholds(0.75, ["shipping=0.5", "a=b=0.1"],
                                            {"shipping", "a=b"})
    assert thresholds.per_category == {"shipping": 0.5, "a=b": 0.1}
    per_category = {"shipping": {"n": 4, "pass_rate": 0.25}, "a=b": {"n": 2, "pass_rate": 0.5}}
    lines = ci_report.missed(thresholds, 0.5, 8, per_category)
    assert len(lines) == 2
    assert "50.0% (4/8)" in lines[0] and "75.0%" in lines[0]
    assert "'shipping'" in lines[1] and "25.0% (1/4)" in lines[1]
    assert ci_report.missed(ci_report.Thresholds(0.5, {"a=b": 0.5}), 0.5, 8, per_category) == []


# ---------------------------------------------------------------------------- one real eval run

def mixed_records() -> list[dict]:
    """The tiny random model answers with an empty string, which matches a reference of '.'
    after normalisation: the 'terse' items pass, the colour items fail."""
    terse = [{"instruction": "Reply with a full stop only.", "input": f"Case {i}.",
              "output": ".", "category": "terse"} for i in range(3)]
    return terse + classification_records(4)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("exports")
    toml = write_task(root / "task", {"test": mixed_records()},
                      extra_toml="[generation]\nmax_new_tokens = 4\nbatch_size = 8\n")
    workspace = root / "ws"
    code = main(["eval", "--task", str(toml), "--model", "tiny-random", "--workspace",
                 str(workspace), "--json", "--junit", str(root / "junit.xml")])
    with Store(workspace, read_only=True) as store:
        run = exports.resolve_run(store, "latest")
    return {"root": root, "toml": toml, "workspace": workspace, "code": code, "run": run}


def test_eval_junit_report_matches_the_run(evaluated):
    assert evaluated["code"] == 0  # no thresholds given
    root = assert_consumable_junit((evaluated["root"] / "junit.xml").read_text())
    assert root.get("tests") == "7" and root.get("failures") == "4"
    suites = {s.get("name"): s for s in root}
    assert suites["tiny.test.terse"].get("failures") == "0"
    assert suites["tiny.test.colour_red"].get("failures") == "1"
    props = {p.get("name"): p.get("value") for p in suites["tiny.test.terse"].iter("property")}
    assert props["run_id"] == evaluated["run"]["run_id"] and props["model"] == "tiny-random"
    failure = suites["tiny.test.colour_red"].find("testcase/failure")
    assert "exact_match" in failure.get("message") and "-red" in failure.text


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_items_export_loads_with_pandas(evaluated, fmt, capsys):
    import pandas as pd

    out = evaluated["root"] / f"items.{fmt}"
    prefix = evaluated["run"]["run_id"][:6]
    assert main(["export", "--workspace", str(evaluated["workspace"]), "--failures", prefix,
                 str(out)]) == 0  # the format comes from the suffix
    assert str(out) in capsys.readouterr().out
    frame = pd.read_csv(out, keep_default_na=False) if fmt == "csv" else pd.read_parquet(out)
    assert list(frame.columns) == list(exports.ITEM_COLUMNS)
    assert len(frame) == 7 and frame["passed"].astype(bool).sum() == 3
    assert set(frame["run_id"]) == {evaluated["run"]["run_id"]}
    failed = frame[~frame["passed"].astype(bool)]
    assert set(failed["category"]) == {"colour_red", "colour_green", "colour_blue",
                                       "colour_yellow"}
    assert set(failed["reference"]) == {"red", "green", "blue", "yellow"}
    checks = failed["failed_checks"].iloc[0]
    assert "exact_match" in (checks.split("; ") if fmt == "csv" else list(checks))
    signatures = failed["signatures"].iloc[0]
    assert len(signatures) > 0
    assert (frame[frame["passed"].astype(bool)]["reference"] == ".").all()


def test_eval_thresholds_exit_codes(evaluated, capsys):
    args = ["eval", "--task", str(evaluated["toml"]), "--model", "tiny-random", "--workspace",
            str(evaluated["workspace"])]  # predictions are reused: no generation
    assert main([*args, "--min-pass-rate", "0.4", "--min-category-pass-rate", "terse=1"]) == 0
    capsys.readouterr()
    assert main([*args, "--min-pass-rate", "0.5", "--json"]) == ci_report.EXIT_BELOW_THRESHOLD
    captured = capsys.readouterr()
    assert json.loads(captured.out)["thresholds"]["missed"]
    assert "overall pass rate 42.9% (3/7) is below --min-pass-rate 50.0%" in captured.err
    assert main([*args, "--min-category-pass-rate", "colour_red=0.5"]) == 1
    assert "category 'colour_red' pass rate 0.0% (0/1)" in capsys.readouterr().err
    assert main([*args, "--min-category-pass-rate", "colour_purple=0.5"]) == 2
    assert "no category 'colour_purple'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- lm-eval results

def lm_eval_output() -> dict:
    """A `simple_evaluate` result in lm-eval 0.4's shape: a task and a group with subtasks."""
    return {
        "results": {
            "arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1,
                         "acc_norm,none": 0.4, "acc_norm_stderr,none": 0.09, "sample_len": 20},
            "mmlu": {"alias": "mmlu", "acc,none": 0.3, "acc_stderr,none": "N/A",
                     "sample_len": 10},
            "mmlu_anatomy": {"alias": " - anatomy", "acc,none": 0.2, "acc_stderr,none": 0.2,
                             "sample_len": 5},
            "mmlu_virology": {"alias": " - virology", "acc,none": 0.4, "acc_stderr,none": 0.24,
                              "sample_len": 5}},
        "groups": {"mmlu": {"alias": "mmlu", "acc,none": 0.3, "acc_stderr,none": "N/A"}},
        "group_subtasks": {"mmlu": ["mmlu_anatomy", "mmlu_virology"]},
        "versions": {"arc_easy": 1.0, "mmlu": 2, "mmlu_anatomy": 1.0, "mmlu_virology": 1.0},
        "n-shot": {"arc_easy": 0, "mmlu": 0, "mmlu_anatomy": 0, "mmlu_virology": 0},
        "higher_is_better": {"arc_easy": {"acc": True, "acc_norm": True},
                             "mmlu": {"acc": True}, "mmlu_anatomy": {"acc": True},
                             "mmlu_virology": {"acc": True}},
        "n-samples": {"arc_easy": {"original": 2376, "effective": 20},
                      "mmlu_anatomy": {"original": 135, "effective": 5},
                      "mmlu_virology": {"original": 166, "effective": 5}},
    }


def store_benchmarks(workspace: Path, out: dict) -> list:
    from evals.benchmarks import result_rows
    from loop.evaluation.benchmarks import save

    rows = []
    for benchmark, keys in (("arc_easy", ["arc_easy"]),
                            ("mmlu", ["mmlu", "mmlu_anatomy", "mmlu_virology"])):
        part = {**out, "results": {k: out["results"][k] for k in keys},
                "groups": {k: v for k, v in out["groups"].items() if k in keys}}
        context = {"model_id": "tiny-random-4dffbb58e9", "model_name": "tiny-random",
                   "limit": 20, "backend": "evalloop", "dtype": "float32",
                   "lm_eval_version": "0.4.13", "seed": 1234, "benchmark": benchmark,
                   "benchmark_version": str(out["versions"][benchmark]), "shots": 0,
                   "data_source": "hub", "wall_s": 1.5,
                   "created_at": datetime(2025, 1, 2, 3, 4, 5)}
        rows += result_rows(part, context)
    with Store(workspace) as store:
        save(store, rows, [])
    return rows


def test_lm_eval_export_has_lm_evals_shape_and_round_trips(tmp_path, capsys):
    from lm_eval.result_schema import EvalResults
    from lm_eval.utils import make_table

    from evals.benchmarks import result_rows

    original = lm_eval_output()
    stored = store_benchmarks(tmp_path / "ws", original)
    out = tmp_path / "results.json"
    assert main(["export", "--workspace", str(tmp_path / "ws"), "--benchmarks", "tiny-random",
                 "--format", "lm-eval", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data) - {"evalloop"} <= set(EvalResults.__annotations__)
    for key in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot",
                "higher_is_better", "n-samples", "config"):
        assert key in data, key
    assert data["results"]["arc_easy"]["acc,none"] == 0.5
    assert data["results"]["arc_easy"]["acc_stderr,none"] == 0.1
    assert data["results"]["mmlu"]["acc_stderr,none"] == "N/A"
    assert data["group_subtasks"] == original["group_subtasks"]
    assert data["higher_is_better"] == original["higher_is_better"]
    assert data["n-shot"] == original["n-shot"]
    assert {k: v["effective"] for k, v in data["n-samples"].items()} == {
        k: v["effective"] for k, v in original["n-samples"].items()}
    assert data["config"]["model_args"] == {"pretrained": "tiny-random"}
    assert data["config"]["limit"] == 20 and data["config"]["numpy_seed"] == 1234
    assert data["lm_eval_version"] == "0.4.13" and data["model_name"] == "tiny-random"
    # lm-eval's own reader (the CLI's table) reads it, for tasks and for groups
    table = make_table(data)
    assert "arc_easy" in table and "acc_norm" in table and "0.0900" in table
    assert "mmlu" in make_table(data, "groups")
    # evalloop's lm-eval reader gives back the rows that were stored
    def key(r):
        return (r.task, r.metric, r.value, r.stderr, r.n, r.higher_is_better)

    context = {k: getattr(stored[0], k) for k in ("model_id", "model_name", "limit", "backend",
                                                  "dtype", "lm_eval_version", "seed",
                                                  "data_source", "wall_s", "created_at")}
    again = result_rows(data, dict(context, benchmark="mmlu", benchmark_version="2", shots=0))
    assert sorted(map(key, again)) == sorted(map(key, stored))


# ---------------------------------------------------------------------------- HF datasets

def test_training_data_exports_as_a_loadable_dataset_with_a_card(tmp_path, capsys):
    import datasets
    from huggingface_hub import DatasetCard

    rows = [{"id": f"g{i}", "instruction": "Name the colour.", "input": f"Item {i} is red.",
             "output": "red", "category": "colour_red"} for i in range(5)]
    source = tmp_path / "targeted" / "batch1.jsonl"
    source.parent.mkdir()
    data = "".join(json.dumps(r) + "\n" for r in rows)
    source.write_text(data)
    manifest = {"batch_id": "batch1", "task": "tiny", "run_id": "run9", "model_id": "m1",
                "data_hash": hashlib.sha256(data.encode()).hexdigest(), "requested": 6,
                "accepted": 5, "replay": 0, "by_strategy": {"retrieval": {"accepted": 5,
                                                                         "rejected": 1}},
                "rejected": {"duplicate": 1}}
    (source.parent / "batch1.manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "hf"
    assert main(["export", "--data", str(source), "--hf-card", str(out)]) == 0
    cache = tmp_path / "hf-cache"
    by_folder = datasets.load_dataset(str(out), split="train", cache_dir=str(cache))
    by_file = datasets.load_dataset("json", data_files=str(out / exports.DATA_FILE),
                                    split="train", cache_dir=str(cache))
    assert by_folder.to_list() == rows and by_file.to_list() == rows
    card = DatasetCard((out / "README.md").read_text())
    assert card.data.license == "unknown" and card.data.size_categories == ["n<1K"]
    assert card.data.task_categories == ["text-generation"]
    for text in ("run9", "batch1", "| retrieval | 5 | 1 |", "duplicate 1"):
        assert text in card.text
    assert "edited after generation" not in card.text
    assert json.loads((out / "manifest.json").read_text())["run_id"] == "run9"
    # an edited copy is flagged, and a file without a manifest still gets a card
    source.write_text(data + json.dumps(rows[0]) + "\n")
    exports.export_hf_dataset(source, out)
    assert "edited after generation" in (out / "README.md").read_text()
    assert exports.size_category(999) == "n<1K" and exports.size_category(1000) == "1K<n<10K"


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("problem", ["unknown_run", "no_results", "missing_file", "two_modes",
                                     "wrong_format", "no_database"])
def test_bad_export_input_is_one_clear_error(evaluated, tmp_path, capsys, problem):
    ws = str(evaluated["workspace"])
    args, expected = {
        "unknown_run": (["--workspace", ws, "--failures", "zzz", str(tmp_path / "x.csv")],
                        "No finished eval run 'zzz'"),
        "no_results": (["--workspace", ws, "--benchmarks", "tiny-random",
                        str(tmp_path / "r.json")], "No benchmark results for model"),
        "missing_file": (["--data", str(tmp_path / "nope.jsonl"), "--hf-card",
                          str(tmp_path / "o")], "does not exist"),
        "two_modes": (["--workspace", ws, "--failures", "latest", "--benchmarks", "m",
                       str(tmp_path / "x.csv")], "exactly one of"),
        "wrong_format": (["--workspace", ws, "--failures", "latest", "--format", "lm-eval",
                          str(tmp_path / "x.json")], "--failures writes --format csv or parquet"),
        "no_database": (["--workspace", str(tmp_path / "empty"), "--failures", "latest",
                         str(tmp_path / "x.csv")], "No evalloop database"),
    }[problem]
    code = main(["export", *args])
    err = capsys.readouterr().err
    assert code in (2, 3) and expected in err and "Traceback" not in err
    assert not any(tmp_path.glob("x.*")) and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- adapter + card

@pytest.fixture(scope="module")
def cycled(tmp_path_factory) -> dict:
    """One small cycle on the tiny model: a candidate adapter with training data, a test
    evaluation and a gate decision in the store. One training run (no recipe search), so an id
    prefix names one adapter."""
    from loop.cycle.run import run_cycle

    root = tmp_path_factory.mktemp("cycled")
    task = write_task(root / "task", {"train": classification_records(16, 100),
                                      "dev": classification_records(4, 200),
                                      "test": classification_records(8)},
                      "[generation]\nmax_new_tokens = 4\nbatch_size = 8\n"
                      "[cycle]\nbase_model = \"tiny-random\"\nbenchmarks = false\narena = false\n"
                      "[targeted]\nn = 8\n[training]\nmax_steps = 4\nsave_steps = 2\n"
                      "batch_size = 4\nrank = 4\nbf16 = false\nsearch = false\n"
                      "[tracking]\nenabled = false\n")
    summary = run_cycle(task, root / "ws", progress=False)
    return {"workspace": root / "ws", "summary": summary, "root": root}


def front_matter(readme: Path) -> dict:
    import yaml

    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_adapter_export_loads_with_peft_and_its_card_matches_the_store(cycled, tmp_path,
                                                                         capsys):
    import torch
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loop.models.loading import load_model, tiny_random_checkpoint

    candidate = cycled["summary"]["candidate"]
    out = tmp_path / "shared"
    assert main(["export", "--workspace", str(cycled["workspace"]), "--adapter",
                 candidate["name"], "--out", str(out)]) == 0
    assert "model card" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"adapter_config.json",
                                               "adapter_model.safetensors", "README.md"}
    adapter_dir = Path(candidate["name"].split("+", 1)[1])
    assert (out / "adapter_model.safetensors").read_bytes() == \
        (adapter_dir / "adapter_model.safetensors").read_bytes()

    base = AutoModelForCausalLM.from_pretrained(tiny_random_checkpoint(), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    ours = load_model(candidate["name"], device="cpu")
    ids = ours.tokenizer("Item 3 was painted red.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, ours.model(ids).logits, atol=1e-5)

    meta = front_matter(out / "README.md")
    assert (meta["base_model"], meta["library_name"]) == ("tiny-random", "peft")
    assert "evalloop" in meta["tags"]
    card = ModelCard.load(out / "README.md")  # huggingface_hub's own parser
    with Store(cycled["workspace"], read_only=True) as store:
        run = store.query("SELECT run_id, summary FROM runs WHERE kind = 'eval' AND "
                          "model_id = ? AND split = 'test'", [candidate["model_id"]])[0]
        gate = store.query("SELECT promote FROM gate_decisions WHERE cycle_id = ?",
                           [cycled["summary"]["cycle_id"]])[0]
        manifest = store.query("SELECT dataset_hash FROM training_runs WHERE model_id = ?",
                               [candidate["model_id"]])[0]["dataset_hash"]
    stored = json.loads(run["summary"])
    scores = {r.metric_config or "overall": r.metric_value for r in card.data.eval_results}
    assert scores == {"overall": stored["pass_rate"],
                      **{c: row["pass_rate"] for c, row in stored["per_category"].items()}}
    body = card.text
    assert cycled["summary"]["cycle_id"] in body and run["run_id"] in body and manifest in body
    assert ("**Promoted**" in body) == gate["promote"]
    assert f"**{stored['pass_rate']:.1%}**" in body


def test_adapter_export_by_id_prefix_and_push_to_hub_through_the_api(cycled, tmp_path,
                                                                     monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:  # the boundary: no network here
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw.get("private")))

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload_folder", folder_path, repo_id,
                          sorted(p.name for p in Path(folder_path).iterdir())))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    ws, model_id = str(cycled["workspace"]), cycled["summary"]["candidate"]["model_id"]

    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["export", "--workspace", ws, "--adapter", model_id[:10], "--out",
                 str(tmp_path / "a"), "--push-to-hub", "me/colors"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err and not calls
    assert (tmp_path / "a" / "README.md").is_file()  # written before the upload was refused

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert main(["export", "--workspace", ws, "--adapter", model_id[:10], "--out",
                 str(tmp_path / "b"), "--push-to-hub", "me/colors", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pushed"] == "https://hub/me/colors/commit/1"
    assert calls == [("token", "hf_test_token"), ("create_repo", "me/colors", True),
                     ("upload_folder", str(tmp_path / "b"), "me/colors",
                      ["README.md", "adapter_config.json", "adapter_model.safetensors"])]


@pytest.mark.parametrize("args, expected", [
    (["--adapter", "x"], "--adapter needs --out DIR"),
    (["--adapter", "x", "--out", "o", "--merge", "m"], "one of them"),
    (["--failures", "latest", "x.csv", "--push-to-hub", "me/r"], "--push-to-hub REPO_ID goes"),
    (["--adapter", "nosuchmodel", "--out", "o"], "No adapter 'nosuchmodel' is recorded"),
])
def test_bad_adapter_export_is_one_clear_error(cycled, tmp_path, monkeypatch, capsys, args,
                                               expected):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--workspace", str(cycled["workspace"]), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_card_names_the_hub_base_of_the_embedded_model():
    from loop.adapter_export import model_card

    model = {"model_id": "abc123", "base": "smollm2-135m-instruct", "name": "x"}
    records = {"training": None, "dataset": None, "cycle": None, "gate": None, "test": None,
               "benchmarks": []}
    text = model_card(model, records, "HuggingFaceTB/SmolLM2-135M-Instruct")
    import yaml

    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "model-index" not in meta and "Not evaluated on the test split yet" in text


def test_card_lists_benchmarks_and_deltas_when_recorded():
    from loop.adapter_export import model_card

    model = {"model_id": "base-1+abc", "base": "org/base", "name": "org/base+/a"}
    bench = [{"benchmark": "arc_easy", "metric": "acc", "value": v, "stderr": 0.01, "n": 50,
              "limit_n": 50, "created_at": None} for v in (0.41, 0.44)]  # the newest counts
    records = {"training": None, "dataset": None, "gate": None, "test": None,
               "cycle": {"cycle_id": "c-1", "task_id": "t", "attempt": 1, "status": "done",
                         "champion_name": "org/base",
                         "summary": {"benchmark_deltas": {"arc_easy/acc": -0.012}}},
               "benchmarks": bench}
    text = model_card(model, records, "org/base")
    assert "| arc_easy | acc | 0.4400 | 50 |" in text and "0.4100" not in text
    assert "- arc_easy/acc: -0.0120" in text and "cycle: `c-1`" in text


def test_preference_pairs_export_as_a_dataset_card_that_says_so(tmp_path):
    """`evalloop pairs` JSONL (prompt, chosen, rejected) through --hf-card: loadable, tagged dpo."""
    import datasets
    from huggingface_hub import DatasetCard

    rows = [{"prompt": f"Colour of item {i}?", "chosen": "red", "rejected": "blue"}
            for i in range(3)]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "hf"
    assert main(["export", "--data", str(source), "--hf-card", str(out)]) == 0
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.to_list() == rows
    card = DatasetCard((out / "README.md").read_text())
    assert "dpo" in card.data.tags and "sft" not in card.data.tags
    assert "Preference pairs (for DPO)" in card.text
