"""Experiment tracking (loop/tracking.py) read back with MLflow's own client, and the
[training] report_to pass-through to transformers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import classification_records, write_task
from loop.core.errors import ConfigError
from loop.data.tasks import load_task
from loop.store.db import Store

pytest.importorskip("mlflow", reason="the `tracking` extra is not installed")

from mlflow.tracking import MlflowClient

TRAINING = "[training]\nmax_steps = 4\nsave_steps = 2\nlog_steps = 1\nbatch_size = 4\nrank = 4\n" \
           "bf16 = false\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_task(root: Path, extra: str = "", name: str = "tiny") -> Path:
    return write_task(root, {"train": classification_records(16, 100),
                             "dev": classification_records(4, 200),
                             "test": classification_records(8)},
                      "[generation]\nmax_new_tokens = 4\nbatch_size = 8\n" + extra, name=name)


def runs(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


# ---------------------------------------------------------------------------- training

def test_evalloop_train_logs_params_step_metrics_and_the_adapter(tmp_path, monkeypatch):
    from loop.cli import main

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # wins over the workspace default
    task, ws = small_task(tmp_path / "task", TRAINING), tmp_path / "ws"
    assert main(["train", "--task", str(task), "--workspace", str(ws), "--model", "tiny-random",
                 "--json"]) == 0
    assert not (ws / "mlflow.db").exists()
    (run,) = runs(uri, "tiny")
    client = MlflowClient(tracking_uri=uri)
    with Store(ws) as store:
        row = store.query("SELECT train_id, model_id, dataset_hash, adapter_path "
                          "FROM training_runs")[0]
    params, tags = run.data.params, run.data.tags
    assert (params["rank"], params["max_steps"], params["base_model"]) == ("4", "4", "tiny-random")
    assert params["dataset_hash"] == row["dataset_hash"]
    assert (tags["evalloop.kind"], tags["evalloop.stage"]) == ("train", "sft")
    assert (tags["evalloop.train_id"], tags["evalloop.model_id"]) == (row["train_id"],
                                                                     row["model_id"])
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in sorted(losses, key=lambda m: m.step)] == [1, 2, 3, 4]
    assert run.data.metrics["final_tokens_per_s"] > 0 and run.data.metrics["peak_mem_mb"] > 0
    assert "eval_loss" in run.data.metrics  # the dev split is evaluated every save_steps
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "train_result.json", "train_log.jsonl"} <= files
    adapter = {f.path for f in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= adapter
    local = Path(client.download_artifacts(run.info.run_id, "train_result.json", str(tmp_path)))
    assert json.loads(local.read_text())["train_id"] == row["train_id"]
    assert (ws / "mlartifacts").is_dir()  # a local store keeps artifacts in the workspace


def test_tracking_disabled_writes_nothing(tmp_path, monkeypatch):
    from loop.train.sft import train_for_task

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    task = load_task(small_task(tmp_path / "task", TRAINING + "[tracking]\nenabled = false\n"))
    with Store(tmp_path / "ws") as store:
        train_for_task(store, task, tmp_path / "ws", model="tiny-random", progress=False)
    assert not (tmp_path / "env.db").exists()
    assert not {"mlflow.db", "mlartifacts"} & {p.name for p in (tmp_path / "ws").iterdir()}


def test_a_broken_tracking_uri_warns_and_training_still_finishes(tmp_path, caplog):
    from loop.train.sft import train_for_task

    (tmp_path / "a-file").write_text("not a directory")
    task = load_task(small_task(tmp_path / "task", TRAINING + "[tracking]\nuri = "
                                f"\"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}\"\n"))
    with caplog.at_level(logging.WARNING, logger="loop.tracking"), Store(tmp_path / "ws") as store:
        result = train_for_task(store, task, tmp_path / "ws", model="tiny-random", progress=False)
        assert store.count("training_runs") == 1
    assert result.steps_done == 4 and (Path(result.adapter_dir) / "adapter_config.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name == "loop.tracking"]
    assert len(warnings) == 1 and "experiment tracking failed in log_training" in warnings[0]


def test_without_mlflow_one_line_says_tracking_is_off(tmp_path, monkeypatch, caplog):
    import importlib.util

    from loop import tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    tracking._mlflow_missing.cache_clear()
    task = load_task(small_task(tmp_path / "task"))
    try:
        with caplog.at_level(logging.WARNING, logger="loop.tracking"):
            assert tracking.log_evaluation(tmp_path / "ws", task, object()) is None
            assert tracking.log_evaluation(tmp_path / "ws", task, object()) is None
    finally:
        tracking._mlflow_missing.cache_clear()
    lines = [r.getMessage() for r in caplog.records if r.name == "loop.tracking"]
    assert len(lines) == 1 and "pip install 'evalloop[tracking]'" in lines[0]
    assert not (tmp_path / "ws").exists()


# ---------------------------------------------------------------------------- evaluation

def test_evaluation_run_holds_the_stored_pass_rates(tmp_path):
    from loop.evaluation.evaluate import evaluate

    task = load_task(small_task(tmp_path / "task"))
    with Store(tmp_path / "ws") as store:
        summary = evaluate(store, task, "tiny-random", "test", progress=False)
    (run,) = runs(f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}", "tiny")
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics["pass_rate"] == summary.pass_rate
    assert {k: v for k, v in metrics.items() if k.startswith("pass_rate/")} == {
        f"pass_rate/{c}": row["pass_rate"] for c, row in summary.per_category.items()}
    assert (tags["evalloop.run_id"], run.data.params["model_id"]) == (summary.run_id,
                                                                      summary.model_id)
    assert "mlflow.parentRunId" not in tags and "evalloop.cycle_id" not in tags

    with Store(tmp_path / "ws") as store:  # a second evaluation joins the same store
        again = evaluate(store, task, "tiny-random", "test", progress=False)
    assert again.reused == again.n and len(runs(f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}",
                                                "tiny")) == 2


# ---------------------------------------------------------------------------- cycle

def test_cycle_is_a_parent_run_with_its_stage_runs_nested(tmp_path):
    from loop.cycle.run import run_cycle

    task = small_task(tmp_path / "task", TRAINING + "[cycle]\nbase_model = \"tiny-random\"\n"
                      "benchmarks = false\narena = false\n[targeted]\nn = 8\n")
    summary = run_cycle(task, tmp_path / "ws", progress=False)
    uri = f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    all_runs = runs(uri, "tiny")
    (parent,) = [r for r in all_runs if r.data.tags["evalloop.kind"] == "cycle"]
    assert parent.data.tags["evalloop.cycle_id"] == summary["cycle_id"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["evalloop.gate"] == ("promoted" if summary["gate"]["promote"]
                                                 else "kept")
    assert parent.data.metrics["candidate_test_pass_rate"] == \
        summary["candidate"]["test"]["pass_rate"]
    assert "report/report.md" in {f.path for f in client.list_artifacts(parent.info.run_id,
                                                                        "report")}
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId")
                == parent.info.run_id]
    assert all(r.data.tags["evalloop.cycle_id"] == summary["cycle_id"] for r in children)
    stages = sorted((r.data.tags["evalloop.cycle_stage"], r.data.tags["evalloop.kind"])
                    for r in children)
    from loop.store import cycles
    from loop.store.db import Store

    with Store(tmp_path / "ws") as store:
        trials = len(cycles.stage_result(store, summary["cycle_id"], "train")["search"])
    assert trials >= 1  # the recipe search: a training and a dev evaluation per trial
    dev_evals = [("train", "eval")] * trials if trials > 1 else []
    # the prompt arm scores the champion on dev k-shot (its zero-shot side is the first dev run)
    assert stages == [("eval_candidate", "eval")] * 3 + [("eval_champion_dev", "eval")] + \
        [("prompt_arm", "eval")] + dev_evals + [("train", "train")] * trials
    assert len(all_runs) == 1 + len(children)

    again = run_cycle(task, tmp_path / "ws", progress=False)  # finished: nothing new logged
    assert again["already_finished"] and len(runs(uri, "tiny")) == len(all_runs)


# ---------------------------------------------------------------------------- settings

def test_tracking_section_is_validated_with_the_task(tmp_path):
    bad = small_task(tmp_path / "t", "[tracking]\nenabled = \"yes\"\nurl = \"x\"\n")
    with pytest.raises(ConfigError) as err:
        load_task(bad)
    assert "[tracking] enabled:" in str(err.value)
    assert "[tracking] url:" in str(err.value)


def test_uri_precedence_env_then_setting_then_workspace(tmp_path, monkeypatch):
    from loop.core.settings import TrackingSettings as TrackingConfig
    from loop.tracking import artifact_location, tracking_uri

    assert tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_uri(TrackingConfig(uri="http://h:5000"), tmp_path) == "http://h:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x.db")
    assert tracking_uri(TrackingConfig(uri="http://h:5000"), tmp_path) == "sqlite:////x.db"
    assert artifact_location("http://h:5000", tmp_path) is None
    assert artifact_location("sqlite:////x.db", tmp_path) == (tmp_path / "mlartifacts").as_uri()


# ---------------------------------------------------------------------------- report_to

def test_report_to_names_are_transformers_integrations():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from loop.core.settings_training import REPORT_TO_MODULES

    assert set(REPORT_TO_MODULES) == set(INTEGRATION_TO_CALLBACK)


def test_report_to_unknown_or_missing_integrations_are_config_errors():
    import importlib.util

    from pydantic import ValidationError

    from loop.train.config import TrainConfig

    with pytest.raises(ValidationError, match=r"unknown integration 'tensorbord' \(did you mean "
                                              r"'tensorboard'\?\)"):
        TrainConfig.model_validate({"report_to": ["tensorbord"]})
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ValidationError, match=r"'wandb' is not installed \(pip install wandb"):
            TrainConfig.model_validate({"report_to": ["wandb"]})
    with pytest.raises(ValidationError, match="report_to"):
        TrainConfig.model_validate({"report_to": [1]})
    assert TrainConfig.model_validate({"report_to": "none"}).report_to == ()


def test_report_to_reaches_the_trainer_and_leaves_the_train_id_alone(tmp_path, monkeypatch):
    """report_to = ["mlflow"]: transformers' own MLflowCallback logs the Trainer's steps."""
    from loop.core.records import Example
    from loop.train.config import TrainConfig
    from loop.train.sft import train_adapter, train_id_for

    data = [Example(Example.make_id(r["instruction"], r["input"], r["output"]), r["instruction"],
                    r["output"],
                    input=r["input"], category=r["category"])
            for r in classification_records(8)]
    plain = TrainConfig(max_steps=2, epochs=None, batch_size=4, save_steps=2, log_steps=1,
                        bf16=False, rank=4)
    config = plain.model_copy(update={"report_to": TrainConfig.model_validate(
        {"report_to": ["mlflow"]}).report_to})
    assert train_id_for("b", None, data, (), config, None) == \
        train_id_for("b", None, data, (), plain, None)
    uri = f"sqlite:///{tmp_path / 'hf.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf-callback")
    train_adapter("tiny-random", data, tmp_path / "out", config, progress=False)
    (run,) = runs(uri, "hf-callback")
    assert run.data.params["report_to"] == "['mlflow']"  # the Trainer's own arguments
    assert "train_loss" in run.data.metrics or "loss" in run.data.metrics
