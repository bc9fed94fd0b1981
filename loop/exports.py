"""Exports in the field's formats: an eval run's items as CSV/Parquet, a model's benchmark results
as lm-eval's results JSON, a training JSONL as a Hugging Face `datasets` folder with a card.

    evalloop export --failures latest --format parquet items.parquet
    evalloop export --benchmarks smollm2-135m-instruct --format lm-eval results.json
    evalloop export --data ws/targeted/BATCH.jsonl --hf-card hf-dataset/

The formatting functions are pure (rows in, document out); the `export_*` functions do the I/O.
Everything is offline: nothing is pushed to a hub.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from loop.core.cache import atomic_path, write_atomic
from loop.core.errors import EvalloopError
from loop.store import benchmarks as benchmark_queries
from loop.store import runs as run_queries
from loop.store.db import Store

ITEM_COLUMNS = ("run_id", "task_id", "model_id", "split", "example_id", "category", "passed",
                "instruction", "input", "reference", "prediction", "failed_checks",
                "signatures", "failure_categories", "similarity", "cluster_id", "latency_s")
LIST_COLUMNS = ("failed_checks", "signatures", "failure_categories")
FORMATS = {"csv": ".csv", "parquet": ".parquet", "lm-eval": ".json"}
LM_EVAL_BOOTSTRAP_ITERS = 100000  # simple_evaluate's default, which evals.benchmarks keeps
DATA_FILE = "data/train.jsonl"


class ExportError(EvalloopError):
    """An export's input is missing or unknown (run, model results, file)."""


# ---------------------------------------------------------------------------- eval run items

def resolve_run(store: Store, run: str) -> dict:
    """An eval run by id, unique id prefix, or `latest` (the last finished one)."""
    if run.lower() == "latest":
        rows = run_queries.finished_eval_runs(store, 1)
    else:
        rows = run_queries.finished_eval_runs_by_prefix(store, run)
    if len(rows) == 1:
        return rows[0]
    if rows:
        raise ExportError(f"Run id prefix '{run}' matches {len(rows)} eval runs "
                          f"({', '.join(r['run_id'] for r in rows[:5])}); give more characters.")
    recent = run_queries.finished_eval_runs(store, 5)
    known = ", ".join(f"{r['run_id']} ({r['task_id']}/{r['split']})" for r in recent)
    raise ExportError(f"No finished eval run '{run}' in {store.path}. "
                      + (f"Recent runs: {known}." if known else "Run `evalloop eval` first."))


def run_item_rows(store: Store, run_id: str) -> list[dict]:
    """One row per item of an eval run: reference, prediction, and for failures the failed
    checks, signatures and cluster; list columns as lists (never None)."""
    rows = run_queries.run_item_rows(store, run_id)
    for row in rows:
        for column in LIST_COLUMNS:
            row[column] = list(row[column] or [])
    return rows


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP: cells a spreadsheet evaluates
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value):
    """A text cell that a spreadsheet would run as a formula (it starts with = + - @, a tab or
    a carriage return; OWASP's CSV-injection rule) gets a leading single quote, so it shows as
    text. Plain numbers such as "-5" stay as they are; other values pass through."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and \
            not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_items(rows: Sequence[dict], out: Path, fmt: str) -> Path:
    """CSV (lists joined by '; ') or Parquet (lists kept as lists), columns ITEM_COLUMNS; text
    cells escaped against formula injection in both (`safe_cell`: Parquet files are opened in
    spreadsheets too)."""
    with atomic_path(out) as tmp:
        if fmt == "csv":
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=ITEM_COLUMNS)
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: safe_cell("; ".join(row[k]) if k in LIST_COLUMNS
                                                  else row[k]) for k in ITEM_COLUMNS})
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema([(k, pa.list_(pa.string()) if k in LIST_COLUMNS else
                                 pa.bool_() if k == "passed" else
                                 pa.float64() if k in ("similarity", "latency_s") else
                                 pa.string()) for k in ITEM_COLUMNS])
            table = pa.Table.from_pylist(
                [{k: [safe_cell(v) for v in r[k]] if k in LIST_COLUMNS else safe_cell(r[k])
                  for k in ITEM_COLUMNS} for r in rows], schema=schema)
            pq.write_table(table, tmp)
    return out


def export_items(store: Store, run: str, out: Path, fmt: str) -> tuple[Path, int]:
    rows = run_item_rows(store, resolve_run(store, run)["run_id"])
    return write_items(rows, out, fmt), len(rows)


# ---------------------------------------------------------------------------- lm-eval results

def benchmark_rows(store: Store, model: str, model_id: str | None) -> list[dict]:
    """The latest stored run of each benchmark of one model (by fingerprint, else by name or
    id)."""
    rows = benchmark_queries.model_results(store, model, model_id)
    if not rows:
        known = benchmark_queries.benchmarked_models(store)
        raise ExportError(f"No benchmark results for model '{model}' in {store.path}: run "
                          f"`evalloop bench --model {model}` first."
                          + (f" Models with results: {', '.join(known)}." if known else ""))
    rows = [r for r in rows if r["model_id"] == rows[-1]["model_id"]]  # a reused name: newest
    latest: dict[str, tuple] = {}  # benchmark -> run key of its newest run
    for r in rows:  # ascending created_at: the last one wins
        latest[r["benchmark"]] = _run_key(r)
    return [r for r in rows if _run_key(r) == latest[r["benchmark"]]]


def _run_key(row: dict) -> tuple:
    return (row["model_id"], row["benchmark"], row["benchmark_version"], row["limit_n"],
            row["shots"], row["created_at"])


def lm_eval_results(rows: Sequence[dict]) -> dict:
    """Stored `benchmark_results` rows -> the dict lm-eval's `simple_evaluate` returns and its
    CLI writes (`lm_eval.result_schema.EvalResults`). What evalloop does not record is left
    out or None: full YAML configs (a minimal one per task), git hash, tokenizer info; a
    group's subtasks are listed flat (intermediate groups are not nested)."""
    results: dict[str, dict] = {}
    runs: dict[str, list[dict]] = {}
    for r in rows:
        runs.setdefault(r["benchmark"], []).append(r)
    out = {k: {} for k in ("groups", "group_subtasks", "configs", "versions", "n-shot",
                           "higher_is_better", "n-samples")}
    for benchmark, run in runs.items():
        tasks = list(dict.fromkeys([r["task"] for r in run if r["task"] == benchmark]
                                   + [r["task"] for r in run]))
        for r in run:
            entry = results.setdefault(r["task"], {"name": r["task"], "alias": r["task"],
                                                   "sample_len": r["n"]})
            key = r["metric"] if "," in r["metric"] else f"{r['metric']},none"
            metric, _, filt = key.partition(",")
            entry[key] = r["value"]
            entry[f"{metric}_stderr,{filt}"] = "N/A" if r["stderr"] is None else r["stderr"]
            out["higher_is_better"].setdefault(r["task"], {})[metric] = r["higher_is_better"]
            out["versions"][r["task"]] = r["task_version"]
            out["n-shot"][r["task"]] = r["shots"]
        children = [t for t in tasks if t != benchmark]
        if benchmark in results and children:  # a group: its row also goes under "groups"
            out["groups"][benchmark] = results[benchmark]
            out["group_subtasks"][benchmark] = children
        for task in tasks if not children else children:
            n = results[task]["sample_len"]
            # the full split size is not stored; under --limit `original` is the subset size
            out["n-samples"][task] = {"original": n, "effective": n}
            out["configs"][task] = {"task": task, "num_fewshot": run[0]["shots"],
                                    "metadata": {"version": out["versions"][task]}}
    for results_key in ("configs", "versions", "n-shot", "higher_is_better"):
        out[results_key] = dict(sorted(out[results_key].items()))
    first, last = rows[0], max(rows, key=lambda r: r["created_at"])
    limits = {r["limit_n"] or None for r in rows}
    limit = next(iter(limits)) if len(limits) == 1 else None  # per benchmark under "evalloop"
    return {"results": results, **({"groups": out.pop("groups")} if out["groups"] else {}),
            **{k: v for k, v in out.items() if k != "groups"},
            "config": _lm_eval_config(first, limit),
            "git_hash": None, "date": _timestamp(last["created_at"]),
            "lm_eval_version": last["lm_eval_version"],
            "model_source": _model_source(first["backend"]),
            "model_name": first["model_name"],
            "model_name_sanitized": _sanitize(first["model_name"] or first["model_id"]),
            "total_evaluation_time_seconds": str(round(sum(
                {_run_key(r): r["wall_s"] or 0 for r in rows}.values()), 2)),
            "evalloop": {"model_id": first["model_id"], "benchmarks": {
                b: {"benchmark_version": run[0]["benchmark_version"],
                    "limit": run[0]["limit_n"] or None, "backend": run[0]["backend"],
                    "data_source": run[0]["data_source"], "dtype": run[0]["dtype"],
                    "lm_eval_version": run[0]["lm_eval_version"],
                    "created_at": str(run[0]["created_at"])} for b, run in runs.items()}}}


def _lm_eval_config(row: dict, limit: int | None) -> dict:
    base, _, adapter = (row["model_name"] or row["base"]).partition("+")
    return {"model": _model_source(row["backend"]),
            "model_args": {"pretrained": base, **({"peft": adapter} if adapter else {})},
            "model_dtype": row["dtype"], "batch_size": None, "batch_sizes": [], "device": None,
            "use_cache": None, "limit": limit, "bootstrap_iters": LM_EVAL_BOOTSTRAP_ITERS,
            "gen_kwargs": None, "random_seed": 0, "numpy_seed": row["seed"],
            "torch_seed": row["seed"], "fewshot_seed": row["seed"]}


def _model_source(backend: str) -> str:
    return "hf" if backend.startswith("hf") else backend


def _sanitize(name: str) -> str:
    from lm_eval.utils import sanitize_model_name

    return sanitize_model_name(name)


def _timestamp(value) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def export_lm_eval(store: Store, model: str, out: Path) -> tuple[Path, int]:
    from loop.models.loading import fingerprint, parse_model_name

    try:
        model_id = fingerprint(parse_model_name(model))
    except EvalloopError:
        model_id = None  # a stored name or id of a model that no longer resolves
    rows = benchmark_rows(store, model, model_id)
    data = lm_eval_results(rows)
    write_atomic(out, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    return out, len(data["results"])


# ---------------------------------------------------------------------------- HF datasets

def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for n rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>1T" if n > 10**12 else "10M<n<100M"


def dataset_card(name: str, n: int, columns: Sequence[str], data_hash: str,
                 manifest: dict | None) -> str:
    """README.md for a `datasets` folder: YAML header (license, task, size, data files) and
    the provenance from the generation manifest when there is one."""
    pairs = {"prompt", "chosen", "rejected"} <= set(columns)  # trl's preference format
    header = ["---", "license: unknown", "task_categories:", "- text-generation",
              "size_categories:", f"- {size_category(n)}", "tags:", "- evalloop",
              "- dpo" if pairs else "- sft",
              f"pretty_name: {json.dumps(name)}", "configs:", "- config_name: default",
              "  data_files:", "  - split: train", f"    path: {DATA_FILE}", "---", ""]
    body = [f"# {name}", "",
            (("Preference pairs (for DPO) " if pairs else "Supervised fine-tuning data ")
             + f"exported by evalloop: {n} rows, columns "
             f"{', '.join(f'`{c}`' for c in columns)}."), "",
            "```python", "from datasets import load_dataset",
            "ds = load_dataset(\"path/to/this/folder\", split=\"train\")", "```", "",
            "## Provenance", "", f"- data file sha256: `{data_hash}`"]
    if manifest is None:
        body.append("- no generation manifest was found beside the source file")
    else:
        if manifest.get("data_hash") not in (None, data_hash):
            body.append("- **the data differs from what the manifest describes** (its data_hash "
                        f"is `{manifest['data_hash']}`): it was edited after generation")
        for key in ("task", "batch_id", "run_id", "model_id", "created_at", "requested",
                    "accepted", "replay", "manifest_hash"):
            if manifest.get(key) is not None:
                body.append(f"- {key}: `{manifest[key]}`")
        strategies = manifest.get("by_strategy") or {}
        if strategies:
            body += ["", "| strategy | accepted | rejected |", "|---|---:|---:|"]
            body += [f"| {s} | {c.get('accepted', 0)} | {c.get('rejected', 0)} |"
                     for s, c in strategies.items()]
        if manifest.get("rejected"):
            body += ["", "Rejections by reason: " + ", ".join(
                f"{reason} {count}" for reason, count in manifest["rejected"].items())]
        body += ["", "The full manifest is `manifest.json` in this folder."]
    return "\n".join(header + body) + "\n"


def export_hf_dataset(jsonl: Path, out_dir: Path) -> tuple[Path, int]:
    """Copy a training JSONL into `out_dir/data/train.jsonl` with a dataset card (and the
    manifest beside it, when present), loadable by `datasets.load_dataset(out_dir)`."""
    if not jsonl.is_file():
        raise ExportError(f"Training data file {jsonl} does not exist.")
    data = jsonl.read_bytes()
    columns: dict[str, None] = {}
    n = 0
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ExportError(f"{jsonl}:{number} is not valid JSON ({exc.msg}).") from None
        if not isinstance(record, dict):
            raise ExportError(f"{jsonl}:{number} is not a JSON object.")
        columns.update(dict.fromkeys(record))
        n += 1
    if n == 0:
        raise ExportError(f"Training data file {jsonl} has no rows.")
    manifest_path = jsonl.with_name(f"{jsonl.stem}.manifest.json")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) \
        if manifest_path.is_file() else None
    (out_dir / DATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / DATA_FILE, data)
    if manifest is not None:
        write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2,
                                                            ensure_ascii=False) + "\n")
    write_atomic(out_dir / "README.md", dataset_card(
        jsonl.stem, n, list(columns), hashlib.sha256(data).hexdigest(), manifest))
    return out_dir, n
