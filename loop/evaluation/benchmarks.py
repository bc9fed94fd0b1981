"""The benchmarks stage: run lm-eval benchmarks on models named like the rest of evalloop, cached
in the store, and the champion-vs-candidate deltas the gate reads.

    with Store("ws") as store:
        results = run_benchmarks(store, "smollm2-135m-instruct", ["arc_easy", "mmlu"], limit=50,
                                 data_dir="../shared/benchmarks")
        print(format_table(results))

Results and per-sample outputs land in `benchmark_results` / `benchmark_samples` with their
provenance; a (model fingerprint, benchmark, version, limit, shots) already in the store under
the same seed is returned from it without loading the model, and so is a base model's run kept
in the user cache folder (`benchmark_cache`: a fresh workspace does not score the embedded
model again). `limit` is one count for every benchmark or a count per benchmark (`cycle_items`:
what a cycle scores, from [benchmarks]). Running a benchmark on a loaded model is scoring
(evals/benchmarks.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from evals import benchmark_stderr as gs
from evals import paired as ps
from evals.benchmark_sizing import size_items
from evals.benchmark_tasks import DEFAULT_TASKS
from evals.benchmarks import (BACKENDS, DEFAULT_SEED, BenchmarkModel, BenchmarkResult,
                              data_source, headline, run_benchmark, run_key, task_manager)
from loop.core.errors import ConfigError
from loop.core.settings import BenchmarksSettings
from loop.evaluation import benchmark_cache as shared
from loop.models.backends import require_vllm
from loop.models.loading import ModelSpec, as_model_spec, base_path, fingerprint, load_model, \
    parse_model_name, pick_device
from loop.models.vllm_backend import GPU_MEMORY_SHARE, MIN_LORA_RANK, lora_rank
from loop.store import benchmarks as queries
from loop.store.db import Store
from loop.store.rows import BenchmarkResultRow, BenchmarkSampleRow

HF_BATCH_SIZE = 32


def run_benchmarks(store: Store, model: str | ModelSpec, tasks=DEFAULT_TASKS,
                   limit: int | Mapping[str, int] | None = None,
                   data_dir: str | Path | None = None, backend: str = "evalloop",
                   progress: bool = True, seed: int = DEFAULT_SEED) -> list[BenchmarkResult]:
    """Benchmark a model (`base` or `base+adapter`) on `limit` seeded items of each task (a
    mapping: per task, a task it lacks scores all items; None: all items); cached benchmarks
    do not load the model."""
    names = list(dict.fromkeys(tasks))
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown benchmark backend '{backend}' (known: {', '.join(BACKENDS)}).")
    limits = {n: limit.get(n) for n in names} if isinstance(limit, Mapping) else dict.fromkeys(
        names, limit)
    if any(k is not None and k < 1 for k in limits.values()):
        raise ConfigError(f"--limit must be a positive integer, got {limit}.")
    if backend == "vllm":
        require_vllm("The vllm benchmark backend", "'evalloop' or 'hf'")
    spec = as_model_spec(model)
    model_name = spec.name  # what the models row and the result rows name
    model_id = fingerprint(spec)
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else None
    if not progress:
        import datasets

        datasets.disable_progress_bars()
    results: dict[str, list[BenchmarkResult]] = {}
    with tempfile.TemporaryDirectory(prefix="evalloop-tasks-") as work:
        manager = task_manager(names, data_dir, Path(work))
        keys = {n: run_key(manager, n) for n in names}
        kept = {n: shared.shared_run(model_id, n, keys[n], limits[n], seed, backend,
                                     data_source(n, data_dir)) for n in names}
        restored = False
        for name in names:
            results[name] = cached_results(store, model_id, name, *keys[name], limits[name],
                                           seed)
            if not results[name] and shared.restore(store, kept[name]):
                restored = True
                results[name] = cached_results(store, model_id, name, *keys[name],
                                               limits[name], seed)
        todo = [n for n in names if not results[n]]
        if todo or restored:
            store.put_model(model_id, model_name, spec.base, base_path(spec.base),
                            str(spec.adapter) if spec.adapter else None)
        if todo:
            lm, label, dtype = make_lm(backend, model_name)
            scored = BenchmarkModel(lm, model_id, model_name, label, dtype)
            for name in todo:
                rows, samples = run_benchmark(scored, manager, name, keys[name], limits[name],
                                              seed, data_dir)
                shared.keep(kept[name], *save(store, rows, samples))
                results[name] = rows
    return [r for n in names for r in results[n]]


def make_lm(backend: str, model_name: str):
    """(lm-eval LM, backend label, dtype name) for one model."""
    if backend == "evalloop":
        from evals.lm_backend import EvalloopLM

        lm = EvalloopLM(load_model(model_name), dtype="auto")
        return lm, "evalloop", lm.dtype_name
    spec = parse_model_name(model_name)
    if backend == "vllm":  # lm-eval's module imports vllm at its top: only here
        from lm_eval.models.vllm_causallms import VLLM

        rank = lora_rank(json.loads((spec.adapter / "adapter_config.json").read_text())
                         ) if spec.adapter else MIN_LORA_RANK
        lm = VLLM(pretrained=base_path(spec.base), dtype="bfloat16",
                  lora_local_path=str(spec.adapter) if spec.adapter else None,
                  max_lora_rank=rank, gpu_memory_utilization=GPU_MEMORY_SHARE,
                  batch_size="auto")
        return lm, "vllm", "bfloat16"
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=base_path(spec.base), peft=str(spec.adapter) if spec.adapter else None,
              device=pick_device().type, batch_size=HF_BATCH_SIZE, dtype="auto")
    return lm, f"hf(batch {HF_BATCH_SIZE})", str(lm.model.dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------- the store

def save(store: Store, rows: list[BenchmarkResult], samples: list[dict]
         ) -> tuple[list[BenchmarkResultRow], list[BenchmarkSampleRow]]:
    """Write one benchmark's rows and samples (evals.benchmarks.sample_rows) together (a
    half-written run is never cached); returns the records written."""
    records = []
    for r in rows:
        record = asdict(r)
        record.pop("cached")
        record["limit_n"] = record.pop("limit") or 0
        model_id = record["model_id"]
        record["adapter_hash"] = model_id.split("+", 1)[1] if "+" in model_id else None
        record["base"] = parse_model_name(r.model_name).base
        records.append(BenchmarkResultRow(**record))
    sample_records = [BenchmarkSampleRow(**s) for s in samples]
    queries.put_run(store, records, sample_records)
    return records, sample_records


def cached_results(store: Store, model_id: str, benchmark: str, version: str, shots: int,
                   limit: int | None, seed: int) -> list[BenchmarkResult]:
    """The stored run of this key under `seed` ([] when none: another seed scored other items)."""
    key = (model_id, benchmark, version, limit or 0, shots)
    fields = set(BenchmarkResult.__dataclass_fields__) - {"cached", "limit"}
    stored = queries.run_results(store, *key)
    if any(r["seed"] != seed for r in stored):
        return []
    results = [BenchmarkResult(**{k: r[k] for k in fields}, limit=r["limit_n"] or None,
                               cached=True) for r in stored]
    if not any(r.task == benchmark and r.stderr is None and r.value is not None for r in results):
        return results
    # stored before group stderrs were computed: every stored sample belongs to the headline row
    samples = queries.run_sample_metrics(store, *key)
    leaves = {benchmark: sorted({s["task"] for s in samples})}
    return gs.fill_group_stderr(results, leaves, gs.stored_item_scores(samples))


# ---------------------------------------------------------------------------- the cycle

def cycle_items(settings: BenchmarksSettings) -> dict[str, int]:
    """Seeded items per benchmark in a cycle: `items` for the tasks it names; the others get
    `limit` when it is set, else their share of `seconds` (evals.benchmark_sizing: the split
    that minimises the pooled check's variance; the same counts on every machine)."""
    if settings.limit is not None:
        return {n: settings.items.get(n, settings.limit) for n in settings.tasks}
    return size_items(settings.tasks, settings.seconds, settings.items)


def paired_deltas(store: Store, champion: str | ModelSpec, candidate: str | ModelSpec,
                  settings: BenchmarksSettings,
                  items: int | Mapping[str, int], seed: int, progress: bool = True,
                  alpha: float = 0.05, power: float = 0.95) -> dict:
    """Both models on the same seeded items (`items` per benchmark, e.g. `cycle_items`, or one
    count for all; a champion scored earlier at these items and seed comes from the store); per
    higher-is-better headline metric the paired difference (candidate - champion) from the
    per-item scores, the gold choice's log-probability per multiple-choice benchmark, and both
    pooled (evals.paired.compare)."""
    values, scores = {}, {}
    items = dict(items) if isinstance(items, Mapping) else dict.fromkeys(settings.tasks, items)
    counts = set(items.values())
    for role, model in (("champion", champion), ("candidate", candidate)):
        rows = [r for r in headline(run_benchmarks(
            store, model, settings.tasks, items, settings.data_dir, settings.backend,
            progress=progress, seed=seed))
            if r.task == r.benchmark and r.value is not None and r.higher_is_better is not False]
        values[role] = {f"{r.benchmark}/{r.metric}": r.value for r in rows}
        scores[role] = benchmark_item_scores(store, rows)
    paired, pooled = ps.compare(scores["champion"], scores["candidate"], alpha, power)
    return {"limit": next(iter(counts)) if len(counts) == 1 else None, "items": items,
            "deltas": {k: s.delta for k, s in paired.items()},
            "delta_se": {k: s.to_json()["se"] for k, s in paired.items()},
            "champion": values["champion"], "candidate": values["candidate"],
            "paired": {k: s.to_json() for k, s in paired.items()},
            "pooled": {k: s.to_json() for k, s in pooled.items()}}


def benchmark_item_scores(store: Store, rows: list[BenchmarkResult]) -> dict:
    """benchmark -> metric -> (task, doc_id) -> score for the metrics of `rows` (headline rows
    of one model) and GOLD_LOGPROB, from the stored samples of their runs."""
    out: dict[str, dict] = {}
    for r in rows:
        if r.benchmark in out:
            continue
        metrics = {x.metric for x in rows if x.benchmark == r.benchmark} | {ps.GOLD_LOGPROB}
        samples = queries.run_samples(store, r.model_id, r.benchmark, r.benchmark_version,
                                      r.limit or 0, r.shots)
        out[r.benchmark] = {m: v for m, v in ps.sample_scores(samples).items() if m in metrics}
    return out
