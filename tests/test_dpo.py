"""DPO on the tiny random model: the loss goes down on the pairs it trains on, the adapter is a
standard PEFT adapter, a rerun returns the finished run, sft+dpo starts from (and is referenced
to) the SFT adapter, and SIGKILL + rerun finishes the planned steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loop.core.pairs import PreferencePair
from loop.core.records import Example
from loop.train.lora import last_checkpoint, micro_batch
from loop.train.sft import train_adapter
from loop.train.config import TrainConfig
from loop.train.dpo import train_dpo

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}
COLORS = ["blue", "green", "red"]
FAST = TrainConfig(max_steps=16, epochs=None, batch_size=4, learning_rate=1e-2, save_steps=8,
                   log_steps=2, bf16=False, method="dpo", dpo_beta=0.5,
                   dpo_learning_rate=None)  # DPO at learning_rate: a visible drop in 16 steps


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pairs(n: int = 12) -> list[PreferencePair]:
    """The colour word preferred over a failing non-answer (learnable by a tiny random model in a
    few steps, unlike an item-by-item mapping)."""
    out = []
    for i in range(n):
        right, wrong = COLORS[i % 3], "I do not know."
        instruction = f"Item {i}: name its colour."
        out.append(PreferencePair("failure", "colors", f"ex{i}", instruction, "", right, wrong,
                                  "reference", "m0", f"run:{i}"))
    return out


def dpo_loss(model_name: str, ps, beta: float, ref_name: str | None = None) -> float:
    """The mean DPO loss of `model_name` on the pairs, reference = `ref_name` (default: base)."""
    import torch
    import torch.nn.functional as F

    from loop.models.loading import load_model
    from loop.core.prompts import build_prompt, completion_text

    def logps(name):
        lm = load_model(name)
        tok, out = lm.tokenizer, []
        for p in ps:
            ex = p.example()
            prompt = tok(build_prompt(tok, ex), add_special_tokens=False)["input_ids"]
            row = []
            for answer in (p.chosen, p.rejected):
                ids = tok(completion_text(tok, Example(ex.id, ex.instruction, answer)),
                          add_special_tokens=False)["input_ids"]
                x = torch.tensor([prompt + ids])
                with torch.no_grad():
                    logits = lm.model(x).logits[0, len(prompt) - 1:-1].float()
                row.append(logits.log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).sum())
            out.append(row)
        return torch.tensor(out)

    pol, ref = logps(model_name), logps(ref_name or model_name.split("+")[0])
    margin = (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])
    return float(-F.logsigmoid(beta * margin).mean())


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("dpo")
    return train_dpo("tiny-random", pairs(), out, FAST, progress=False)


def test_micro_batch_divides_the_batch_and_fits_the_budget():
    # a DPO pair of longest row 100 is 200 tokens: 5 pairs would fit, 4 divides 16
    assert micro_batch(16, 1024, 2 * 100) == 4
    assert micro_batch(16, 1024, 2 * 2000) == 1
    assert micro_batch(6, 100_000, 2 * 10) == 6
    assert micro_batch(8, 300, 100) == 2  # GRPO completions, one row each: 3 fit, 2 divides 8


def test_dpo_lowers_the_dpo_loss_and_writes_a_standard_adapter(dpo_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loop.models.loading import load_model

    assert dpo_run.steps_done == dpo_run.total_steps == 16
    before = dpo_loss("tiny-random", pairs(), FAST.dpo_beta)  # policy = reference: log 2
    after = dpo_loss(f"tiny-random+{dpo_run.adapter_dir}", pairs(), FAST.dpo_beta)
    assert abs(before - 0.6931) < 1e-3
    assert after < before - 0.1, (before, after)
    logged = [r.loss for r in dpo_run.logs if r.loss is not None]
    assert logged[-1] < logged[0]
    out = Path(dpo_run.adapter_dir)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()
    base = AutoModelForCausalLM.from_pretrained(load_model("tiny-random").base_path)
    model = PeftModel.from_pretrained(base, str(out))
    assert list(model.peft_config) == ["default"]


def test_rerun_returns_the_finished_run(dpo_run):
    again = train_dpo("tiny-random", pairs(), dpo_run.adapter_dir, FAST, progress=False)
    assert again.train_id == dpo_run.train_id and again.elapsed_s == dpo_run.elapsed_s


def test_sft_then_dpo_starts_from_and_is_referenced_to_the_sft_adapter(tmp_path):
    sft_cfg = TrainConfig(max_steps=6, epochs=None, batch_size=4, learning_rate=1e-2,
                          save_steps=6, bf16=False)
    examples = [p.example() for p in pairs()]
    sft = train_adapter("tiny-random", examples, tmp_path / "sft", sft_cfg, progress=False)
    cfg = TrainConfig(max_steps=8, epochs=None, batch_size=4, learning_rate=1e-2, save_steps=8,
                      log_steps=2, bf16=False, method="sft+dpo", dpo_beta=0.5,
                      dpo_learning_rate=None)
    dpo = train_dpo("tiny-random", pairs(), tmp_path / "dpo", cfg,
                    parent_adapter=sft.adapter_dir, progress=False)
    assert dpo.parent_adapter == sft.adapter_dir
    sft_name, dpo_name = f"tiny-random+{sft.adapter_dir}", f"tiny-random+{dpo.adapter_dir}"
    assert abs(dpo_loss(sft_name, pairs(), 0.5, ref_name=sft_name) - 0.6931) < 1e-3
    assert dpo_loss(dpo_name, pairs(), 0.5, ref_name=sft_name) < 0.6931 - 0.05


def test_sigkill_mid_dpo_then_rerun_finishes_the_planned_steps(tmp_path):
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    test_rows = [{"instruction": f"Other {i}: name a colour.", "output": "red"} for i in range(4)]
    (task_dir / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    (task_dir / "task.toml").write_text('name = "colors"\ntest = "test.jsonl"\n'
                                        "[training]\nbatch_size = 4\nlearning_rate = 0.01\n"
                                        "bf16 = false\nlog_steps = 2\n")
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text("".join(json.dumps(p.row()) + "\n" for p in pairs()))
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "loop.train.dpo", "--task", str(task_dir / "task.toml"),
           "--workspace", str(ws), "--pairs", str(pairs_path), "--model", "tiny-random",
           "--max-steps", "40", "--save-steps", "4", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(last_checkpoint(d / "checkpoints")[1] for d in ws.glob("adapters/*")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    adapter_dir = next(ws.glob("adapters/*"))
    assert not (adapter_dir / "train_result.json").exists()  # it really died mid-run
    _, step = last_checkpoint(adapter_dir / "checkpoints")
    assert 0 < step < 40

    rerun = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = json.loads(rerun.stdout)
    assert result["resumed_from_step"] == step
    assert result["total_steps"] == result["steps_done"] == 40
    assert result["adapter_dir"] == str(adapter_dir)
    assert json.loads((adapter_dir / "train_inputs.json").read_text())["method"] == "dpo"


def test_the_cycle_trains_the_method_its_task_names(tmp_path):
    """`[training] method = "sft+dpo"` in the task TOML: the cycle's train stage runs SFT on the
    targeted data, builds pairs from the champion's dev failures, then DPO from the SFT adapter;
    the candidate it evaluates is the DPO adapter."""
    from conftest import classification_records, write_task
    from loop.store.db import Store

    extra = ("[generation]\nmax_new_tokens = 6\nbatch_size = 8\n"
             "[cycle]\nbase_model = \"tiny-random\"\nseed = 3\narena = false\nbenchmarks = false\n"
             "[targeted]\nn = 16\n"
             "[training]\nmax_steps = 4\nsave_steps = 4\nbatch_size = 4\nmethod = \"sft+dpo\"\n")
    task = write_task(tmp_path / "task", {"train": classification_records(40, 100),
                                          "dev": classification_records(12, 300),
                                          "test": classification_records(12)}, extra)
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "cycle", "--task", str(task),
                           "--workspace", str(ws), "--json"], capture_output=True, text=True,
                          env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    with Store(ws, read_only=True) as store:
        runs = store.query("SELECT train_id, parent_adapter, adapter_path, config "
                           "FROM training_runs WHERE status = 'done' ORDER BY created_at")
    # SFT runs first (one per recipe trial, loop/train/search.py), then DPO from the kept one
    *sfts, dpo = runs
    assert len(sfts) >= 1 and all(r["parent_adapter"] is None for r in sfts)
    assert json.loads(dpo["config"])["method"] == "sft+dpo"
    with Store(ws, read_only=True) as store:
        from loop.store import cycles

        kept = cycles.stage_result(store, summary["cycle_id"], "train")["sft_adapter_dir"]
    assert Path(dpo["parent_adapter"]).resolve() == Path(kept).resolve()
    assert Path(kept).resolve() in {Path(r["adapter_path"]).resolve() for r in sfts}
    candidate_adapter = summary["candidate"]["name"].split("+", 1)[1]
    assert Path(candidate_adapter).resolve() == Path(dpo["adapter_path"]).resolve()
    pairs_dir = next(ws.rglob("pairs"))
    rows = [json.loads(line) for f in pairs_dir.glob("*.jsonl") for line in f.open()]
    assert rows and set(rows[0]) >= {"prompt", "chosen", "rejected"}


@pytest.mark.parametrize("method, calls", [
    ("sft", ["sft:tiny-random"]),
    ("dpo", ["pairs", "dpo:tiny-random"]),
    ("sft+dpo", ["sft:tiny-random", "pairs", "dpo:tiny-random+/a/sft"]),
    ("grpo", ["grpo:tiny-random"]),
    ("sft+grpo", ["sft:tiny-random", "grpo:tiny-random+/a/sft"]),
])
def test_evalloop_train_runs_the_method_the_task_names(tmp_path, monkeypatch, method, calls):
    """`evalloop train` used to run SFT whatever `[training] method` said."""
    from types import SimpleNamespace

    from conftest import classification_records, write_task
    from loop import cli
    from loop.targeted import pairs as pairs_module
    from loop.train import dpo, grpo, sft

    adapter = (tmp_path / "sft").resolve()
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")  # what a ModelSpec's adapter is checked for
    seen = []
    result = SimpleNamespace(adapter_dir=str(adapter), to_json=dict)

    def named(model) -> str:  # the CLI's name, or the SFT adapter as a ModelSpec
        return getattr(model, "name", model)

    monkeypatch.setattr(sft, "train_for_task", lambda store, task, ws, model, **kw: (
        seen.append(f"sft:{named(model)}"), result)[1])
    monkeypatch.setattr(pairs_module, "build_pairs", lambda store, task: (
        seen.append("pairs"), SimpleNamespace(n_pairs=3, dataset_path="p.jsonl",
                                              manifest_hash="h"))[1])
    monkeypatch.setattr(dpo, "train_dpo_for_task", lambda store, task, ws, path, model, **kw: (
        seen.append(f"dpo:{named(model)}"), result)[1])
    monkeypatch.setattr(grpo, "train_grpo_for_task", lambda store, task, ws, model, **kw: (
        seen.append(f"grpo:{named(model)}"), result)[1])
    task = write_task(tmp_path / "t", {"train": classification_records(8),
                                       "test": classification_records(4)},
                      f'[training]\nmethod = "{method}"\n')
    assert cli.main(["train", "--task", str(task), "--workspace", str(tmp_path / "ws"),
                     "--model", "tiny-random", "--json"]) == 0
    assert seen == [c.replace("/a/sft", str(adapter)) for c in calls]
