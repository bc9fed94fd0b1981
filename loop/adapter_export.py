"""Share an adapter: a standard PEFT folder with a Hugging Face model card built from the store,
optionally uploaded to the Hub.

    evalloop export --adapter tiny-random+ws/adapters/abc --out shared/colors-lora
    evalloop export --adapter MODEL_ID_PREFIX --out shared/colors-lora --push-to-hub me/colors-lora

The folder holds adapter_config.json and adapter_model.safetensors exactly as training's
`save_pretrained` wrote them (copied: no model is loaded), with `base_model_name_or_path` set to
the base's Hub id where evalloop knows it, and README.md: YAML front matter (base_model,
library_name: peft, tags, model-index with the test pass rates) and a body with the cycle, the
training data, scores per category, benchmark deltas and the gate decision. The card is a pure
function of the store's records (`model_card`); the push takes its token from HF_TOKEN only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from loop.exports import ExportError
from loop.store.adapters import adapter_records, recent_adapters, stored_adapters
from loop.store.db import Store

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
# evalloop's builtin bases on the Hub. The embedded one is a dequantised Q4_1 GGUF of these
# weights, so the card says scores on the original weights may differ slightly.
HUB_BASES = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def resolve_adapter(store: Store, name: str, base: str) -> dict:
    """The stored model row for BASE+ADAPTER_DIR, an adapter dir, a model name or id prefix."""
    from loop.models.loading import fingerprint, parse_model_name

    key = name
    if "+" in name or Path(name).expanduser().is_dir():
        if "+" not in name:  # a bare adapter dir: its base is in its training record
            record = Path(name).expanduser() / "train_result.json"
            base = json.loads(record.read_text())["base"] if record.is_file() else base
            name = f"{base}+{name}"
        key = fingerprint(parse_model_name(name))
    rows = stored_adapters(store, key)
    if len(rows) == 1:
        return rows[0]
    if rows:
        raise ExportError(f"'{name}' matches {len(rows)} adapters ("
                          + ", ".join(r["model_id"] for r in rows[:5]) + "): give more of the id.")
    known = recent_adapters(store)
    raise ExportError(f"No adapter '{name}' is recorded in {store.path}: export adapters that "
                      "`evalloop train` or a cycle trained in this workspace (--workspace)."
                      + (" Recent ones: " + ", ".join(f"{r['model_id']} ({r['name']})"
                                                      for r in known) + "." if known else ""))


# ---------------------------------------------------------------------------- the card (pure)

def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def card_metadata(model: dict, records: dict, hub_base: str) -> dict:
    """The YAML front matter as huggingface_hub's ModelCardData: base model, peft, tags, and a
    model-index entry per test pass rate (overall and per category)."""
    from huggingface_hub import EvalResult, ModelCardData

    test, task = records["test"], _task(model, records)
    results = []
    if test:
        summary = test["summary"]
        dataset = {"dataset_type": task, "dataset_name": f"{task} (evalloop task)",
                   "dataset_split": "test", "task_type": "text-generation"}
        results.append(EvalResult(**dataset, metric_type="pass_rate", metric_name="pass rate",
                                  metric_value=summary["pass_rate"]))
        results += [EvalResult(**dataset, metric_type="pass_rate",
                               metric_name=f"pass rate: {cat}", metric_value=row["pass_rate"],
                               metric_config=cat)
                    for cat, row in summary["per_category"].items()]
    return ModelCardData(base_model=hub_base, library_name="peft",
                         tags=["evalloop", "lora", "peft", task], pipeline_tag="text-generation",
                         model_name=_title(model, records),
                         eval_results=results or None).to_dict()


def _task(model: dict, records: dict) -> str:
    return ((records["training"] or {}).get("task_id") or (records["cycle"] or {}).get("task_id")
            or (records["test"] or {}).get("task_id") or "unknown-task")


def _title(model: dict, records: dict) -> str:
    """`TASK LoRA adapter ADAPTER_HASH` (a model id is `BASE_ID+ADAPTER_HASH`)."""
    return f"{_task(model, records)} LoRA adapter {model['model_id'].rsplit('+', 1)[-1]}"


def model_card(model: dict, records: dict, hub_base: str) -> str:
    """README.md for the adapter folder: YAML front matter, then what produced it and its scores."""
    import yaml

    meta = card_metadata(model, records, hub_base)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    lines = [f"# {_title(model, records)}", "",
             f"A LoRA adapter on `{hub_base}`, trained and evaluated by evalloop.", ""]
    if model["base"] in HUB_BASES:
        lines += [(f"It was trained on evalloop's embedded copy of `{hub_base}` (the Q4_1 GGUF, "
                   "dequantised); on the original weights its scores may differ slightly."), ""]
    lines += ["```python", "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f"base = AutoModelForCausalLM.from_pretrained(\"{hub_base}\")",
              "model = PeftModel.from_pretrained(base, \"path/or/repo-of-this-adapter\")",
              f"tokenizer = AutoTokenizer.from_pretrained(\"{hub_base}\")", "```", ""]
    lines += _provenance(model, records) + _scores(records) + _benchmarks(records) \
        + _gate(records)
    return "---\n" + front + "---\n\n" + "\n".join(lines).rstrip() + "\n"


def _provenance(model: dict, records: dict) -> list[str]:
    training, dataset, cycle = records["training"], records["dataset"], records["cycle"]
    out = ["## How it was made", "", f"- model id (evalloop fingerprint): `{model['model_id']}`"]
    if cycle:
        out.append(f"- cycle: `{cycle['cycle_id']}` (task `{cycle['task_id']}`, attempt "
                   f"{cycle['attempt']}, status {cycle['status']}), champion before it: "
                   f"`{cycle['champion_name']}`")
    else:
        out.append("- trained outside a cycle (`evalloop train`)")
    if training:
        config = training["config"] or {}
        steps = f"{training['steps_done']}/{training['total_steps']} steps"
        out += [f"- training run: `{training['train_id']}`, method "
                f"{config.get('method', 'sft')}, {steps}, {training['n_train']} training / "
                f"{training['n_dev']} dev examples, final train loss "
                + ("n/a" if training["train_loss"] is None else f"{training['train_loss']:.4f}")
                + ", best dev loss "
                + ("n/a" if training["best_eval_loss"] is None
                   else f"{training['best_eval_loss']:.4f}"),
                "- LoRA: " + ", ".join(f"{k} {config[k]}" for k in (
                    "rank", "alpha", "dropout", "target_modules", "learning_rate", "epochs",
                    "max_steps", "batch_size", "seed") if config.get(k) is not None)]
        if training.get("parent_adapter"):
            out.append(f"- continued from adapter `{training['parent_adapter']}`")
    if dataset:  # the targeted data of a cycle: its manifest says where the rows came from
        counts = dataset["counts"] or {}
        size = ", ".join(f"{k} {v}" for k, v in counts.items() if isinstance(v, (int, float)))
        out.append(f"- training data: manifest `{dataset['manifest_hash']}` (batch "
                   f"`{dataset['batch_id']}`" + (f"; {size}" if size else "") + ")")
    elif training:
        out.append(f"- training data hash: `{training['dataset_hash']}`")
    return out + [""]


def _scores(records: dict) -> list[str]:
    test = records["test"]
    if not test:
        return ["## Scores", "", ("Not evaluated on the test split yet (`evalloop eval --model "
                                  "BASE+ADAPTER`)."), ""]
    s = test["summary"]
    out = ["## Test scores", "",
           (f"evalloop eval run `{test['run_id']}` on the `{test['task_id']}` test split "
            f"({s['n']} items, suite version {s['suite_version']})."), "",
           "| category | items | pass rate |", "|---|---:|---:|"]
    out += [f"| {cat} | {row['n']} | {_pct(row['pass_rate'])} |"
            for cat, row in s["per_category"].items()]
    return out + [f"| **overall** | {s['n']} | **{_pct(s['pass_rate'])}** |", ""]


def _benchmarks(records: dict) -> list[str]:
    deltas = ((records["cycle"] or {}).get("summary") or {}).get("benchmark_deltas") or {}
    latest = {(r["benchmark"], r["metric"]): r for r in records["benchmarks"]}  # newest last
    if not deltas and not latest:
        return []
    out = ["## Benchmarks", ""]
    if latest:
        out += ["| benchmark | metric | value | items |", "|---|---|---:|---:|"]
        out += [f"| {b} | {m} | {r['value']:.4f} | {r['n']} |" for (b, m), r in latest.items()
                if r["value"] is not None]
        out.append("")
    if deltas:
        out += ["Change against the champion in its cycle (candidate - champion):", ""]
        out += [f"- {name}: {delta:+.4f}" for name, delta in deltas.items()]
        out.append("")
    return out


def _gate(records: dict) -> list[str]:
    gate = records["gate"]
    if not gate:
        return []
    p = "n/a" if gate["p_value"] is None else f"{gate['p_value']:.3g}"
    out = ["## Gate decision", "",
           (f"**{'Promoted' if gate['promote'] else 'Not promoted (the champion was kept)'}**: "
            f"test pass rate {_pct(gate['champion_pass_rate'])} (champion) -> "
            f"{_pct(gate['candidate_pass_rate'])} (this adapter), McNemar p = {p}."), ""]
    out += [f"- [{'ok' if r['passed'] else 'NO'}] {r['check']}: {r['detail']}"
            for r in gate["reasons"] or []]
    return out + [""]


# ---------------------------------------------------------------------------- I/O

def export_adapter(store: Store, name: str, out_dir: Path, base: str) -> tuple[Path, dict]:
    """Write the PEFT folder + README.md to out_dir (new or empty); -> (folder, model row)."""
    model = resolve_adapter(store, name, base)
    adapter = Path(model["adapter"])
    missing = [f for f in PEFT_FILES if not (adapter / f).is_file()]
    if missing:
        raise ExportError(f"Adapter folder {adapter} lacks {', '.join(missing)}: it was moved or "
                          "deleted after training.")
    out = out_dir.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"Export target {out} exists and is not an empty directory.")
    hub_base = HUB_BASES.get(model["base"], model["base"])
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(adapter / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
    config = json.loads((adapter / "adapter_config.json").read_text())
    if model["base"] in HUB_BASES:  # not this machine's cache path: where others find the base
        config["base_model_name_or_path"] = hub_base
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = model_card(model, adapter_records(store, model["model_id"]), hub_base)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out, model


def push_to_hub(folder: Path, repo_id: str) -> str:
    """Upload the folder to a Hub model repo (created private when new); -> the commit URL.
    The token comes from HF_TOKEN only, never from a stored login."""
    import huggingface_hub

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ExportError("--push-to-hub needs a Hugging Face token in the HF_TOKEN environment "
                          "variable (a write token from huggingface.co/settings/tokens); the "
                          f"adapter folder {folder} is written and can be uploaded later.")
    try:
        api = huggingface_hub.HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=True, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message="Upload LoRA adapter exported by evalloop")
    except Exception as exc:  # noqa: BLE001 - network, auth, offline mode: one clear message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"Upload of {folder} to {repo_id} failed: {first}. The folder is "
                          "written; check HF_TOKEN, the repo id, HF_HUB_OFFLINE and the "
                          "network.") from None
    return str(getattr(info, "commit_url", info))
