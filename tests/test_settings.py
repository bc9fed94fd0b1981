"""Task settings: parsed once with every problem named by file and key, today's defaults, the
JSON Schema for editors, and typed stage results that resume from the JSON stored before."""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest

from conftest import DEMO_TASK, write_task
from loop.cli import main
from loop.core.errors import ConfigError
from loop.core.settings import DEFAULT_BENCHMARK_TASKS, STRATEGY_NAMES, TaskSettings, TeacherSettings
from loop.core.settings_load import json_schema, load_settings, with_overrides
from loop.data.tasks import load_task

REAL_TASKS = sorted((Path(__file__).resolve().parents[2] / "shared" / "real-tasks").glob(
    "*/task.toml"))
ROWS = {"test": [{"instruction": "i", "output": "o"}]}


def test_every_problem_in_every_section_is_named_with_file_and_key(tmp_path):
    toml = write_task(tmp_path, ROWS, (
        'colour = "red"\n'
        "[generation]\nbatch_size = 0\n"
        '[training]\nrank = "eight"\nlerning_rate = 0.1\n'
        "[gate]\nalpha = -0.5\n"
        '[targeted]\nstrategies = ["retreival"]\n[targeted.teacher]\nmodel = "m"\n'
        'api_key = "sk-secret"\n'
        "[cycle]\narena = 1\n"))
    with pytest.raises(ConfigError) as err:
        load_task(toml)
    message = str(err.value)
    expected = [
        "colour: unknown key (known: name, description, train, dev, test, dev_fraction, "
        "instruction, system_prompt, prompts, answer, labels)",
        "[generation] batch_size: must be >= 1, got 0",
        "[training] rank: must be an integer, got 'eight'",
        "[training] lerning_rate: unknown key (did you mean 'learning_rate'?)",
        "[gate] alpha: must be >= 0.0, got -0.5",
        "[targeted] strategies[0]: must be one of 'corrections', 'retrieval', 'generator' or "
        "'teacher', got 'retreival' (did you mean 'retrieval'?)",
        "[targeted.teacher] api_key: not allowed",
        "[cycle] arena: must be true or false, got 1",
    ]
    assert message.startswith(f"{len(expected)} problem(s) in the task settings: ")
    for line in expected:
        assert f"{toml}: {line}" in message
    assert "sk-secret" not in message and "\n" not in message
    assert "pydantic" not in message.lower() and "errors.pydantic.dev" not in message


def test_settings_are_checked_before_any_model_is_resolved(tmp_path, capsys):
    toml = write_task(tmp_path, ROWS, "[training]\nrank = 0\n")
    code = main(["eval", "--task", str(toml), "--workspace", str(tmp_path / "ws"),
                 "--model", "no-such-model"])
    err = capsys.readouterr().err
    assert code == 2 and "[training] rank: must be >= 1" in err and "no-such-model" not in err
    assert not (tmp_path / "ws").exists()  # the store was never opened


def test_defaults_are_the_ones_the_stages_always_used(tmp_path):
    from evals.benchmark_tasks import DEFAULT_TASKS
    from loop.models.loading import DEFAULT_MODEL
    from loop.targeted.curate import CurateConfig
    from loop.targeted.inputs import CURATE_KEYS
    from loop.targeted.strategies import STRATEGIES

    s = load_task(write_task(tmp_path, ROWS, name="plain")).settings
    assert (s.name, s.dev_fraction, s.system_prompt, s.suite, s.benchmarks) == (
        "plain", 0.1, None, None, None)
    assert s.generation.model_dump() == {"max_new_tokens": 64, "batch_size": 16, "processes": 1,
                                         "backend": "auto", "shots": 0,
                                         "shot_selection": "random", "shot_seed": 0}
    assert s.training.model_dump() == {
        "rank": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": "all-linear",
        "learning_rate": 1e-3, "epochs": 2.0, "max_steps": None, "batch_size": 16,
        "grad_accum": 1, "micro_batch_tokens": 2048, "max_seq_len": 1024, "seed": 0,
        "save_steps": 50, "log_steps": 5, "patience": 3, "gradient_checkpointing": False,
        "share_prefix": True, "qlora": False, "bf16": "auto", "method": "sft", "search": True,
        "dpo_beta": 0.1,
        "dpo_learning_rate": 5e-5, "grpo_num_generations": 4, "grpo_beta": 0.04,
        "grpo_learning_rate": 5e-5, "grpo_max_completion_length": None,
        "grpo_temperature": 1.0, "grpo_prompts": 64, "processes": 1, "strategy": "ddp",
        "report_to": ()}
    # a run's id hashes what changes the weights: one process and DDP hash as before they
    # existed, and an SFT run leaves GRPO's knobs out (its id is the one before they existed)
    grpo_keys = {k for k in s.training.as_dict() if k.startswith("grpo_")}
    assert set(s.training.as_dict()) - set(s.training.identity()) == {
        "processes", "strategy", "report_to", "search", *grpo_keys}
    grpo = s.training.model_copy(update={"method": "sft+grpo"})
    assert grpo_keys <= set(grpo.identity())
    assert s.gate.model_dump() == {"min_gain": 0.02, "alpha": 0.05, "power": 0.95,
                                   "category_tolerance": 0.05, "benchmark_tolerance": 0.05,
                                   "pooled_tolerance": 0.03, "logprob_tolerance": None,
                                   "cannot_tell": "keep_if_small_gain", "small_gain": 0.05,
                                   "require_rating": True}
    assert s.cycle.model_dump() == {"base_model": DEFAULT_MODEL, "seed": 0, "benchmarks": True,
                                    "arena": True, "max_minutes": 15.0, "tokens_per_s": None,
                                    "prompt_shots": 4}
    assert s.targeted.pool == "auto"
    t = s.targeted
    assert (t.strategies, t.n, t.seed, t.generator, t.replay_share, t.loss_weight,
            t.benchmark_data, t.teacher) == (("corrections", "retrieval"), 200, 0, None, 0.2,
                                             0.0, None, None)
    assert {k: getattr(t, k) for k in CURATE_KEYS} == {
        k: getattr(CurateConfig(), k) for k in CURATE_KEYS}
    assert TeacherSettings(model="m").model_dump() == {
        "model": "m", "base_url": None, "api_key_env": None, "per_prompt": 3,
        "max_new_tokens": 512, "temperature": 0.7, "timeout_s": 120.0, "concurrency": 4}
    assert DEFAULT_BENCHMARK_TASKS == DEFAULT_TASKS
    assert set(STRATEGY_NAMES) == set(STRATEGIES)


def test_relative_paths_resolve_against_the_toml_and_derived_values(tmp_path):
    (tmp_path / "bench").mkdir()
    toml = write_task(tmp_path / "task", ROWS, (
        '[targeted]\ngenerator = "demo"\nbenchmark_data = "../bench"\n'
        '[benchmarks]\ndata_dir = "../bench"\n[training]\nrank = 4\nmax_steps = 9\n'))
    s = load_task(toml).settings
    assert s.path == toml.resolve() and s.test == (tmp_path / "task" / "test.jsonl").resolve()
    assert s.targeted.benchmark_data == s.benchmarks.data_dir == (tmp_path / "bench").resolve()
    assert s.targeted.strategies == ("corrections", "retrieval", "generator")
    assert (s.training.alpha, s.training.epochs) == (8.0, None)
    raw = tomllib.loads(toml.read_text())
    assert s.tables == {k: v for k, v in raw.items() if isinstance(v, dict)}  # cycle identity
    assert set(s.tables) == {"targeted", "benchmarks", "training"}
    assert with_overrides(s, "targeted", n=7).n == 7
    assert with_overrides(s, "targeted", n=7).benchmark_data == s.targeted.benchmark_data
    with pytest.raises(ConfigError, match=r"\[targeted\] strategies: strategy 'teacher' needs"):
        with_overrides(s, "targeted", strategies=["teacher"])


def test_ranks_must_divide_the_batch_and_qlora_needs_ddp(tmp_path):
    toml = write_task(tmp_path, ROWS, '[training]\nprocesses = 3\nbatch_size = 8\nqlora = true\n'
                                      'strategy = "fsdp"\n[generation]\nprocesses = 0\n')
    with pytest.raises(ConfigError) as err:
        load_task(toml)
    message = str(err.value)
    assert message.startswith("3 problem(s)")
    assert f"{toml}: [training] processes: batch_size must be a multiple of processes" in message
    assert f'{toml}: [training] strategy: qlora = true runs with strategy = "ddp" only' in message
    assert f"{toml}: [generation] processes: must be >= 1, got 0" in message
    ok = load_task(write_task(tmp_path / "ok", ROWS, "[training]\nbatch_size = 8\n")).settings
    assert with_overrides(ok, "training", processes=4).processes == 4  # `--processes 4`
    with pytest.raises(ConfigError, match="batch_size must be a multiple of processes"):
        with_overrides(ok, "training", processes=3)
    assert ok.training.model_copy(update={"strategy": "fsdp"}).identity()["strategy"] == "fsdp"


def test_settings_are_frozen():
    s = TaskSettings(test=Path("/x/test.jsonl"))
    with pytest.raises(Exception):
        s.training.rank = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------- the schema

def test_schema_is_valid_covers_every_section_and_accepts_the_shipped_tasks(tmp_path, capsys):
    schema = json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert set(schema["properties"]) == set(TaskSettings.model_fields)
    sections = {"generation": "GenerationSettings", "suite": "SuiteSettings",
                "training": "TrainingSettings", "targeted": "TargetedSettings",
                "gate": "GateSettings", "benchmarks": "BenchmarksSettings",
                "cycle": "CycleSettings"}
    for section, definition in sections.items():
        model = TaskSettings.model_fields[section].annotation
        model = next(a for a in (model, *getattr(model, "__args__", ())) if
                     getattr(a, "__name__", "") == definition)
        assert set(schema["definitions"][definition]["properties"]) == set(model.model_fields)
        assert schema["definitions"][definition]["additionalProperties"] is False
    assert "TeacherSettings" in schema["definitions"]
    validator = jsonschema.Draft7Validator(schema)
    shipped = [DEMO_TASK, *REAL_TASKS]
    assert len(shipped) >= 2
    for path in shipped:
        document = tomllib.loads(Path(path).read_text())
        assert not list(validator.iter_errors(document)), path
        load_settings(path)  # and the settings agree
    bad = {"test": "t.jsonl", "training": {"rank": 0, "lerning_rate": 1}, "wat": {}}
    assert len(list(validator.iter_errors(bad))) == 3
    out = tmp_path / "task.schema.json"
    assert main(["schema", "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == schema
    capsys.readouterr()
    assert main(["schema"]) == 0 and json.loads(capsys.readouterr().out) == schema


# ---------------------------------------------------------------------------- stage results

def _summary(run_id: str, outcomes: dict | None = None) -> dict:
    data = {"run_id": run_id, "task": "t", "model": "tiny-random", "model_id": "m1",
            "split": "test", "n": 2, "generated": 2, "reused": 0, "pass_rate": 0.5,
            "per_category": {"a": {"n": 2, "pass_rate": 0.5}}, "per_check": {"exact_match": 0.5},
            "mean_similarity": 0.7, "failure_categories": {"wrong_answer": 1}, "n_clusters": 1,
            "suite_version": "default-1", "check_versions": {"exact_match": "1"}}
    return data if outcomes is None else {**data, "outcomes": outcomes}


def test_a_summary_stored_before_check_versions_still_resumes():
    from loop.evaluation.evaluate import EvalSummary

    old = {k: v for k, v in _summary("r").items() if k != "check_versions"}
    assert EvalSummary.from_json(old).versions() == {"__suite__": "default-1"}


# what the dict-returning stages stored before (a store written by the old code must resume)
STORED = {
    "eval_champion_dev": {"run_id": "r-dev", "summary": _summary("r-dev")},
    "failures": {"run_id": "r-dev", "n_items": 2, "n_failures": 1,
                 "categories": [{"category": "wrong_answer", "count": 1, "share": 0.5,
                                 "examples": ["e1"]}],
                 "signatures": [{"signature": "label:a->b", "count": 1, "share": 0.5,
                                 "examples": ["e1"]}],
                 "clusters": [{"cluster_id": "c1", "label": "wrong answer", "size": 1,
                               "share": 0.5, "example_ids": ["e1"], "examples": ["e1"]}]},
    "targeted": {"batch_id": "b", "task": "t", "run_id": "r-dev", "model_id": "m1",
                 "requested": 10, "accepted": 8, "replay": 2,
                 "by_strategy": {"retrieval": {"accepted": 8, "rejected": 1}},
                 "by_cluster": {"c1": {"label": "x", "failures": 1, "accepted": 8}},
                 "rejected": {"duplicate": 1}, "dataset_path": "/d.jsonl",
                 "manifest_path": "/m.json", "manifest_hash": "h", "data_hash": "dh",
                 "cached": False, "rejected_share": {"duplicate": 0.1},
                 "answer_distribution": None, "pool_rows": 5,
                 "plan": {"mode": "whole_pool", "rows": 5, "epochs": 2.0, "pool_rows": 5}},
    "train": {"method": "sft+dpo", "sft_adapter_dir": "/a/sft",
              "pairs": {"dataset_path": "/p.jsonl", "manifest_path": "/p.json",
                        "manifest_hash": "ph", "n_pairs": 0, "counts": {}},
              "dpo_skipped": "no preference pairs after exclusions (see pairs.counts)",
              "train_id": "tr", "adapter_dir": "/a/sft", "candidate_name": "tiny-random+/a/sft",
              "model_id": "m2", "steps": 12, "train_loss": 1.5, "best_eval_loss": None,
              "tokens_per_s": 900.0, "elapsed_s": 3.5},
    "eval_candidate": {"candidate_dev": _summary("r1", {"e1": True}),
                       "candidate_test": _summary("r2", {"t1": True, "t2": False}),
                       "champion_test": _summary("r3", {"t1": False, "t2": False})},
    "prompt_arm": {"shots": 4, "selection": "random", "zero_shot": _summary("r4"),
                   "k_shot": {**_summary("r5"), "prompt": "4-shot random (seed 0)"}, "n": 2,
                   "candidate_pass_rate": 0.5, "difference": 0.0, "interval": [-0.98, 0.98],
                   "p_value": 1.0, "prompting_matches": True,
                   "per_category": {"a": {"n": 2, "zero_shot": 0.5, "k_shot": 0.5,
                                          "candidate": 0.5}},
                   "note": "4-shot prompting of the champion matches the candidate within noise "
                           "(dev: zero-shot 50.0%, 4-shot random 50.0%, candidate 50.0%; "
                           "candidate - 4-shot +0.0% [-98.0%, +98.0%], McNemar p = 1 on 2 "
                           "items): a fine-tune is not needed for this."},
    "arena": {"judged": 2, "new_matches": 2, "judge": "reference", "errors": 0,
              "ratings": {"tiny-random": 990.0}, "leaderboard": [{"model": "tiny-random",
                                                                  "rating": 990.0}],
              "plot": None},
    "benchmarks": {"limit": 40, "items": {"arc_easy": 40}, "deltas": {"arc_easy/acc": -0.01},
                   "delta_se": {"arc_easy/acc": 0.02}, "champion": {"arc_easy/acc": 0.4},
                   "candidate": {"arc_easy/acc": 0.39}},
    "gate": {"promote": False, "p_value": 0.5, "champion_pass_rate": 0.0,
             "candidate_pass_rate": 0.5,
             "reasons": [{"check": "gain", "passed": True, "detail": "0% -> 50%"}]},
    "report": {"path": "/r/report.html"},
}
SKIPPED = {"arena": {"skipped": True},
           "prompt_arm": {"skipped": True, "reason": "[cycle] prompt_shots = 0"},
           "benchmarks": {"skipped": True, "deltas": {}, "reason": "no [benchmarks] section"},
           "train": {"method": "sft", "sft_adapter_dir": "/a", "train_id": "tr",
                     "adapter_dir": "/a", "candidate_name": "b+/a", "model_id": "m",
                     "steps": 1, "train_loss": None, "best_eval_loss": None,
                     "tokens_per_s": 1.0, "elapsed_s": 1.0}}


@pytest.mark.parametrize("stage, data", [*STORED.items(), *SKIPPED.items()],
                         ids=[*STORED, *(f"{k}-other" for k in SKIPPED)])
def test_a_resumed_stage_result_round_trips_in_the_stored_format(stage, data):
    from loop.cycle.results import RESULT_TYPES

    stored = json.loads(json.dumps(data))  # what runstate reads back
    record = RESULT_TYPES[stage].from_json(stored)
    assert json.loads(json.dumps(record.to_json(), default=str)) == data
    assert RESULT_TYPES[stage].from_json(record.to_json()) == record


def test_stages_are_read_by_attribute_after_resume():
    from loop.cycle.results import RESULT_TYPES, CycleResults
    from loop.cycle.run import STAGES

    results = CycleResults()
    assert [s.__name__ for s in STAGES] == [f.name for f in fields(CycleResults)] \
        == list(RESULT_TYPES)
    for stage, data in STORED.items():
        setattr(results, stage, RESULT_TYPES[stage].from_json(json.loads(json.dumps(data))))
    assert results.eval_candidate.champion_test.outcomes == {"t1": False, "t2": False}
    assert results.train.candidate_name == "tiny-random+/a/sft"
    assert results.train.pairs.n_pairs == 0 and results.gate.reasons[0].check == "gain"
    assert results.arena.ratings["tiny-random"] == 990.0
    assert results.benchmarks.delta_se == {"arc_easy/acc": 0.02}
