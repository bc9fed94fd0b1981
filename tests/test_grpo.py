"""GRPO (loop/train/grpo.py) on the tiny random model: prompts come from the pool (targeted pool
rows first, dev/test never), a run writes a standard PEFT adapter and logs the mean reward, a
rerun returns the finished run, SIGKILL + rerun finishes the planned steps, a cycle with
method = "sft+grpo" trains SFT then GRPO from it, and GRPO raises the mean reward on a planted easy
task (a tiny model that can learn: tiny-random itself cannot, see `_learnable_tiny_model`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import classification_records, write_task
from evals.rewards import SuiteReward
from evals.suites import DEFAULT_SUITE
from loop.core.records import Example
from loop.train.config import TrainConfig
from loop.train.grpo import select_prompts, task_reward, train_grpo
from loop.train.lora import last_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}
FAST = TrainConfig(max_steps=4, epochs=None, batch_size=4, grpo_num_generations=2,
                   grpo_learning_rate=1e-3, save_steps=4, log_steps=2, bf16=False,
                   method="grpo")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pool(n: int = 8) -> list[Example]:
    return [Example(f"p{i}", "Answer yes.", "yes", f"Question {i}?", split="train")
            for i in range(n)]


def test_prompts_are_pool_rows_targeted_ones_first():
    rows = pool(6)
    corrected = Example("g1", "Answer yes.", "yes!", "Question 9?")  # not a pool row
    targeted = [corrected, Example("g2", rows[4].instruction, rows[4].output, rows[4].input)]
    chosen = select_prompts(rows, targeted, n=3, seed=0)
    assert chosen[0] == rows[4] and len(chosen) == 3
    assert all(e in rows for e in chosen)
    assert select_prompts(rows, targeted, 3, 0) == chosen  # seeded
    assert len(select_prompts(rows, [], 100, 0)) == 6


def test_the_task_reward_never_holds_a_dev_or_test_prompt(tmp_path):
    from loop.data.tasks import load_task

    train = classification_records(12, 100)
    test = classification_records(4)
    train.append(dict(test[0], output="blue"))  # a pool row repeating a test prompt
    task = load_task(write_task(tmp_path / "t", {"train": train, "dev":
                                                 classification_records(4, 300), "test": test}))
    reward = task_reward(task)
    held = {(e.instruction, e.input) for s in ("dev", "test") for e in task.split(s)}
    assert len(reward.examples) == 12
    assert not {(e.instruction, e.input) for e in reward.examples.values()} & held


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo")
    return train_grpo("tiny-random", pool(), SuiteReward(DEFAULT_SUITE, pool()), out, FAST,
                      max_completion_length=4, progress=False)


def test_grpo_writes_a_standard_adapter_and_logs_rewards(grpo_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loop.models.loading import load_model

    assert grpo_run.steps_done == grpo_run.total_steps == 4
    assert [r.step for r in grpo_run.logs] == [2, 4]
    assert all(r.reward is not None for r in grpo_run.logs)
    assert grpo_run.tokens > 0 and grpo_run.tokens_per_s > 0  # trl's count over this run's time
    out = Path(grpo_run.adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(load_model("tiny-random").base_path)
    model = PeftModel.from_pretrained(base, str(out))
    assert list(model.peft_config) == ["default"]
    assert json.loads((out / "train_inputs.json").read_text())["method"] == "grpo"


def test_grpo_checkpoints_at_least_every_quarter_of_its_run():
    """A cycle's GRPO stage is a few steps of ~100 s on a CPU: checkpointing every save_steps
    (50) alone meant a kill in it restarted from step 0."""
    from loop.train.grpo import grpo_save_steps

    config = TrainConfig(method="grpo", batch_size=8, grad_accum=1, grpo_num_generations=4,
                         save_steps=50, epochs=1.0, max_steps=None)
    assert grpo_save_steps(config, n_prompts=8) == 1  # 2 prompts a step: 4 steps
    assert grpo_save_steps(config, n_prompts=200) == 25  # 100 steps
    assert grpo_save_steps(config.model_copy(update={"save_steps": 10}), 200) == 10
    assert grpo_save_steps(config.model_copy(update={"max_steps": 12}), 200) == 3


def test_rerun_returns_the_finished_run(grpo_run):
    again = train_grpo("tiny-random", pool(), SuiteReward(DEFAULT_SUITE, pool()),
                       grpo_run.adapter_dir, FAST, max_completion_length=4, progress=False)
    assert again.train_id == grpo_run.train_id and again.elapsed_s == grpo_run.elapsed_s


def test_grpo_samples_in_bf16(tmp_path):
    """bf16 LoRA layers take bf16 inputs only under autocast: trl's sampling ran outside it and
    the first step of a bf16 run failed on a dtype mismatch (smollm2 on rentalcars)."""
    config = FAST.model_copy(update={"bf16": True, "max_steps": 2, "save_steps": 2})
    result = train_grpo("tiny-random", pool(), SuiteReward(DEFAULT_SUITE, pool()), tmp_path,
                        config, max_completion_length=4, progress=False)
    assert result.steps_done == 2 and result.precision == "bf16"

def test_prompts_outside_the_rewards_pool_are_refused(tmp_path):
    from loop.train.outputs import TrainingError

    with pytest.raises(TrainingError, match="not rows of the reward's pool"):
        train_grpo("tiny-random", pool(), SuiteReward(DEFAULT_SUITE, pool()[:4]), tmp_path,
                   FAST, max_completion_length=4, progress=False)


def _task(tmp_path: Path, extra: str = "") -> Path:
    return write_task(tmp_path / "task", {"train": classification_records(16, 100),
                                          "dev": classification_records(4, 300),
                                          "test": classification_records(4)},
                      "[generation]\nmax_new_tokens = 4\n[training]\nbatch_size = 4\n"
                      "grpo_num_generations = 2\nbf16 = false\nlog_steps = 2\n"
                      'method = "grpo"\n' + extra)


def test_sigkill_mid_grpo_then_rerun_finishes_the_planned_steps(tmp_path):
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "loop.train.grpo", "--task", str(_task(tmp_path)),
           "--workspace", str(ws), "--model", "tiny-random", "--max-steps", "24",
           "--save-steps", "2", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
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
    assert 0 < step < 24
    rerun = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = json.loads(rerun.stdout)
    assert result["resumed_from_step"] == step
    assert result["total_steps"] == result["steps_done"] == 24
    assert result["adapter_dir"] == str(adapter_dir)
    assert all(row["reward"] is not None for row in result["logs"])


def test_the_cycle_runs_sft_then_grpo_from_it(tmp_path):
    from loop.store.db import Store

    extra = ("[cycle]\nbase_model = \"tiny-random\"\nseed = 3\narena = false\n"
             "benchmarks = false\n[targeted]\nn = 8\n")
    task = _task(tmp_path, extra).read_text().replace('method = "grpo"',
                                                      'method = "sft+grpo"\nmax_steps = 2\n'
                                                      "save_steps = 2\ngrpo_prompts = 8\n"
                                                      "search = false")
    (tmp_path / "task" / "task.toml").write_text(task)
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "cycle", "--task",
                           str(tmp_path / "task" / "task.toml"), "--workspace", str(ws),
                           "--json"], capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    with Store(ws, read_only=True) as store:
        runs = store.query("SELECT parent_adapter, adapter_path FROM training_runs "
                           "WHERE status = 'done' ORDER BY created_at")
        rewards = store.query("SELECT reward FROM train_logs WHERE reward IS NOT NULL")
    assert len(runs) == 2 and rewards
    sft, grpo = runs
    assert Path(grpo["parent_adapter"]).resolve() == Path(sft["adapter_path"]).resolve()
    assert Path(summary["candidate"]["name"].split("+", 1)[1]).resolve() == \
        Path(grpo["adapter_path"]).resolve()
    assert "promote" in summary["gate"]


def test_batch_size_must_hold_whole_groups(tmp_path):
    from loop.core.errors import ConfigError
    from loop.data.tasks import load_task

    path = _task(tmp_path)
    path.write_text(path.read_text().replace("grpo_num_generations = 2", "grpo_num_generations = 3"))
    with pytest.raises(ConfigError, match="multiple of grpo_num_generations"):
        load_task(path)


def _learnable_tiny_model(directory: Path) -> Path:
    """tiny-random's architecture and tokenizer with an untied output layer of std 0.5.

    tiny-random itself cannot learn from any reward: its tied embeddings have std 0.02 and the
    final RMSNorm fixes |h| at sqrt(64), so no logit can exceed ~1.3 whatever LoRA does to the
    layers: every token stays at ~1/49k (measured: 24 GRPO steps at 1e-2 left the mean reward
    flat, 0.082 -> 0.088). With an output layer of std 0.5 the sampling distribution is peaked
    and LoRA on the layers can move it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from loop.models.loading import tiny_random_checkpoint

    source = tiny_random_checkpoint()
    config = LlamaConfig.from_pretrained(source)
    config.tie_word_embeddings = False
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0, 0.5)
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def test_a_tiny_grpo_run_raises_the_mean_reward_on_a_planted_easy_task(tmp_path):
    """The task's own reward (the exact-answer suite: 0.5 x exact match + 0.5 x character
    similarity to the reference) on one-token answers: the first token decides the reward, and
    the model must move its samples towards tokens that share the reference's letters. Measured
    (seed 0): 0.10, 0.12 in the first two steps, 0.235 from step 6 on; the same run at a learning
    rate of 1e-9 stays at 0.10-0.15 (last four 0.118), which this assertion fails."""
    from loop.data.tasks import load_task
    from loop.store.db import Store
    from loop.train.grpo import train_grpo_for_task

    def rows(n: int, offset: int) -> list[dict]:
        return [{"instruction": "Answer.", "input": f"Question {i + offset}?",
                 "output": "etaoinsrhl"} for i in range(n)]

    toml = write_task(tmp_path / "task", {"train": rows(8, 0), "dev": rows(2, 100),
                                          "test": rows(2, 200)},
                      'answer = "exact"\n[generation]\nmax_new_tokens = 1\n[training]\n'
                      "max_steps = 12\nsave_steps = 12\nlog_steps = 1\nbatch_size = 8\n"
                      "grpo_num_generations = 4\ngrpo_learning_rate = 5e-3\ngrpo_beta = 0.0\n"
                      'grpo_prompts = 8\nbf16 = false\nseed = 0\nmethod = "grpo"\n')
    task = load_task(toml)
    ws = tmp_path / "ws"
    base = str(_learnable_tiny_model(tmp_path / "learnable-tiny"))
    with Store(ws) as store:
        result = train_grpo_for_task(store, task, ws, base, progress=False)
        stored = [r["reward"] for r in store.query(
            "SELECT reward FROM train_logs WHERE train_id = ? ORDER BY step", [result.train_id])]
    assert result.steps_done == 12 and len(stored) == 12
    assert stored == pytest.approx([r.reward for r in result.logs])
    first, last = sum(stored[:2]) / 2, sum(stored[-4:]) / 4
    assert last > first + 0.05, stored
