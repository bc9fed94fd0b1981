"""Failure I/O: store a run's failures and clusters, read them back for reports and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from evals.answers import AnswerModel
from evals.signatures import Signature
from evals.similarity import CachedEmbedder
from evals.suites import ItemScore
from loop.core.errors import EvalloopError
from loop.failures.clusters import cluster_failures, cluster_row, collect_failures, signature_counts, \
    summarize
from loop.core.prompts import user_message
from loop.core.records import Example
from loop.store import failures as failure_queries
from loop.store import runs as run_queries
from loop.store.db import Store
from loop.store.rows import ClusterRow, FailureRow
from loop.core.template import Template

MAX_SIGNATURE_ROWS = 30  # the rest of a long tail (label confusions) is in --json


def record_failures(store: Store, run_id: str, task_id: str, model_id: str, split: str,
                    examples: Sequence[Example], prediction_ids: Sequence[str],
                    scores: Sequence[ItemScore], similarities: Sequence[float],
                    embedder: CachedEmbedder, seed: int = 0,
                    outputs: Sequence[str] | None = None,
                    answers: AnswerModel = AnswerModel(),
                    template: Template | None = None) -> dict:
    """Collect, sign, cluster and store one run's failures. `template` and `answers` are the
    task's (`Task.template`, fitted once on all its splits so each split sees the same one, and
    `Task.answers`); without a template, it is fitted on `examples`. Outputs default to the
    stored predictions."""
    if outputs is None:
        stored = store.get_predictions(prediction_ids)
        outputs = [stored[p]["output"] if p in stored else "" for p in prediction_ids]
    if template is None:
        template = Template.fit(user_message(e) for e in examples)
    failures = collect_failures(examples, prediction_ids, scores, similarities, outputs,
                                template, answers)
    vectors = embedder.encode([f.text for f in failures])
    clusters = cluster_failures(failures, vectors)
    member_of = {eid: c.cluster_id for c in clusters for eid in c.example_ids}
    failure_rows = [FailureRow(
        run_id=run_id, example_id=f.example_id, prediction_id=f.prediction_id,
        task_id=task_id, model_id=model_id, split=split, categories=list(f.categories),
        failed_checks=list(f.failed_checks), similarity=f.similarity,
        cluster_id=member_of.get(f.example_id), signatures=list(f.signatures))
        for f in failures]
    cluster_rows = [ClusterRow(
        cluster_id=c.cluster_id, run_id=run_id, label=c.label,
        dominant_category=c.dominant_category, top_terms=list(c.top_terms), size=c.size,
        example_ids=list(c.example_ids), seed=seed, signatures=list(c.signatures))
        for c in clusters]
    failure_queries.replace_run_failures(store, run_id, failure_rows, cluster_rows)
    return summarize(failures, clusters, len(examples))


def failure_summary(store: Store, run_id: str) -> dict:
    """The stored failures of one run, in the shape of `loop.failures.summarize`."""
    n_items = run_queries.count_run_items(store, run_id)
    rows = failure_queries.run_failures(store, run_id)
    by_cat: dict[str, list[str]] = {}
    for row in rows:
        for c in row["categories"]:
            by_cat.setdefault(c, []).append(row["example_id"])
    clusters = failure_queries.run_clusters(store, run_id)
    return {
        "run_id": run_id, "n_items": n_items, "n_failures": len(rows),
        "categories": [{"category": c, "count": len(ids), "share": len(ids) / max(n_items, 1),
                        "examples": ids[:2]}
                       for c, ids in sorted(by_cat.items(), key=lambda x: -len(x[1]))],
        # failures stored before signatures existed count by their categories
        "signatures": signature_counts([(r["example_id"], r["signatures"] or r["categories"])
                                        for r in rows], n_items),
        "clusters": [cluster_row(c["cluster_id"], c["label"], c["size"], n_items,
                                 c["dominant_category"], c["top_terms"], c["example_ids"],
                                 c.get("signatures")) for c in clusters],
    }


def latest_run(store: Store, task_id: str, model_id: str | None, split: str
               ) -> tuple[str, str | None]:
    """The latest finished evaluation's run id, and a note naming a newer run that did not
    finish (None when there is none); an unfinished run alone is an error that names it."""
    models = [model_id] if model_id else None
    run = run_queries.latest_eval_run(store, task_id, split, models, finished=True)
    unfinished = run_queries.latest_unfinished_eval_run(store, task_id, split, models)
    said = (f"run {unfinished['run_id']} is {unfinished['status']}, not finished; rerun "
            f"`evalloop eval --task ... --split {split}` to complete it") if unfinished else None
    if run is None:
        raise EvalloopError(f"No finished evaluation of task '{task_id}' on the {split} split"
                            f"{' for that model' if model_id else ''} yet"
                            + (f" ({said})." if said else f": run `evalloop eval --task ... "
                               f"--split {split}` first."))
    newer = unfinished and (run["started_at"] is None or unfinished["started_at"] is None
                            or unfinished["started_at"] > run["started_at"])
    return run["run_id"], (f"showing the latest finished run {run['run_id']}; {said}."
                           if newer else None)


def format_failures(summary: dict) -> str:
    lines = [f"{summary['n_failures']} failures in {summary['n_items']} items "
             f"(run {summary['run_id']})", "", f"{'category':<18}{'count':>7}{'share':>8}  examples"]
    lines += [f"{c['category']:<18}{c['count']:>7}{c['share']:>8.1%}  {', '.join(c['examples'])}"
              for c in summary["categories"]]
    lines += ["", f"{'signature':<40}{'count':>7}{'share':>8}  examples"]
    signatures = summary.get("signatures", [])
    lines += [f"{Signature.parse(s['signature']).display(15)[:38]:<40}{s['count']:>7}"
              f"{s['share']:>8.1%}  "
              f"{', '.join(s['examples'])}" for s in signatures[:MAX_SIGNATURE_ROWS]]
    if len(signatures) > MAX_SIGNATURE_ROWS:
        lines.append(f"... {len(signatures) - MAX_SIGNATURE_ROWS} rarer signatures (--json "
                     "lists them all)")
    lines += ["", f"{'size':>6}{'share':>8}  cluster (examples)"]
    lines += [f"{c['size']:>6}{c['share']:>8.1%}  {c['label']} ({', '.join(c['examples'])})"
              for c in summary["clusters"]]
    return "\n".join(lines)
