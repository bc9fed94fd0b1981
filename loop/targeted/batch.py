"""A targeted batch's outputs and its record: the provenance rows (`generated_examples`, one per
candidate, accepted or rejected with why), the JSONL dataset of the accepted rows and its
manifest beside it, the `datasets` row, all written in one go (`write_batch`); the stored batch
read back when its parameters and file are unchanged (`stored_result`); `TargetedResult`, what
the targeted stage returns, and the CLI's table of it (`format_result`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from loop.core.cache import write_atomic
from loop.core.records import content_hash
from loop.data.tasks import Task
from loop.store import targeted as targeted_queries
from loop.store.db import Store, now
from loop.store.rows import DatasetRow, GeneratedExampleRow
from loop.targeted.answer_classes import answer_distribution, format_distribution
from loop.targeted.inputs import FailureSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetedResult:
    batch_id: str
    task: str
    run_id: str
    model_id: str
    requested: int
    accepted: int  # targeted examples kept (replay not included)
    replay: int
    by_strategy: dict[str, dict[str, int]]  # strategy -> {accepted, rejected}
    by_cluster: dict[str, dict]  # cluster -> {label, failures, accepted, by_strategy}
    rejected: dict[str, int]  # reason -> count
    dataset_path: str
    manifest_path: str
    manifest_hash: str
    data_hash: str
    cached: bool = False
    rejected_share: dict[str, float] | None = None  # reason -> share of all candidates
    answer_distribution: dict | None = None  # answer classes: pool vs failures vs data
    pool_rows: int = 0  # pool rows a cycle's plan added (loop.targeted.cycle_data)
    plan: dict | None = None  # that plan (loop.targeted.plan.PoolPlan + counts)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TargetedResult:
        return cls(**data)


def write_batch(store: Store, task: Task, failures: FailureSet, batch_id: str, out_dir: Path,
           params: dict, items, decisions) -> TargetedResult:
    """Provenance rows, the JSONL dataset and its manifest, then the `datasets` row; the batch's
    earlier rows (an interrupted or re-parametrised run) are replaced in one transaction."""
    created = now()
    rows = [GeneratedExampleRow(
        gen_id=key, batch_id=batch_id, task_id=task.name, strategy=c.strategy,
        cluster_id=c.cluster_id, failure_ids=list(c.failure_ids), source=c.source,
        example_id=c.example.id, instruction=c.example.instruction, input=c.example.input,
        output=c.example.output, category=c.example.category,
        status="accepted" if d.accepted else "rejected", reason=d.reason, detail=d.detail,
        created_at=created)
        for (key, c, _), d in zip(items, decisions)]
    kept = sorted((r for r in rows if r.status == "accepted"),
                  key=lambda r: r.strategy == "replay")  # stable: targeted first
    data = "".join(json.dumps({"id": r.gen_id, "instruction": r.instruction,
                               "input": r.input, "output": r.output,
                               "category": r.category}, ensure_ascii=False) + "\n"
                   for r in kept).encode("utf-8")
    manifest = _manifest(task, failures, batch_id, params, rows, hashlib.sha256(data).hexdigest())
    manifest["answer_distribution"] = dist = answer_distribution(
        task.answers, [e.output for e in task.splits.get("train", ())],
        [f.example.output for c in failures.clusters for f in c.failures],
        [r.output for r in kept])
    if dist["vanished"]:
        log.warning("targeted: answer classes common in the pool or the failures are (nearly) "
                    "absent from the training data: %s", ", ".join(dist["vanished"][:10]))
    manifest_hash = content_hash(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_path, manifest_path = out_dir / f"{batch_id}.jsonl", out_dir / f"{batch_id}.manifest.json"
    write_atomic(dataset_path, data)
    write_atomic(manifest_path, json.dumps({**manifest, "manifest_hash": manifest_hash,
                                             "created_at": created.isoformat()},
                                            indent=2, ensure_ascii=False).encode("utf-8"))
    targeted_queries.replace_batch(store, batch_id, rows, DatasetRow(
        manifest_hash=manifest_hash, batch_id=batch_id, task_id=task.name,
        path=str(dataset_path), counts={k: manifest[k] for k in COUNT_KEYS},
        created_at=created))
    return _result(manifest, manifest_hash, dataset_path, manifest_path, cached=False)


COUNT_KEYS = ("requested", "accepted", "replay", "by_strategy", "by_cluster", "rejected")


def _manifest(task: Task, failures: FailureSet, batch_id: str, params: dict,
              rows: list[GeneratedExampleRow], data_hash: str) -> dict:
    by_strategy: dict[str, Counter] = defaultdict(Counter)
    by_cluster: dict[str, dict] = {
        c.cluster_id: {"label": c.label, "failures": len(c.failures), "accepted": 0,
                       "by_strategy": {}} for c in failures.clusters}
    for r in rows:
        by_strategy[r.strategy][r.status] += 1
        if r.status == "accepted" and r.strategy != "replay":
            entry = by_cluster.setdefault(r.cluster_id, {"label": r.cluster_id,
                                                         "failures": 0, "accepted": 0,
                                                         "by_strategy": {}})
            entry["accepted"] += 1
            entry["by_strategy"][r.strategy] = entry["by_strategy"].get(r.strategy, 0) + 1
    accepted = sum(v["accepted"] for v in by_cluster.values())
    return {"batch_id": batch_id, "task": task.name, "run_id": failures.run_id,
            "model_id": failures.model_id, "params": params, "params_hash": content_hash(params),
            "data_hash": data_hash, "requested": params["n"], "accepted": accepted,
            "replay": by_strategy["replay"]["accepted"] if "replay" in by_strategy else 0,
            "by_strategy": {s: {"accepted": c["accepted"], "rejected": c["rejected"]}
                            for s, c in by_strategy.items()},
            "by_cluster": by_cluster,
            "rejected": dict(Counter(r.reason for r in rows if r.status == "rejected")
                             .most_common()),
            "rejected_share": {k: round(v / len(rows), 4) for k, v in Counter(
                r.reason for r in rows if r.status == "rejected").most_common()}}


def _result(manifest: dict, manifest_hash: str, dataset_path: Path, manifest_path: Path,
            cached: bool) -> TargetedResult:
    return TargetedResult(
        batch_id=manifest["batch_id"], task=manifest["task"], run_id=manifest["run_id"],
        model_id=manifest["model_id"], dataset_path=str(dataset_path),
        manifest_path=str(manifest_path), manifest_hash=manifest_hash,
        data_hash=manifest["data_hash"], cached=cached,
        rejected_share=manifest.get("rejected_share"),
        answer_distribution=manifest.get("answer_distribution"),
        **{k: manifest[k] for k in COUNT_KEYS})


def stored_result(store: Store, batch_id: str, params_hash: str) -> TargetedResult | None:
    """The batch's result when it finished with the same parameters and its file is intact."""
    row = targeted_queries.batch_dataset(store, batch_id)
    if row is None:
        return None
    dataset_path = Path(row["path"])
    manifest_path = dataset_path.with_name(f"{batch_id}.manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        data = dataset_path.read_bytes()
    except (OSError, ValueError):
        return None
    if manifest.get("params_hash") != params_hash or \
            hashlib.sha256(data).hexdigest() != manifest.get("data_hash"):
        return None
    return _result(manifest, row["manifest_hash"], dataset_path, manifest_path, cached=True)


def format_result(result: TargetedResult) -> str:
    """The CLI's table: per cluster and per strategy, then the rejection reasons."""
    strategies = sorted({s for c in result.by_cluster.values() for s in c["by_strategy"]})
    batch = "stored batch" if result.cached else "new batch"
    lines = [(f"{result.task}: {result.accepted} targeted examples accepted of "
              f"{result.requested} requested, plus {result.replay} replayed train rows "
              f"({batch} {result.batch_id})"),
             f"failures from run {result.run_id} ({result.model_id})", "",
             f"{'cluster':<36}{'failures':>9}{'accepted':>9}" + "".join(
                 f"{s[:11]:>12}" for s in strategies)]
    for cid, c in result.by_cluster.items():
        name = c["label"] if c["label"] == cid else f"{c['label']} [{cid}]"
        lines.append(f"{name[:35]:<36}{c['failures']:>9}{c['accepted']:>9}" + "".join(
            f"{c['by_strategy'].get(s, 0):>12}" for s in strategies))
    lines += ["", f"{'strategy':<16}{'accepted':>9}{'rejected':>9}"]
    lines += [f"{s:<16}{v['accepted']:>9}{v['rejected']:>9}" for s, v in result.by_strategy.items()]
    shares = result.rejected_share or {}
    reasons = ", ".join(f"{k} {v}" + (f" ({shares[k]:.0%} of candidates)" if k in shares else "")
                        for k, v in result.rejected.items()) or "none"
    lines += ["", f"rejected: {reasons}"]
    if result.answer_distribution:
        lines += ["", format_distribution(result.answer_distribution)]
    lines += ["", f"dataset: {result.dataset_path}",
              f"manifest: {result.manifest_path} ({result.manifest_hash})"]
    return "\n".join(lines)
