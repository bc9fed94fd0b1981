"""Standard benchmarks through lm-eval (ARC, HellaSwag, MMLU, TruthfulQA, any lm-eval task).

    with tempfile.TemporaryDirectory() as work:
        manager = task_manager(["arc_easy"], data_dir, Path(work))
        rows, samples = run_benchmark(model, manager, "arc_easy", run_key(manager, "arc_easy"),
                                      limit=50, seed=DEFAULT_SEED, data_dir=data_dir)
    print(format_table(rows))

Each requested benchmark is evaluated by lm-eval's own task (see `evals.benchmark_tasks` for the
local-data overrides and the seeded `--limit` subsets) on a given model (an lm-eval LM: a base
model plus optional LoRA adapter, unmerged) and returns BenchmarkResult records with their
provenance, plus per-sample rows. Loading models by name, the store's cache of results and the
cycle's deltas are in `loop/evaluation/benchmarks.py`. `forgetting` is a pseudo-benchmark: the
mean token cross-entropy on a fixed, seeded slice of HellaSwag (context + gold ending), lower is
better.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import lm_eval
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance

from evals import benchmark_stderr as gs
from evals import benchmark_tasks as bt
from loop.core.clock import now
from loop.core.settings import BenchmarkBackend

DEFAULT_SEED = 1234
BACKENDS = get_args(BenchmarkBackend)  # the [benchmarks] backend values
FORGETTING = "forgetting"
FORGETTING_ITEMS = 1000
FORGETTING_VERSION = "1"


@dataclass(frozen=True)
class BenchmarkResult:
    """One metric of one (sub)task of one benchmark run, with its provenance."""

    model_id: str
    model_name: str
    benchmark: str  # what was requested (a task, group or tag name)
    task: str  # the task or group this row is about (== benchmark for the headline rows)
    metric: str
    value: float | None
    stderr: float | None
    n: int
    limit: int | None
    shots: int
    task_version: str
    benchmark_version: str
    higher_is_better: bool | None
    backend: str
    dtype: str
    lm_eval_version: str
    data_source: str
    seed: int
    wall_s: float
    created_at: datetime
    cached: bool = False


@dataclass(frozen=True)
class BenchmarkModel:
    """A loaded model as lm-eval sees it, with what its results are labelled by."""

    lm: Any  # an lm-eval LM
    model_id: str  # fingerprint of base + adapter
    model_name: str
    backend: str  # a label, e.g. "evalloop" or "hf(batch 32)"
    dtype: str


# ---------------------------------------------------------------------------- running

def task_manager(names, data_dir: Path | None, work: Path):
    """lm-eval's task manager for these benchmarks (`forgetting` reads HellaSwag's text), with
    local-data overrides written under `work`."""
    lm_names = ["hellaswag" if n == FORGETTING else n for n in names]
    return bt.task_manager(list(dict.fromkeys(lm_names)), data_dir, work)


def run_key(manager, name: str) -> tuple[str, int]:
    """(benchmark version, shots): with the model, limit and seed, what a stored run is keyed by."""
    if name == FORGETTING:
        return FORGETTING_VERSION, 0
    return bt.task_version(manager, name), bt.default_shots(manager, name)


def run_benchmark(model: BenchmarkModel, manager, name: str, key: tuple[str, int],
                  limit: int | None, seed: int, data_dir: Path | None
                  ) -> tuple[list[BenchmarkResult], list[dict]]:
    """Evaluate one benchmark on one model: result rows and `benchmark_samples` rows."""
    version, shots = key
    context = dict(model_id=model.model_id, model_name=model.model_name, limit=limit,
                   backend=model.backend, dtype=model.dtype, lm_eval_version=lm_eval.__version__,
                   seed=seed, benchmark=name, benchmark_version=version, shots=shots,
                   data_source=data_source(name, data_dir))
    return _evaluate(model.lm, manager, name, limit, seed, data_dir, context)


def data_source(name: str, data_dir: Path | None) -> str:
    """Where a benchmark's documents came from: the hub, or local files and their sha256."""
    standard = "hellaswag" if name == FORGETTING else name
    if data_dir is None or standard not in bt.STANDARD:
        return "hub"
    files = sorted(set(bt.data_files(standard, data_dir).values()))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return f"local:{data_dir} sha256:{digest.hexdigest()[:16]}"


def _evaluate(lm, manager, name: str, limit: int | None, seed: int, data_dir: Path | None,
              context: dict) -> tuple[list[BenchmarkResult], list[dict]]:
    start = time.perf_counter()
    if name == FORGETTING:
        return forgetting_probe(lm, manager, limit, seed, data_dir, context, start)
    loaded = bt.load_tasks(manager, name, data_dir)
    plan = bt.plan_samples(loaded["tasks"], limit, seed)
    children = {c for kids in loaded.get("group_map", {}).values() for c in kids}
    top = [g for n, g in loaded.get("groups", {}).items() if n not in children] or list(
        loaded["tasks"].values())
    out = simple_evaluate(model=lm, tasks=top, task_manager=manager, samples=plan,
                          log_samples=True, random_seed=0, numpy_random_seed=seed,
                          torch_random_seed=seed, fewshot_random_seed=seed)
    context = dict(context, wall_s=round(time.perf_counter() - start, 2), created_at=now())
    return result_rows(out, context), sample_rows(out, context)


def result_rows(out: dict, context: dict) -> list[BenchmarkResult]:
    """lm-eval's results dict -> one row per (task or group, metric)."""
    entries = {**out.get("results", {}), **out.get("groups", {})}
    rows = []
    for task, entry in entries.items():
        version = (context["benchmark_version"] if task == context["benchmark"]
                   else str(out.get("versions", {}).get(task, "")))
        n = entry.get("sample_len") or out.get("n-samples", {}).get(task, {}).get("effective", 0)
        better = out.get("higher_is_better", {}).get(task, {})
        for key, value in entry.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr"):
                continue
            stderr = entry.get(f"{metric}_stderr,{filt}")
            rows.append(BenchmarkResult(
                **context, task=task, metric=metric if filt == "none" else key,
                value=_number(value), stderr=_number(stderr), n=int(n), task_version=version,
                higher_is_better=better.get(metric)))
    # lm-eval leaves a group's stderr "N/A" when a subtask has one item (MMLU under --limit)
    return gs.fill_group_stderr(rows, gs.group_leaves(out.get("group_subtasks") or {}),
                                gs.item_scores(out.get("samples") or {}))


def sample_rows(out: dict, context: dict) -> list[dict]:
    """lm-eval's logged samples -> `benchmark_samples` rows (browsable like task failures)."""
    rows = []
    for task, samples in (out.get("samples") or {}).items():
        for s in samples:
            args = s.get("arguments") or []
            rows.append({
                **_key_columns(context), "task": task, "doc_id": int(s["doc_id"]),
                "prompt": str(args[0][0]) if args else None,
                "choices": [a[1] for a in args if len(a) > 1 and isinstance(a[1], str)],
                "target": str(s.get("target")),
                "responses": _plain(s.get("filtered_resps")),
                "metrics": {m: _plain(s.get(m)) for m in s.get("metrics", [])},
                "doc": _plain(s.get("doc")), "created_at": context["created_at"]})
    return rows


def forgetting_probe(lm, manager, limit, seed, data_dir, context, start):
    """Mean token cross-entropy (nats) of context + gold ending on seeded HellaSwag items."""
    task = bt.load_tasks(manager, "hellaswag", data_dir)["tasks"]["hellaswag"]
    docs = task.eval_docs
    k = limit or FORGETTING_ITEMS
    indices = bt.seeded_subset(len(docs), k, seed, FORGETTING) or list(range(len(docs)))
    texts = [f"{docs[i]['query']} {docs[i]['choices'][int(docs[i]['gold'])]}" for i in indices]
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=0)
                for t in texts]
    nll = [-x for x in lm.loglikelihood_rolling(requests)]
    tokens = [len(lm.tok_encode(t)) for t in texts]
    ce = sum(nll) / sum(tokens)
    # delta-method standard error of a ratio of sums (token-weighted mean)
    mean_tokens, n = sum(tokens) / len(tokens), len(tokens)
    var = sum((a - ce * b) ** 2 for a, b in zip(nll, tokens)) / max(n - 1, 1)
    stderr = math.sqrt(var / n) / mean_tokens
    context = dict(context, wall_s=round(time.perf_counter() - start, 2), created_at=now())
    row = BenchmarkResult(**context, task=FORGETTING, metric="token_ce", value=ce, stderr=stderr,
                          n=n, task_version=FORGETTING_VERSION, higher_is_better=False)
    samples = [{**_key_columns(context), "task": FORGETTING, "doc_id": i, "prompt": t,
                "choices": [], "target": None, "responses": [a, b], "metrics": {"token_ce": a / b},
                "doc": None, "created_at": context["created_at"]}
               for i, t, a, b in zip(indices, texts, nll, tokens)]
    return [row], samples


def _key_columns(context: dict) -> dict:
    return {"model_id": context["model_id"], "benchmark": context["benchmark"],
            "benchmark_version": context["benchmark_version"],
            "limit_n": context["limit"] or 0, "shots": context["shots"]}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" for an undefined stderr
    return None if math.isnan(number) else number


def _plain(value):
    """JSON-safe copy of lm-eval's sample values (tuples, numpy scalars)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return value.item() if hasattr(value, "item") else str(value)


# ---------------------------------------------------------------------------- output

def headline(results: list[BenchmarkResult]) -> list[BenchmarkResult]:
    """The rows a table shows: the benchmark's own rows (a tag has none: its tasks)."""
    named = {r.benchmark for r in results if r.task == r.benchmark}
    return [r for r in results if r.task == r.benchmark or r.benchmark not in named]


def format_table(results: list[BenchmarkResult],
                 compare: list[BenchmarkResult] | None = None) -> str:
    """A plain-text table; with `compare`, the other model's value and the delta (ours - other)."""
    if not results:
        return "(no benchmark results)"
    other = {(r.benchmark, r.task, r.metric): r for r in (compare or [])}
    first = results[0]
    lines = [f"model {first.model_name} ({first.model_id}); backend {first.backend} "
             f"{first.dtype}; lm-eval {first.lm_eval_version}; data {first.data_source}"]
    header = f"{'benchmark':<16} {'task':<16} {'metric':<10} {'value':>7} {'stderr':>7} " \
             f"{'n':>6} {'limit':>6} {'wall_s':>7}"
    lines.append(header + ("  other   delta" if compare is not None else "") + "  cached")
    for r in headline(results):
        cells = (f"{r.benchmark:<16.16} {r.task:<16.16} {r.metric:<10.10} {_fmt(r.value):>7} "
                 f"{_fmt(r.stderr):>7} {r.n:>6} {r.limit or 'full':>6} {r.wall_s:>7.1f}")
        if compare is not None:
            o = other.get((r.benchmark, r.task, r.metric))
            delta = r.value - o.value if o and None not in (r.value, o.value) else None
            cells += f"  {_fmt(o.value if o else None):>6} {_fmt(delta, signed=True):>7}"
        lines.append(cells + ("  yes" if r.cached else ""))
    return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def to_json(results: list[BenchmarkResult]) -> list[dict]:
    return [{**asdict(r), "created_at": r.created_at.isoformat() if r.created_at else None}
            for r in results]
