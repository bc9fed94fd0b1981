"""A cycle's training set: the targeted rows for the champion's dev failures, plus the pool rows
the plan (loop.targeted.plan) says this cycle should train on.

    data = build_cycle_data(store, task, champion, dev_run_id, batch_id=..., out_dir=...)

The pool rows are the team's train split without the rows that repeat a dev or test question
(`pool_rows`); the targeted rows went through the targeted stage's curation. In a `whole_pool` cycle they are
all of them (as many as the time budget fits); in a `focused` cycle the champion scores every
curated pool row by answer loss through the shared-prefix path, and the whole pool is trained
on again with the rows it is unsure of and the targeted rows weighted up (they come twice).
The written JSONL is the targeted batch's rows first, then the pool rows (in a whole-pool cycle
only those not already among the targeted rows); its manifest records the plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from evals.signatures import Signature, is_format_only
from loop.core.cache import write_atomic
from loop.core.prompts import MIN_SHARED_PREFIX, build_prompt
from loop.core.records import Example, content_hash
from loop.data.tasks import Task, read_split
from loop.models.loading import ModelSpec
from loop.store.db import Store
from loop.targeted import plan as pool_plan
from loop.targeted.inputs import FailureSet, NoFailuresError, load_failures
from loop.targeted.batch import TargetedResult
from loop.targeted.stage import generate_targeted

log = logging.getLogger(__name__)

# training throughput when nothing is measured yet, in forward tokens (what the model runs: each
# row's own tokens, and the shared prompt prefix once per micro-batch chunk) per second. Measured
# idle on this 2-core CPU with the embedded model, 96 pool rows of each shared task, 1 epoch
# (bench/train_rate.py, 2026-12-02): 333-420 forward tokens/s, the long-prefix task slowest
# (clinc_intents, 693-token prefix); the earlier 480 was 1.2-1.45x optimistic on every task.
# A loaded CPU is slower again (another job halves it); the plan still assumes this rate, since
# a plan that read the measured rate trained different data for the same seeds. A GPU is an
# order of magnitude faster (not measured here); `[cycle] tokens_per_s` sets a machine's own.
DEFAULT_TOKENS_PER_S = {"cpu": 360.0, "cuda": 4000.0}
# generating dev on that CPU: seconds per prompt token and per decode step of a batch, fitted on
# the base model generating 64 dev items of each shared task at batch 32 (9.7-20.2 s; within 10%
# on four tasks, 1.6x low on clinc_intents, whose long prefix every decode step attends to);
# scaled by the training rate on other machines
PROMPT_TOKEN_S = 0.0049
DECODE_STEP_S = 0.052


def is_format_failure(signatures) -> bool:
    """A failure that is about the answer's form only: not JSON, or no known label (stored
    signature strings, read back as records: `evals.signatures.is_format_only`)."""
    return is_format_only([Signature.parse(s) for s in signatures])


def build_cycle_data(store: Store, task: Task, champion: str | ModelSpec, dev_run_id: str, *,
                     champion_trained: bool, batch_id: str, out_dir: Path, seed: int = 0,
                     budget_s: float | None = None, progress: bool = False,
                     embedder=None) -> TargetedResult:
    try:
        failures = load_failures(store, task, dev_run_id)
        targeted = generate_targeted(store, task, dev_run_id, batch_id=batch_id, out_dir=out_dir,
                                     seed=seed, failures=failures, embedder=embedder,
                                     progress=progress)
        targeted_rows = list(read_split(Path(targeted.dataset_path), "train"))
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
    per_row, source = seconds_per_row_epoch(task, pool)
    facts = pool_plan.PoolFacts(len(pool), champion_trained, n_failures, n_format, per_row, source)
    epochs = task.settings.training.epochs or 1.0
    hard: list[Example] = []
    # free text has many valid wordings: an unlikely reference token says nothing of a failure,
    # so a text task's focus is its dev failures' targeted rows alone
    if pool_plan.choose_mode(facts)[0] == "focused" and task.answers.kind != "text":
        hard = _unsure_rows(task, champion, pool, progress)
    plan = pool_plan.plan_pool(facts, budget_s, epochs, extra_rows=len(targeted_rows) + len(hard))
    if plan.mode == "whole_pool":
        chosen, hard = pool[:plan.rows], []
    else:  # every pool row once (as many as fit), the unsure ones a second time
        hard = hard[:max(0, plan.extra_rows - len(targeted_rows))]
        chosen = hard + pool[:plan.rows]
    log.info("cycle data: %s (%s): %d pool rows + %d targeted", plan.mode, plan.reason,
             len(chosen), len(targeted_rows))
    return _write(task, targeted, targeted_rows, chosen, len(hard), plan, batch_id, out_dir,
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


def _unsure_rows(task: Task, champion: str | ModelSpec, pool: list[Example],
                 progress: bool) -> list[Example]:
    """The pool rows the champion is unsure of, least known first (answer loss through the
    shared-prefix path: each row's least likely answer token)."""
    from loop.models.loading import load_model
    from loop.models.answer_loss import answer_losses

    worst = answer_losses(load_model(champion), pool, task.settings.system_prompt,
                          progress=progress, reduce="max")
    return [pool[i] for i in pool_plan.hard_rows(worst)]


def seconds_per_row_epoch(task: Task, pool: list[Example]) -> tuple[float, str]:
    """Estimated from the pool's token counts, never from the wall time of earlier runs (that
    moves with the machine's load, and the same seeds would then train different data: an idle
    and a loaded rerun of one task fitted 1.5 and 1 epochs). Rows share their common prompt
    prefix inside a micro-batch (train/packing.py), so a row costs its own tokens and a share
    of the prefix; the rate is `[cycle] tokens_per_s`, else the device's default."""
    prefix, own = _prompt_tokens(task, _base_tokenizer(task), pool[:256], with_answer=True)
    training = task.settings.training
    tokens = pool_plan.forward_tokens_per_row(prefix, own, training.batch_size,
                                              training.micro_batch_tokens, MIN_SHARED_PREFIX)
    rate, where = _training_rate(task)
    return tokens / rate, (f"estimated: {tokens:.0f} forward tokens per row (prefix {prefix}) "
                           f"at {rate:.0f} tokens/s ({where})")


def seconds_per_dev_eval(task: Task, dev: Sequence[Example]) -> tuple[float, str]:
    """What generating `dev` costs a trained model (each recipe trial of the search is scored
    so), from token counts: the shared prompt prefix once, each prompt's rest as a forward, and
    per batch as many decode steps as its longest reference answer has tokens (plus the stop
    token, at most max_new_tokens), at PROMPT_TOKEN_S and DECODE_STEP_S (the answers of a
    trained model are about as long as the references)."""
    if not dev:
        return 0.0, "no dev items"
    tokenizer = _base_tokenizer(task)
    prefix, own = _prompt_tokens(task, tokenizer, dev, with_answer=False)
    gen = task.settings.generation
    # batched longest first: the fewest decode steps these answers can take
    answers = sorted((min(len(tokenizer(e.output)["input_ids"]) + 1, gen.max_new_tokens)
                      for e in dev), reverse=True)
    steps = sum(answers[i] for i in range(0, len(answers), gen.batch_size))
    rate, where = _training_rate(task)
    forward = prefix + sum(own)
    seconds = (forward * PROMPT_TOKEN_S + steps * DECODE_STEP_S) * DEFAULT_TOKENS_PER_S["cpu"] / rate
    return seconds, (f"estimated: {forward} prompt tokens and {steps} decode steps for "
                     f"{len(dev)} items ({where})")


def _training_rate(task: Task) -> tuple[float, str]:
    from loop.models.loading import pick_device

    if task.settings.cycle.tokens_per_s is not None:
        return task.settings.cycle.tokens_per_s, "[cycle] tokens_per_s"
    device = pick_device().type
    return DEFAULT_TOKENS_PER_S.get(device, DEFAULT_TOKENS_PER_S["cpu"]), device


def _base_tokenizer(task: Task):
    from loop.models.loading import load_tokenizer, parse_model_name

    return load_tokenizer(parse_model_name(task.settings.cycle.base_model))


def _prompt_tokens(task: Task, tokenizer, rows: Sequence[Example],
                   with_answer: bool) -> tuple[int, list[int]]:
    """(tokens of the prompt prefix all `rows` share, each row's tokens past it); a row's rest
    keeps one prompt token (train/packing.py)."""
    import os.path

    ids = [tokenizer(build_prompt(tokenizer, e, task.settings.system_prompt)
                     + (e.output if with_answer else ""))["input_ids"] for e in rows]
    prefix = len(os.path.commonprefix(ids)) if len(ids) > 1 else 0
    return prefix, [len(i) - prefix + 1 for i in ids]


def _write(task: Task, targeted: TargetedResult | None, targeted_rows: list[Example],
           chosen: list[Example], n_hard: int, plan, batch_id: str, out_dir: Path,
           failures: FailureSet, champion_trained: bool) -> TargetedResult:
    if plan.mode == "whole_pool":  # targeted rows drawn from the pool are written once
        seen = {(e.instruction, e.input, e.output) for e in targeted_rows}
        extra = [e for e in chosen if (e.instruction, e.input, e.output) not in seen]
    else:  # focused: the weighted rows come twice on purpose
        extra = chosen
    rows = [{"id": e.id, "instruction": e.instruction, "input": e.input, "output": e.output,
             "category": e.category} for e in targeted_rows]
    rows += [{"id": e.id, "instruction": e.instruction, "input": e.input, "output": e.output,
              "category": e.category} for e in extra]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    rows_s = (len(targeted_rows) + len(extra)) * plan.epochs * plan.seconds_per_row_epoch
    dev_eval_s, dev_eval_how = seconds_per_dev_eval(task, task.splits.get("dev", ()))
    plan_json = {**plan.to_json(), "estimated_train_s": rows_s,
                 # a recipe trial is also scored on dev (loop/cycle/run.py _sft_search)
                 "dev_eval_s": dev_eval_s, "dev_eval_source": dev_eval_how,
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
