"""What a finished training run leaves behind: its lineage in the store, a merged checkpoint on
request, and a human-readable summary. (Training itself is loop/train/sft.py.)

    model_id = record_training(store, result, task_id="demo", dataset_hash=manifest_hash)
    export_merged("smollm2-135m-instruct+ws/adapters/abc", "merged/")   # evalloop export --merge
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from loop.core.errors import EvalloopError
from loop.models.loading import ModelSpec, fingerprint, load_model, parse_model_name
from loop.train.config import TrainResult

RESULT_FILE = "train_result.json"  # written by loop.train next to the adapter


class TrainingError(EvalloopError):
    """Training cannot start or cannot finish (bad inputs, out of memory, foreign output dir)."""


def record_training(store, result: TrainResult, task_id: str | None, dataset_hash: str) -> str:
    """Write the run, its log rows and the new model (with its parent) to the store; -> model id."""
    from loop.store.db import now
    from loop.store.rows import TrainingRunRow, TrainLogRow, write

    trained = parse_model_name(result.base).with_adapter(result.adapter_dir)
    model_id = fingerprint(trained)
    parent_id = (fingerprint(trained.with_adapter(result.parent_adapter))
                 if result.parent_adapter else result.base_model_id)
    run = TrainingRunRow(
        train_id=result.train_id, task_id=task_id, base=result.base,
        base_model_id=result.base_model_id, parent_adapter=result.parent_adapter,
        adapter_path=result.adapter_dir, model_id=model_id, dataset_hash=dataset_hash,
        config=result.config.as_dict(), seed=result.config.seed,
        status="stopped_early" if result.stopped_early else "done",
        total_steps=result.total_steps, steps_done=result.steps_done,
        resumed_from_step=result.resumed_from_step, n_train=result.n_train,
        n_dev=result.n_dev, device=result.device, precision=result.precision,
        tokens_per_s=result.tokens_per_s, peak_mem_mb=result.peak_mem_mb,
        train_loss=result.train_loss, best_eval_loss=result.best_eval_loss,
        versions=result.versions, created_at=now(), finished_at=now())
    logs = [TrainLogRow(train_id=result.train_id, **row.to_json()) for row in result.logs]
    with store.transaction():
        store.put_model(model_id, trained.name, result.base,
                        adapter=result.adapter_dir, parent_id=parent_id,
                        meta={"train_id": result.train_id})
        write(store, [run], on_conflict="replace")
        write(store, logs, on_conflict="replace")
    return model_id


def export_merged(adapter_model_name: str, out_dir) -> Path:
    """Write BASE+ADAPTER (or an adapter dir trained here) as one merged safetensors checkpoint."""
    model: str | ModelSpec = adapter_model_name
    if "+" not in adapter_model_name:  # a bare adapter directory: its base is in its record
        record = Path(adapter_model_name).expanduser() / RESULT_FILE
        if not record.is_file():
            raise TrainingError(f"{adapter_model_name} is not an adapter trained by evalloop (no "
                                f"{RESULT_FILE}): pass BASE+ADAPTER_DIR instead.")
        model = parse_model_name(json.loads(record.read_text())["base"]).with_adapter(
            adapter_model_name)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise TrainingError(f"Export target {out} exists and is not empty.")
    lm = load_model(model, device="cpu")
    merged = lm.model.merge_and_unload()
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(tmp))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def format_result(result: TrainResult) -> str:
    lines = [f"adapter {result.adapter_dir}",
             f"base {result.base}" + (f" + parent {result.parent_adapter}" if result.parent_adapter
                                      else ""),
             f"{result.steps_done}/{result.total_steps} steps"
             + (f" (resumed at step {result.resumed_from_step})" if result.resumed_from_step
                else "")
             + (" (stopped early on dev loss)" if result.stopped_early else ""),
             f"{result.n_train} train / {result.n_dev} dev examples"
             + (f", {len(result.skipped)} skipped as too long" if result.skipped else ""),
             (f"{result.device} {result.precision}: {result.tokens_per_s:,.0f} tokens/s, "
              f"peak memory {result.peak_mem_mb:,.0f} MB"), "",
             f"{'step':>6}{'loss':>10}{'dev loss':>10}{'tokens/s':>10}"]
    for row in result.logs:
        cells = [(row.loss, "10.4f"), (row.eval_loss, "10.4f"), (row.tokens_per_s, "10,.0f")]
        lines.append(f"{row.step:>6}" + "".join(" " * 10 if value is None else format(value, spec)
                                                for value, spec in cells))
    return "\n".join(lines)
