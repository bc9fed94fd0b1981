"""The evaluation stage: predictions for one task split (reused when already stored), scored by
the task's suite, written to the store, summarised per category and per check.

    summary = evaluate(store, load_task("task.toml"), "smollm2-135m-instruct", split="test")
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from evals.suites import Suite, load_suite
from loop import tracking
from loop.core import stopping
from loop.core.errors import StoreError, TaskDataError
from loop.models.backends import Backend, load_generator, resolve_backend
from loop.models.decode import GenOutput
from loop.models.loading import LoadedModel, ModelSpec, as_model_spec, context_length, \
    fingerprint, load_tokenizer
from loop.core.records import Example, content_hash
from loop.evaluation.prompting import PromptSetting, choose_shots, render_prompts, \
    resolve_prompt, shot_embedder
from loop.store.db import Store, now
from loop.store.rows import PredictionRow, RunItemRow, ScoreRow, write
from loop.data.tasks import Task

GEN_VERSION = "greedy-v1"  # bump when decoding changes, so old predictions are not reused


@dataclass(frozen=True)
class EvalSummary:
    run_id: str
    task: str
    model: str
    model_id: str
    split: str
    n: int
    generated: int
    reused: int
    pass_rate: float
    per_category: dict[str, dict[str, float]]
    per_check: dict[str, float]
    mean_similarity: float
    failure_categories: dict[str, int]
    n_clusters: int
    suite_version: str
    outcomes: dict[str, bool] = field(default_factory=dict, repr=False)  # example id -> passed
    prompt: str = "zero-shot"  # PromptSetting.label: which prompt (shots) the model was shown
    check_versions: dict[str, str] = field(default_factory=dict)  # check -> version (stored
    # summaries from before it have none)

    def versions(self) -> dict[str, str]:
        """What `evals.suites.assert_comparable` compares: the suite and each check's version."""
        return {"__suite__": self.suite_version, **self.check_versions}

    def to_json(self, outcomes: bool = False) -> dict:
        data = asdict(self)
        if not outcomes:
            data.pop("outcomes")
        if self.prompt == "zero-shot":  # as stored before prompts had settings
            data.pop("prompt")
        return data

    @classmethod
    def from_json(cls, data: dict) -> EvalSummary:
        return cls(**data)


def select(task: Task, split: str, limit: int | None) -> tuple[Example, ...]:
    if limit is not None and limit < 1:
        raise TaskDataError(f"--limit must be a positive number of examples, got {limit}.")
    return task.split(split)[:limit]


def evaluate(store: Store, task: Task, model: str | ModelSpec, split: str = "test",
             limit: int | None = None, progress: bool = True,
             lm: LoadedModel | None = None, processes: int | None = None,
             backend: str | None = None, prompt: PromptSetting | None = None) -> EvalSummary:
    """`processes` (default: [generation] processes) > 1: the items to generate are sharded
    over that many ranks (loop/evaluation/sharded.py); this process alone writes the store.
    `backend` (default: [generation] backend): "auto" | "hf" | "vllm"; a loaded `lm` is HF.
    vLLM generates in this process (it batches and fills the GPU itself), whatever `processes`.
    `prompt` (default: [generation] shots): system prompt, wording and few-shot examples
    (loop/evaluation/prompting.py); the pool rows shown are stored per item."""
    examples = select(task, split, limit)
    setting = prompt or resolve_prompt(task)
    if processes is not None and processes < 1:
        raise TaskDataError(f"--processes must be a positive number, got {processes}.")
    spec = as_model_spec(model)
    model_name = spec.name  # what the models row, the run's params and the summary name
    model_id = lm.model_id if lm else fingerprint(spec)
    tokenizer = lm.tokenizer if lm else load_tokenizer(spec)
    gen = task.settings.generation
    engine = "hf" if lm else resolve_backend(backend or gen.backend)  # before any write
    stop_at_json = answers_are_json(task)
    gen_hash = generation_hash(gen.max_new_tokens, stop_at_json, engine, setting.shot_identity())
    shots = choose_shots(task, examples, setting, shot_embedder(store, setting))
    prompts = render_prompts(tokenizer, task, examples, setting, shots)
    pred_ids = [content_hash(model_id, content_hash(p), gen_hash) for p in prompts]
    _check_context(tokenizer, spec, examples, prompts, gen.max_new_tokens)  # before any write
    stored = store.get_predictions(pred_ids)
    missing = [i for i, pid in enumerate(pred_ids) if pid not in stored]
    ranks = min(gen.processes if processes is None else processes, len(missing))
    ranks = 1 if engine == "vllm" else ranks
    if missing and ranks <= 1:  # a model that cannot load fails before any write
        generator = load_generator(engine, model_name, lm)
    store.put_task(task.name, str(task.settings.path), task.data_hash,
                   [e for s in task.splits.values() for e in s])
    store.put_model(model_id, model_name, spec.base, adapter=str(spec.adapter or "") or None)
    run_id = content_hash("eval", task.name, split, model_id, gen_hash, [e.id for e in examples],
                          *setting.wording_identity())
    store.start_run(run_id, "eval", task.name, model_id, split,
                    {"limit": limit, "max_new_tokens": gen.max_new_tokens, "model": model_name,
                     "backend": engine, **({} if setting.is_default
                                           else {"prompt": setting.to_json()})})
    keep = PredictionWriter(store, model_id, gen_hash, prompts, pred_ids, stored)
    try:
        if missing and ranks > 1:  # each rank loads the model itself, on its own device
            from loop.evaluation.sharded import generate_sharded

            work = store.workspace / "shards" / content_hash([pred_ids[i] for i in missing],
                                                             gen.batch_size)
            outputs = generate_sharded(model_name, [prompts[i] for i in missing], ranks, work,
                                       gen.max_new_tokens, gen.batch_size, stop_at_json,
                                       progress=progress, desc=f"{split} {task.name}")
            keep(list(zip(missing, outputs)))  # a killed rerun reuses the finished shards
        elif missing:
            generator.generate([prompts[i] for i in missing], gen.max_new_tokens,
                               gen.batch_size, progress=progress, desc=f"{split} {task.name}",
                               stop_at_json=stop_at_json,
                               on_batch=lambda batch: keep([(missing[k], o) for k, o in batch]))
        outputs = [stored[pid]["output"] for pid in pred_ids]
        write(store, [RunItemRow(run_id, e.id, pid, [s.id for s in item_shots] or None)
                      for e, pid, item_shots in zip(examples, pred_ids, shots)])
        summary = _score_and_store(store, task, examples, outputs, pred_ids, run_id, model_id,
                                   split)
        summary = EvalSummary(run_id=run_id, task=task.name, model=model_name,
                              model_id=model_id, split=split, n=len(examples),
                              generated=len(missing), reused=len(examples) - len(missing),
                              prompt=setting.label, **summary)
        store.finish_run(run_id, summary.to_json())
    except BaseException as exc:
        stop_run(store, run_id, exc)
        raise
    tracking.log_evaluation(store.workspace, task, summary)
    return summary


@dataclass(frozen=True)
class PredictionWriter:
    """Stores a batch's predictions as soon as they exist (the evaluating process is the
    store's one writer), so an interrupted run keeps them and a rerun generates only the rest.
    `stored` (prediction id -> row) gains every row written."""

    store: Store
    model_id: str
    gen_hash: str
    prompts: Sequence[str]
    pred_ids: Sequence[str]
    stored: dict[str, dict]

    def __call__(self, batch: Sequence[tuple[int, GenOutput]]) -> None:
        rows = [PredictionRow(self.pred_ids[i], self.model_id, content_hash(self.prompts[i]),
                              self.gen_hash, self.prompts[i], o.text, o.latency_s,
                              o.prompt_tokens, o.output_tokens, now()) for i, o in batch]
        write(self.store, rows)
        self.stored.update({r.prediction_id: r.as_dict() for r in rows})


def stop_run(store: Store, run_id: str, exc: BaseException) -> None:
    """Mark a run that did not finish: `interrupted` by a signal (Ctrl-C, SIGTERM, SIGHUP),
    `failed` by an error. Its stored predictions stay; a rerun continues from them. A store
    that cannot be written now leaves the mark to the next writer (Store.mark_stale_runs)."""
    exc = stopping.received() or exc  # a signal may surface as a library's own exception
    signal_name = getattr(exc, "signal_name", "SIGINT" if isinstance(exc, KeyboardInterrupt)
                          else None)
    try:
        if signal_name:
            store.interrupt_run(run_id, f"stopped by {signal_name}")
        else:
            store.interrupt_run(run_id, f"stopped by an error: {type(exc).__name__}", "failed")
    except StoreError:
        pass


def generation_hash(max_new_tokens: int, stop_at_json: bool, backend: Backend = "hf",
                    shots: Sequence[str] = ()) -> str:
    """Identity of the decoding behind a prediction. The JSON stop, a non-HF backend and shots
    join it only when used, so HF predictions stored before either existed stay reusable; vLLM
    (bf16, its own kernels) can flip near-ties, so its predictions are never mixed with HF's."""
    return content_hash(GEN_VERSION, max_new_tokens, *(["stop-at-json"] * stop_at_json),
                        *([f"backend-{backend}"] * (backend != "hf")), *shots)


def answers_are_json(task: Task) -> bool:
    """Whether generation stops at a closed JSON value: the task's answers are JSON."""
    return task.answers.kind in ("json", "labels")


def task_suite(task: Task, embedder) -> Suite:
    """The suite a task is scored with: its [suite], else the default for its answers; a
    free-text task's similarity threshold is calibrated on its references (cached vectors)."""
    threshold = None
    if task.settings.suite is None and task.answers.kind == "text":
        from evals.scoring import calibrated_threshold

        refs = [e for split in ("train", "dev") for e in task.splits.get(split, ())]
        threshold = calibrated_threshold(refs or task.split("test"), embedder)
    return load_suite(task.settings, task.answers, threshold)


def _check_context(tokenizer, spec, examples: Sequence[Example], prompts: Sequence[str],
                   max_new_tokens: int) -> None:
    limit = context_length(spec)
    for example, prompt in zip(examples, prompts):
        n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if n + max_new_tokens > limit:
            raise TaskDataError(
                f"Example '{example.id}' ({example.split} split) has a {n}-token prompt; with "
                f"max_new_tokens={max_new_tokens} it exceeds the model's {limit}-token context. "
                "Shorten the record or lower [generation] max_new_tokens.")


def _score_and_store(store: Store, task: Task, examples, outputs, pred_ids, run_id, model_id,
                     split: str):
    from evals.scoring import score_predictions
    from evals.similarity import CachedEmbedder
    from loop.failures.stage import record_failures
    from loop.store.embeddings import EmbeddingCache

    embedder = CachedEmbedder(EmbeddingCache(store))
    suite = task_suite(task, embedder)
    item_scores, similarities = score_predictions(suite, examples, outputs, embedder)
    rows, by_cat, by_check = [], defaultdict(list), defaultdict(list)
    for example, pid, item in zip(examples, pred_ids, item_scores):
        by_cat[example.category].append(item.passed)
        for check in item.checks:
            by_check[check.check].append(check.passed)
            rows.append(ScoreRow(pid, task.name, example.id, suite.version, check.check,
                                 check.version, check.passed, check.value,
                                 check.check in suite.required, check.detail, now()))
    write(store, rows, on_conflict="replace")
    failures = record_failures(store, run_id, task.name, model_id, split, examples, pred_ids,
                               item_scores, similarities, embedder, answers=task.answers,
                               template=task.template)
    passed = [item.passed for item in item_scores]
    return {
        "pass_rate": sum(passed) / len(passed),
        "per_category": {c: {"n": len(v), "pass_rate": sum(v) / len(v)}
                         for c, v in sorted(by_cat.items())},
        "per_check": {c: sum(v) / len(v) for c, v in sorted(by_check.items())},
        "mean_similarity": sum(similarities) / len(similarities),
        "failure_categories": {c["category"]: c["count"] for c in failures["categories"]},
        "n_clusters": len(failures["clusters"]),
        "suite_version": suite.version,
        "check_versions": suite.check_versions(),
        "outcomes": {e.id: p for e, p in zip(examples, passed)},
    }


def _threshold_note(summary: EvalSummary) -> str:
    version = summary.suite_version
    if version.startswith("default-text-") and "@" in version:
        return (f" (free text: passes at similarity >= {version.rsplit('@', 1)[1]}, calibrated "
                "on the task's references)")
    return ""


def format_summary(summary: EvalSummary) -> str:
    lines = [f"{summary.task} / {summary.split}: {summary.model} ({summary.model_id})",
             f"{summary.n} examples ({summary.generated} generated, {summary.reused} reused), "
             f"suite v{summary.suite_version}, prompt {summary.prompt}"
             + _threshold_note(summary), "",
             f"{'category':<24}{'n':>6}{'pass rate':>12}"]
    for cat, row in summary.per_category.items():
        lines.append(f"{cat:<24}{row['n']:>6}{row['pass_rate']:>11.1%}")
    lines.append(f"{'overall':<24}{summary.n:>6}{summary.pass_rate:>11.1%}")
    lines += ["", f"{'check':<24}{'pass rate':>18}"]
    lines += [f"{name:<24}{rate:>17.1%}" for name, rate in summary.per_check.items()]
    lines += ["", f"mean similarity to reference: {summary.mean_similarity:.3f}",
              "failures by category: " + (", ".join(
                  f"{c} {n}" for c, n in summary.failure_categories.items()) or "none")
              + f"; {summary.n_clusters} clusters (evalloop failures --task ... for details)"]
    return "\n".join(lines)
