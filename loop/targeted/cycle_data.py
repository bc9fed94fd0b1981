"""A cycle's training set: the targeted rows for the champion's dev failures, plus the pool rows
the plan (loop.targeted.plan) says this cycle should train on.

    data = build_cycle_data(store, task, champion_name, dev_run_id, batch_id=..., out_dir=...)

The pool rows are the team's train split without the rows that repeat a dev or test question
(`pool_rows`); the targeted rows went through the targeted stage's curation. In a `whole_pool` cycle they are
all of them (as many as the time budget fits); in a `focused` cycle the champion scores every
curated pool row by answer loss through the shared-prefix path, and the rows it is unsure of
are trained on with as many replayed rows it knows. The written JSONL is the targeted batch's
rows first, then the pool rows not already among them; its manifest records the plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from evals.signatures import Signature, is_format_only
from loop.core.cache import write_atomic
from loop.core.records import Example, content_hash
from loop.data.tasks import Task, read_jsonl
from loop.store import cycles as cycle_queries
from loop.store.db import Store
from loop.targeted import plan as pool_plan
from loop.targeted.inputs import FailureSet, NoFailuresError, load_failures
from loop.targeted.stage import TargetedResult, generate_targeted

log = logging.getLogger(__name__)

# training throughput when nothing is measured yet, in tokens a row costs (its own tokens plus
# its share of the prompt prefix the rows of a micro-batch share). Measured: the embedded model
# on the whole rentalcars pool on this 2-core CPU, busy with other jobs: 725 rows x 2 epochs in
# 233 s = 214 such tokens/s (992 tokens/s counting every row's whole prompt), about 300 on an idle
# machine. A GPU is an order of magnitude faster (not measured here).
DEFAULT_TOKENS_PER_S = {"cpu": 300.0, "cuda": 4000.0}


def is_format_failure(signatures) -> bool:
    """A failure that is about the answer's form only: not JSON, or no known label (stored
    signature strings, read back as records: `evals.signatures.is_format_only`)."""
    return is_format_only([Signature.parse(s) for s in signatures])


def build_cycle_data(store: Store, task: Task, champion_name: str, dev_run_id: str, *,
                     champion_trained: bool, batch_id: str, out_dir: Path, seed: int = 0,
                     budget_s: float | None = None, progress: bool = False,
                     embedder=None) -> TargetedResult:
    try:
        failures = load_failures(store, task, dev_run_id)
        targeted = generate_targeted(store, task, dev_run_id, batch_id=batch_id, out_dir=out_dir,
                                     seed=seed, failures=failures, embedder=embedder,
                                     progress=progress)
        targeted_rows = list(read_jsonl(Path(targeted.dataset_path), "train"))
    except NoFailuresError:  # a champion that passes all of dev: the pool plan alone
        failures, targeted, targeted_rows = FailureSet(dev_run_id, "", ()), None, []
    if task.settings.targeted.pool == "off" or not task.splits.get("train"):
        if targeted is None:
            raise NoFailuresError(f"The champion passed every dev item of '{task.name}' and "
                                  "[targeted] pool = \"off\": nothing to train on.")
        return targeted
    pool = pool_rows(task, seed)
    n_failures = sum(len(c.failures) for c in failures.clusters)
    n_format = sum(is_format_failure(f.signatures) for c in failures.clusters
                   for f in c.failures)
    per_row, source = seconds_per_row_epoch(store, task, pool)
    facts = pool_plan.PoolFacts(len(pool), champion_trained, n_failures, n_format, per_row, source)
    epochs = task.settings.training.epochs or 1.0
    plan = pool_plan.plan_pool(facts, budget_s, epochs)
    if plan.mode == "whole_pool":
        chosen = pool[:plan.rows]
        hard_n = 0
    else:
        chosen, hard_n = _focused_rows(task, champion_name, pool, plan, len(targeted_rows),
                                       seed, progress)
    log.info("cycle data: %s (%s): %d pool rows + %d targeted", plan.mode, plan.reason,
             len(chosen), len(targeted_rows))
    return _write(task, targeted, targeted_rows, chosen, hard_n, plan, batch_id, out_dir,
                  failures, champion_trained)


def pool_rows(task: Task, seed: int) -> list[Example]:
    """The team's pool in a seeded order, without rows that repeat a dev or test item's question
    (those would be trained on the items the gate scores). Near-duplicates stay: they are the
    team's data, and how often a kind of message occurs is part of what it teaches (the
    near-duplicate rule is for candidates our strategies draw, where the same row comes twice)."""
    held_out = {_question_key(e) for split in ("dev", "test") for e in task.splits.get(split, ())}
    kept = [e for e in task.splits.get("train", ()) if _question_key(e) not in held_out]
    order = np.random.default_rng(seed).permutation(len(kept))
    return [kept[i] for i in order]


def _question_key(example: Example) -> tuple[str, str]:
    return (" ".join(example.instruction.lower().split()),
            " ".join((example.input or "").lower().split()))


def _focused_rows(task: Task, champion_name: str, pool: list[Example], plan, n_targeted: int,
                  seed: int, progress: bool) -> tuple[list[Example], int]:
    """The pool rows the champion is unsure of, then as many it knows (replay)."""
    from loop.models.loading import load_model
    from loop.models.answer_loss import answer_losses

    worst = answer_losses(load_model(champion_name), pool, task.settings.system_prompt,
                          progress=progress, reduce="max")
    hard_idx = pool_plan.hard_rows(worst, plan.rows)
    n_hard, n_replay = pool_plan.focused_sizes(len(hard_idx), n_targeted, plan.rows)
    hard_idx = hard_idx[:n_hard]
    known = np.setdiff1d(np.arange(len(pool)), hard_idx)
    replay_idx = np.random.default_rng(seed).permutation(known)[:n_replay]
    return [pool[i] for i in hard_idx] + [pool[i] for i in replay_idx], int(n_hard)


def seconds_per_row_epoch(store: Store, task: Task, pool: list[Example]) -> tuple[float, str]:
    """Measured on this task's last cycle that trained (its wall time per trained row), else
    estimated from the pool's token counts: rows share their common prompt prefix inside a
    micro-batch (train/packing.py), so a row costs its own tokens and a share of the prefix."""
    for cycle in reversed(cycle_queries.finished_cycles(store, task.name)):
        done = cycle_queries.stage_result(store, cycle["cycle_id"], "train")
        if done and done.get("elapsed_s") and done.get("steps"):
            rows = done["steps"] * task.settings.training.batch_size
            return done["elapsed_s"] / rows, f"measured: cycle {cycle['cycle_id']}'s training"
    import os.path

    from loop.core.prompts import build_prompt
    from loop.models.loading import load_tokenizer, parse_model_name, pick_device

    tokenizer = load_tokenizer(parse_model_name(task.settings.cycle.base_model))
    sample = pool[:200]
    ids = [tokenizer(build_prompt(tokenizer, e, task.settings.system_prompt) + e.output)
           ["input_ids"] for e in sample]
    prefix = len(os.path.commonprefix(ids)) if len(ids) > 1 else 0
    own = float(np.mean([len(i) - prefix + 1 for i in ids])) if ids else 1.0
    budget = task.settings.training.micro_batch_tokens
    rows_per_micro = max(1.0, (budget - prefix) / max(own, 1.0))
    tokens = own + prefix / rows_per_micro
    device = pick_device().type
    rate = DEFAULT_TOKENS_PER_S.get(device, DEFAULT_TOKENS_PER_S["cpu"])
    return tokens / rate, (f"estimated: {tokens:.0f} tokens per row (prefix {prefix}) at "
                           f"{rate:.0f} tokens/s on {device}")


def _write(task: Task, targeted: TargetedResult | None, targeted_rows: list[Example],
           chosen: list[Example], n_hard: int, plan, batch_id: str, out_dir: Path,
           failures: FailureSet, champion_trained: bool) -> TargetedResult:
    seen = {(e.instruction, e.input, e.output) for e in targeted_rows}
    fresh = [(e.instruction, e.input, e.output) not in seen for e in chosen]
    extra = [e for e, new in zip(chosen, fresh) if new]
    n_hard = sum(fresh[:n_hard])  # the hard rows come first in `chosen`
    rows = [{"id": e.id, "instruction": e.instruction, "input": e.input, "output": e.output,
             "category": e.category} for e in targeted_rows]
    rows += [{"id": e.id, "instruction": e.instruction, "input": e.input, "output": e.output,
              "category": e.category} for e in extra]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    rows_s = (len(targeted_rows) + len(extra)) * plan.epochs * plan.seconds_per_row_epoch
    plan_json = {**plan.to_json(), "estimated_train_s": rows_s,
                 "pool_rows": len(extra), "hard_rows": n_hard,
                 "replay_rows": len(extra) - n_hard if plan.mode == "focused" else 0,
                 "targeted_rows": len(targeted_rows),
                 # training continues from the champion (its adapter, when it has one)
                 "starts_from": "champion adapter" if champion_trained else "base model"}
    manifest = {"batch_id": batch_id, "task": task.name, "run_id": failures.run_id,
                "targeted_manifest": targeted.manifest_hash if targeted else None,
                "plan": plan_json, "rows": len(rows),
                "data_hash": hashlib.sha256(data).hexdigest()}
    manifest_hash = content_hash(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{batch_id}.cycle.jsonl"
    manifest_path = out_dir / f"{batch_id}.cycle.manifest.json"
    write_atomic(path, data)
    write_atomic(manifest_path, json.dumps({**manifest, "manifest_hash": manifest_hash},
                                           indent=2).encode("utf-8"))
    if targeted is None:
        targeted = TargetedResult(
            batch_id=batch_id, task=task.name, run_id=failures.run_id, model_id=failures.model_id,
            requested=0, accepted=0, replay=0, by_strategy={}, by_cluster={}, rejected={},
            dataset_path="", manifest_path="", manifest_hash="", data_hash="")
    return replace(targeted, dataset_path=str(path), manifest_path=str(manifest_path),
                   manifest_hash=manifest_hash, data_hash=manifest["data_hash"],
                   pool_rows=len(extra), plan=plan_json)
