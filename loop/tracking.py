"""Experiment tracking: each training run, evaluation and cycle becomes an MLflow run.

    [tracking]             # task TOML, optional
    enabled = true         # false: log nothing
    uri = "http://host:5000"   # $MLFLOW_TRACKING_URI wins; neither: sqlite:///WS/mlflow.db

The experiment is the task's name. A training run has the TrainConfig, base model and dataset
hash as params, loss / eval_loss / learning rate / tokens/s per logged step and the final
tokens/s and peak memory as metrics, and the adapter, train_result.json and train_log.jsonl as
artifacts. An evaluation has the pass rate overall, per category and per check. A cycle is a
parent run (tag `evalloop.cycle_id`) with the gate decision, pass-rate and benchmark deltas and
the report folder; the runs of its stages are nested under it (`mlflow.parentRunId`) and carry
the same tag. The local default keeps artifacts in WS/mlartifacts; `mlflow ui
--backend-store-uri sqlite:///$PWD/WS/mlflow.db` shows it all. What each run holds is built,
purely, in loop/tracking_records.py; this module writes it.

Tracking never fails a stage: an error becomes one warning and the stage goes on. mlflow is the
optional extra `tracking` (mlflow-skinny, plus sqlalchemy and alembic for the sqlite store);
without it one warning says tracking is off.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path

from loop.core.settings import TrackingSettings as TrackingConfig
from loop.tracking_records import RunRecord, cycle_record, evaluation_record, training_record

log = logging.getLogger(__name__)

DB_FILE, ARTIFACT_DIR = "mlflow.db", "mlartifacts"
MAX_ADAPTER_MB = 500  # a larger adapter is not copied into the store: its path is a tag
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")
RUN_FILES = ("train_result.json", "train_log.jsonl")
SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")  # they pick artifact roots
PARENT_TAG, CYCLE_TAG, KIND_TAG = "mlflow.parentRunId", "evalloop.cycle_id", "evalloop.kind"


@dataclass(frozen=True)
class _Parent:
    """The cycle run that stage runs are nested under, while a cycle stage runs."""

    uri: str
    experiment_id: str
    run_id: str
    cycle_id: str
    stage: str


_parent: ContextVar[_Parent | None] = ContextVar("evalloop_tracking_parent", default=None)


# ---------------------------------------------------------------------------- settings

def tracking_uri(config: TrackingConfig, workspace: str | Path) -> str:
    """$MLFLOW_TRACKING_URI, else [tracking] uri, else a sqlite file in the workspace."""
    return (os.environ.get("MLFLOW_TRACKING_URI") or config.uri
            or f"sqlite:///{Path(workspace).resolve() / DB_FILE}")


def artifact_location(uri: str, workspace: str | Path) -> str | None:
    """Where a new experiment keeps artifacts: the workspace, unless a server decides."""
    if uri.split(":", 1)[0].lower() in SERVER_SCHEMES:
        return None
    return (Path(workspace).resolve() / ARTIFACT_DIR).as_uri()


# ---------------------------------------------------------------------------- MLflow I/O

def _never_fails(fn):
    """Tracking is a side channel: its errors are a warning, never the stage's failure."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any tracking error; the stage must go on
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning("experiment tracking failed in %s (%s: %s); the stage goes on without "
                        "it. Check [tracking] uri or MLFLOW_TRACKING_URI, or set [tracking] "
                        "enabled = false.", fn.__name__, type(exc).__name__, first[:300])
            return None

    return wrapper


@functools.cache
def _mlflow_missing() -> bool:
    import importlib.util

    missing = importlib.util.find_spec("mlflow") is None
    if missing:
        log.warning("experiment tracking is off: mlflow is not installed (pip install "
                    "'evalloop[tracking]'; or set [tracking] enabled = false to silence this).")
    return missing


def _client(config: TrackingConfig, workspace, experiment: str):
    """(MlflowClient, experiment id, uri), or None when tracking is off."""
    if not config.enabled or _mlflow_missing():
        return None
    uri = tracking_uri(config, workspace)
    if uri.split(":", 1)[0].lower() in ("http", "https"):
        # MLflow's defaults retry a dead server for minutes; tracking must not hold a stage up
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.tracking import MlflowClient

    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # not --verbose
        # mlflow sets INFO on import, and logs a traceback for a store error that the one
        # warning of `_never_fails` already reports
        logging.getLogger("mlflow").setLevel(logging.CRITICAL)
    _new_sqlite_store(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            # the kind tag opens `mlflow ui` on its runs table rather than its GenAI pages
            return client, client.create_experiment(
                experiment, artifact_location=artifact_location(uri, workspace),
                tags={"mlflow.experimentKind": "custom_model_development"}), uri
        except Exception:  # another process created it meanwhile
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return client, found.experiment_id, uri


def _new_sqlite_store(uri: str) -> None:
    """Give a sqlite store that does not exist yet a copy of an empty one, migrated once per
    machine and MLflow version: MLflow runs its whole chain of schema migrations on every new
    database, 8-12 s per workspace measured here, against milliseconds for the copy."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return
    path = Path(uri[len("sqlite:///"):])
    if path.exists():
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    from loop.core.cache import atomic_path, cache_dir

    template = cache_dir() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    if not template.is_file():
        template.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(template) as tmp:
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()  # creates, migrates
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, tmp)
        os.link(tmp, path)  # never replaces a store another process has just created
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _write_run(client, experiment_id: str, record: RunRecord, parent: _Parent | None,
               artifacts: tuple[tuple[Path, str | None], ...] = (),
               status: str = "FINISHED") -> str:
    """Create the run, log params, metrics and artifacts (path, folder in the run), end it."""
    from mlflow.entities import Metric, Param

    tags = {KIND_TAG: record.kind, **record.tags}
    if parent is not None:
        tags.update({PARENT_TAG: parent.run_id, CYCLE_TAG: parent.cycle_id,
                     "evalloop.cycle_stage": parent.stage})
    run_id = client.create_run(experiment_id, start_time=record.start_ms, tags=tags,
                               run_name=record.name).info.run_id
    try:
        params = [Param(k, v) for k, v in record.params.items()]
        now_ms = int(time.time() * 1000)
        metrics = [Metric(k, v, now_ms, step) for k, v, step in record.metrics]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params ...
            client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):  # ... and 1000 metrics per call
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for path, folder in artifacts:
            if path.is_dir():
                client.log_artifacts(run_id, str(path), folder)
            elif path.is_file():
                client.log_artifact(run_id, str(path), folder)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def _parent_for(uri: str, experiment_id: str) -> _Parent | None:
    parent = _parent.get()
    return parent if parent and (parent.uri, parent.experiment_id) == (uri, experiment_id) \
        else None


# ---------------------------------------------------------------------------- hooks

@_never_fails
def log_training(workspace, task, result, dataset_hash: str, model_id: str,
                 stage: str = "sft") -> str | None:
    """One run per training stage (loop/train/sft.py, dpo.py); -> MLflow run id."""
    opened = _client(task.settings.tracking, workspace, task.name)
    if opened is None:
        return None
    client, experiment_id, uri = opened
    record = training_record(result, dataset_hash, model_id, stage)
    adapter = Path(result.adapter_dir)
    weights = adapter / "adapter_model.safetensors"
    artifacts = [(adapter / name, None) for name in RUN_FILES]
    if weights.is_file() and weights.stat().st_size <= MAX_ADAPTER_MB * 2**20:
        artifacts += [(adapter / name, "adapter") for name in ADAPTER_FILES]
    else:  # the path alone (tagged as evalloop.adapter_dir) says where it is
        record = replace(record, tags={**record.tags, "evalloop.adapter_not_copied":
                                       f"larger than {MAX_ADAPTER_MB} MB"})
    return _write_run(client, experiment_id, record, _parent_for(uri, experiment_id),
                      tuple(artifacts))


@_never_fails
def log_evaluation(workspace, task, summary) -> str | None:
    """One run per evaluation (loop/evaluation/evaluate.py); -> MLflow run id."""
    opened = _client(task.settings.tracking, workspace, task.name)
    if opened is None:
        return None
    client, experiment_id, uri = opened
    return _write_run(client, experiment_id, evaluation_record(summary),
                      _parent_for(uri, experiment_id))


def _find_cycle_run(client, experiment_id: str, cycle_id: str):
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{CYCLE_TAG}` = '{cycle_id}' AND tags.`{KIND_TAG}` = 'cycle'"), max_results=1)
    return runs[0] if runs else None


@_never_fails
def _open_cycle_run(workspace, task, cycle_id: str, stage: str) -> _Parent | None:
    """The cycle's parent run, created at its first stage and found again on resume."""
    opened = _client(task.settings.tracking, workspace, task.name)
    if opened is None:
        return None
    client, experiment_id, uri = opened
    found = _find_cycle_run(client, experiment_id, cycle_id.replace("'", ""))
    if found is None:
        run_id = _write_run(client, experiment_id, RunRecord(
            f"cycle {cycle_id}", "cycle", tags={CYCLE_TAG: cycle_id}), None, status="RUNNING")
    else:
        run_id = found.info.run_id
        if found.info.status != "RUNNING":  # a failed or killed attempt resumes here
            client.update_run(run_id, status="RUNNING")
    return _Parent(uri, experiment_id, run_id, cycle_id, stage)


@contextmanager
def cycle_stage(workspace, task, cycle_id: str, stage: str) -> Iterator[None]:
    """Runs logged inside nest under the cycle's run (loop/cycle/run.py wraps each stage)."""
    parent = _open_cycle_run(workspace, task, cycle_id, stage)
    token = _parent.set(parent) if parent is not None else None
    try:
        yield
    finally:
        if token is not None:
            _parent.reset(token)


@_never_fails
def finish_cycle(workspace, task, summary: dict) -> str | None:
    """Log the gate decision, deltas and report on the cycle's run and end it."""
    opened = _client(task.settings.tracking, workspace, task.name)
    if opened is None:
        return None
    client, experiment_id, _ = opened
    found = _find_cycle_run(client, experiment_id, summary["cycle_id"].replace("'", ""))
    if found is None or found.info.status == "FINISHED":
        return None  # finished before (or without) tracking: nothing to add
    from mlflow.entities import Metric

    record, run_id = cycle_record(summary), found.info.run_id
    now_ms = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now_ms, s) for k, v, s in record.metrics],
                     tags=[_tag(k, v) for k, v in record.tags.items()])
    report = Path(summary["report"]).parent
    if report.is_dir():
        client.log_artifacts(run_id, str(report), "report")
    client.log_dict(run_id, summary, "summary.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _tag(key: str, value: str):
    from mlflow.entities import RunTag

    return RunTag(key, value[:5000])
