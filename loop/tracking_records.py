"""What each MLflow run holds, built from evalloop's own records: a finished training run
(loop.train.config.TrainResult), an evaluation (loop.evaluation.evaluate.EvalSummary) and the end
of a cycle (loop.cycle.run.summarize). Pure: loop/tracking.py writes them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunRecord:
    """What one MLflow run holds, built from evalloop's own records (pure)."""

    name: str
    kind: str  # "train", "eval" or "cycle"
    params: dict[str, str] = field(default_factory=dict)
    metrics: tuple[tuple[str, float, int], ...] = ()  # (key, value, step)
    tags: dict[str, str] = field(default_factory=dict)
    start_ms: int | None = None



def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def metric_key(*parts: str) -> str:
    """MLflow allows letters, digits and _ - . space : / in metric names."""
    return "/".join(re.sub(r"[^\w\-. :]", "_", p) for p in parts)


def _short(model_name: str) -> str:
    base, _, adapter = model_name.partition("+")
    return f"{base}+{Path(adapter).name}" if adapter else base


def training_record(result, dataset_hash: str, model_id: str, stage: str) -> RunRecord:
    """A finished TrainResult (loop.train.config) as an MLflow run."""
    params = {k: _param(v) for k, v in result.config.as_dict().items()}
    params.update({"base_model": result.base, "base_model_id": result.base_model_id,
                   "parent_adapter": result.parent_adapter or "", "dataset_hash": dataset_hash,
                   "n_train": str(result.n_train), "n_dev": str(result.n_dev),
                   "total_steps": str(result.total_steps), "device": result.device,
                   "precision": result.precision})
    metrics = [(key, float(getattr(row, key)), row.step) for row in result.logs
               for key in ("loss", "eval_loss", "learning_rate", "tokens_per_s", "epoch", "reward")
               if getattr(row, key) is not None]
    final = {"final_tokens_per_s": result.tokens_per_s, "peak_mem_mb": result.peak_mem_mb,
             "train_loss": result.train_loss, "best_eval_loss": result.best_eval_loss,
             "steps_done": result.steps_done, "tokens": result.tokens,
             "elapsed_s": result.elapsed_s}
    metrics += [(k, float(v), result.steps_done) for k, v in final.items() if v is not None]
    tags = {"evalloop.stage": stage, "evalloop.train_id": result.train_id,
            "evalloop.model_id": model_id, "evalloop.adapter_dir": result.adapter_dir,
            "evalloop.stopped_early": str(result.stopped_early).lower(),
            **{f"evalloop.version.{k}": str(v) for k, v in result.versions.items()}}
    start = int((time.time() - result.elapsed_s) * 1000)
    return RunRecord(f"{stage} {result.train_id[:8]}", "train", params, tuple(metrics), tags,
                     start)


def evaluation_record(summary) -> RunRecord:
    """An EvalSummary (loop.evaluation.evaluate) as an MLflow run."""
    params = {"model": summary.model, "model_id": summary.model_id, "split": summary.split,
              "n": str(summary.n), "suite_version": summary.suite_version}
    metrics = [("pass_rate", summary.pass_rate), ("mean_similarity", summary.mean_similarity),
               ("generated", summary.generated), ("reused", summary.reused),
               ("n_clusters", summary.n_clusters)]
    metrics += [(metric_key("pass_rate", c), row["pass_rate"])
                for c, row in summary.per_category.items()]
    metrics += [(metric_key("check", c), rate) for c, rate in summary.per_check.items()]
    metrics += [(metric_key("failures", c), n) for c, n in summary.failure_categories.items()]
    tags = {"evalloop.run_id": summary.run_id, "evalloop.model_id": summary.model_id,
            "evalloop.split": summary.split}
    return RunRecord(f"eval {summary.split} {_short(summary.model)}", "eval", params,
                     tuple((k, float(v), 0) for k, v in metrics), tags)


def cycle_record(summary: dict) -> RunRecord:
    """The end of a cycle (loop.cycle.run.summarize): gate decision, deltas, pass rates."""
    champ, cand, gate = summary["champion"], summary["candidate"], summary["gate"]
    metrics = {"promote": float(gate["promote"]), "champion_test_pass_rate":
               champ["test"]["pass_rate"], "candidate_test_pass_rate": cand["test"]["pass_rate"],
               "delta_test_pass_rate": cand["test"]["pass_rate"] - champ["test"]["pass_rate"]}
    if gate.get("p_value") is not None:
        metrics["gate_p_value"] = gate["p_value"]
    for cat, after in cand["test"]["per_category"].items():
        before = champ["test"]["per_category"].get(cat)
        metrics[metric_key("candidate_pass_rate", cat)] = after
        if before is not None:
            metrics[metric_key("delta_pass_rate", cat)] = after - before
    for name, delta in summary.get("benchmark_deltas", {}).items():
        metrics[metric_key("benchmark_delta", name)] = delta
    for stage, row in summary.get("stage_times", {}).items():
        metrics[metric_key("stage_seconds", stage)] = row["seconds"]
    tags = {"evalloop.gate": "promoted" if gate["promote"] else "kept",
            "evalloop.candidate": cand["name"], "evalloop.candidate_model_id": cand["model_id"],
            "evalloop.gate_reasons": "; ".join(
                f"{'ok' if r['passed'] else 'NO'} {r['check']}" for r in gate["reasons"])}
    return RunRecord(f"cycle {summary['cycle_id']}", "cycle",
                     metrics=tuple((k, float(v), 0) for k, v in metrics.items()), tags=tags)
