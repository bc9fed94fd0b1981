"""LoRA GRPO with trl's GRPOTrainer: sampled answers to train-pool prompts, rewarded by the task's
own suite (evals/rewards.py), on the SFT LoRA setup.

    reward = SuiteReward(load_suite(task.settings), pool, held_out=dev + test)
    result = train_grpo("smollm2-135m-instruct", prompts, reward, "ws/adapters/x", config,
                        max_completion_length=48)
    # after SFT ("sft+grpo"): parent_adapter = the SFT adapter, trained further and the reference

Shell: `python -m loop.train.grpo --task T.toml --workspace WS [--parent ADAPTER]`.

The model is loaded exactly as for SFT (same base, precision, LoRA config and seed). With
`grpo_beta` > 0 the KL reference is the starting point: trl copies the starting adapter into a
frozen "ref" adapter (the base model for a fresh LoRA, the parent adapter otherwise); the saved
adapter is the trained one only. Each optimizer step samples `grpo_num_generations` completions
for each of `batch_size / grpo_num_generations` prompts (`grpo_temperature`, at most
`grpo_max_completion_length` tokens), scores them with the reward and takes one step on the
group-normalised advantages. Prompts are rendered as SFT and evaluation render them
(`loop.core.prompts`). Generation: vLLM in the trainer's process ("colocate") on CUDA when vllm is
installed, else trl's `model.generate` (bench/grpo.py measures that against the shared-prefix
decoder on CPU). Runs are fingerprinted (base, parent, prompts, reward definition, config,
completion length, system prompt -> train id -> output dir), checkpointed every `save_steps`
or every quarter of the run if sooner (`grpo_save_steps`), and resumed from the last complete checkpoint; a finished run is returned as is. OUT holds a
standard PEFT adapter, train_result.json and train_log.jsonl (loss and mean reward per logging
step), like SFT.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from evals.rewards import SuiteReward, held_out_rows
from loop import tracking
from loop.core.prompts import build_prompt
from loop.core.records import Example, content_hash
from loop.models.loading import DEFAULT_MODEL, ModelSpec, load_tokenizer, pick_device
from loop.train.config import TrainConfig, TrainResult, use_bf16
from loop.train.outputs import TrainingError, record_training
from loop.train.lora import (  # what GRPO shares with SFT and DPO
    CHECKPOINTS,
    LOG_FILE,
    LoraRun,
    check_qlora,
    claim_out_dir,
    load_trainable,
    micro_batch,
    quiet_progress,
    run_trainer,
    shell_main,
    starting_point,
    step_logger,
)
from loop.train.sft import examples_digest

GRPO_VERSION = "grpo-lora-v1"  # part of every GRPO train id: bump when GRPO semantics change
REWARD_KEY = "reward"  # trl's logged mean reward of a logging step


# ---------------------------------------------------------------------------- prompts (pure)

def _key(e: Example) -> tuple[str, str, str]:
    return (e.instruction, e.input, e.output)


def select_prompts(pool: Sequence[Example], targeted: Sequence[Example], n: int, seed: int
                   ) -> list[Example]:
    """Up to `n` pool rows: first those the targeted data drew from the pool for the champion's
    failures (in its order: by need), then the rest of the pool in a seeded order. Rows that are
    not pool rows (corrections, generated, teacher) are never prompts: their references are not
    the pool's."""
    by_key = {_key(e): e for e in pool}
    chosen: dict[str, Example] = {}
    for row in targeted:
        hit = by_key.get(_key(row))
        if hit is not None:
            chosen.setdefault(hit.id, hit)
    rest = [e for e in pool if e.id not in chosen]
    random.Random(seed).shuffle(rest)
    for e in rest:
        chosen.setdefault(e.id, e)
    return list(chosen.values())[:n]


def grpo_train_id(base_model_id: str, parent_id: str | None, prompts, reward: SuiteReward,
                  config: TrainConfig, max_completion_length: int,
                  system_prompt: str | None) -> str:
    """Same inputs -> same id -> same output dir (resume); never equal to an SFT or DPO id."""
    return content_hash(GRPO_VERSION, base_model_id, parent_id, examples_digest(prompts),
                        reward.identity(), config.identity(), max_completion_length,
                        system_prompt)


# ---------------------------------------------------------------------------- trainer

def _vllm_colocate(device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("vllm") is not None


def grpo_save_steps(config: TrainConfig, n_prompts: int) -> int:
    """Checkpoint at least every quarter of the run: a GRPO step samples before it learns (~100 s
    on a CPU), so the SFT-sized save_steps (50) outlasted a cycle's whole GRPO stage and a kill
    restarted it from step 0. A step takes batch_size x grad_accum completions, that over
    grpo_num_generations prompts."""
    per_step = max(1, config.batch_size * config.grad_accum // config.grpo_num_generations)
    steps = config.max_steps or math.ceil(math.ceil(n_prompts / per_step) * (config.epochs or 1))
    return max(1, min(config.save_steps, math.ceil(steps / 4)))


def _grpo_args(config: TrainConfig, ckpt_dir: Path, micro: int, max_completion_length: int,
               bf16: bool, device, progress: bool, n_prompts: int):
    from trl import GRPOConfig

    vllm = _vllm_colocate(device)
    save_steps = grpo_save_steps(config, n_prompts)
    if vllm:  # colocated vLLM joins a torch.distributed group, even as the only process
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                           ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517")):
            os.environ.setdefault(key, value)
    return GRPOConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=micro,
        gradient_accumulation_steps=config.grad_accum * (config.batch_size // micro),
        learning_rate=config.grpo_learning_rate, num_train_epochs=config.epochs or 1.0,
        max_steps=config.max_steps or -1, lr_scheduler_type="cosine", warmup_steps=0.05,
        weight_decay=0.0, logging_steps=math.gcd(config.log_steps, config.save_steps),
        save_strategy="steps", save_steps=save_steps, save_total_limit=2,
        num_generations=config.grpo_num_generations, beta=config.grpo_beta,
        max_completion_length=max_completion_length, temperature=config.grpo_temperature,
        seed=config.seed, data_seed=config.seed, bf16=bf16, use_cpu=device.type == "cpu",
        gradient_checkpointing=config.gradient_checkpointing, disable_dropout=True,
        use_vllm=vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        report_to=list(config.report_to) or "none", disable_tqdm=not progress,
        dataloader_num_workers=0, log_completions=False)


def _trainer_class():
    """GRPOTrainer whose sampling runs under the trainer's autocast, as its forward passes do:
    in bf16 the LoRA layers take bf16 inputs into fp32 adapters (loop.train.lora turns peft's
    input cast off for speed), which only autocast reconciles; trl's `model.generate` runs
    outside it (measured: "expected m1 and m2 to have the same dtype" on the first step of
    smollm2 in bf16 on CPU)."""
    from trl import GRPOTrainer

    if not hasattr(GRPOTrainer, "_generate_single_turn"):
        raise TrainingError("This trl has no GRPOTrainer._generate_single_turn: pin the trl "
                            "version pyproject.toml names.")

    class AutocastGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, *args, **kwargs):
            with self.accelerator.autocast():
                return super()._generate_single_turn(*args, **kwargs)

    return AutocastGRPOTrainer


def _make_trainer(model, tokenizer, rows, reward, args, device, log_path: Path, progress: bool,
                  extra_callbacks=()):
    from datasets import Dataset

    trainer = _trainer_class()(model=model, reward_funcs=[reward], args=args,
                               train_dataset=Dataset.from_list(rows),
                               processing_class=tokenizer,
                               callbacks=[step_logger(log_path, device, reward_key=REWARD_KEY),
                                          *extra_callbacks])
    quiet_progress(trainer, progress)
    return trainer


def _prompt_rows(tokenizer, prompts, system_prompt, max_seq_len: int, max_completion: int):
    """trl rows {prompt, item_id}; (rows, skipped ids, longest prompt + completion tokens)."""
    rows, skipped, longest = [], [], 0
    for e in prompts:
        text = build_prompt(tokenizer, e, system_prompt)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + max_completion
        if n > max_seq_len:
            skipped.append(e.id)
            continue
        longest = max(longest, n)
        rows.append({"prompt": text, "item_id": e.id})
    return rows, skipped, longest


def train_grpo(base_model_name: str | ModelSpec, prompts: Sequence[Example], reward: SuiteReward, out_dir,
               config: TrainConfig | None = None, max_completion_length: int = 64,
               parent_adapter=None, progress: bool = True,
               system_prompt: str | None = None) -> TrainResult:
    """Train (or resume, or return the finished) GRPO LoRA adapter into out_dir. `prompts` must
    be rows the reward was built with (pool rows); `parent_adapter` (or BASE+ADAPTER): the
    adapter trained further, and the KL reference."""
    config = config or TrainConfig()
    start = starting_point(base_model_name, parent_adapter)
    spec, parent, base_id = start.spec, start.parent, start.base_model_id
    if not prompts:
        raise TrainingError("No GRPO prompts: the task's train pool is empty.")
    if config.batch_size % config.grpo_num_generations:
        raise TrainingError(f"[training] batch_size ({config.batch_size}) must be a multiple of "
                            f"grpo_num_generations ({config.grpo_num_generations}).")
    unknown = [e.id for e in prompts if reward.examples.get(e.id) != e]
    if unknown:
        raise TrainingError(f"{len(unknown)} GRPO prompt(s) are not rows of the reward's pool "
                            f"(e.g. {unknown[0]}).")
    device = pick_device()
    if config.qlora:
        check_qlora(device)
    tokenizer = load_tokenizer(spec)
    rows, skipped, longest = _prompt_rows(tokenizer, prompts, system_prompt, config.max_seq_len,
                                          max_completion_length)
    if not rows:
        raise TrainingError(f"No GRPO prompt fits max_seq_len={config.max_seq_len} tokens with "
                            f"{max_completion_length} completion tokens: raise max_seq_len.")
    train_id = grpo_train_id(base_id, start.parent_id, prompts, reward, config,
                             max_completion_length, system_prompt)
    out = Path(out_dir).expanduser().resolve()
    inputs = {"method": "grpo", "base": spec.base,
              "parent_adapter": str(parent) if parent else None, "n_prompts": len(rows),
              "max_completion_length": max_completion_length, "reward": reward.identity(),
              "config": config.as_dict()}
    finished = claim_out_dir(out, train_id, inputs)
    if finished is not None:
        return finished

    bf16 = use_bf16(config.bf16, device, spec.base) or config.qlora
    model, _ = load_trainable(spec, parent, config, bf16, device)
    micro = micro_batch(config.batch_size, config.micro_batch_tokens, longest)
    args = _grpo_args(config, out / CHECKPOINTS, micro, max_completion_length, bf16, device,
                      progress, len(rows))
    meter = token_meter()
    trainer = _make_trainer(model, tokenizer, rows, reward, args, device, out / LOG_FILE,
                            progress, extra_callbacks=[meter])
    run = LoraRun(train_id, out, spec.base, base_id, str(parent) if parent else None, config,
                  n_train=len(rows), n_dev=0, skipped=tuple(skipped), device=device, bf16=bf16,
                  padding_free=False)
    return run_trainer(trainer, run, throughput=meter.throughput, oom_message=(
        f"The GPU ran out of memory in GRPO on '{spec.base}': lower [training] "
        "micro_batch_tokens, grpo_max_completion_length or max_seq_len, or set "
        "gradient_checkpointing = true."))


def token_meter():
    """A callback timing this process's part of the run and the tokens trl counted in it
    (prompt + completion tokens, `state.num_input_tokens_seen`, restored from a checkpoint on
    resume, hence the difference): `.throughput(state)` -> (all tokens, tokens/s)."""
    from transformers import TrainerCallback

    class TokenMeter(TrainerCallback):
        tokens0, started, seconds = 0, 0.0, 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.tokens0, self.started = int(state.num_input_tokens_seen or 0), time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.seconds = time.perf_counter() - self.started

        def throughput(self, state) -> tuple[int, float]:
            tokens = int(state.num_input_tokens_seen or 0)
            return tokens, (tokens - self.tokens0) / self.seconds if self.seconds else 0.0

    return TokenMeter()


# ---------------------------------------------------------------------------- the stage

def task_reward(task) -> SuiteReward:
    """The task's suite as a reward over its train pool, dev and test held out."""
    from evals.similarity import Embedder, cosine_pairs
    from loop.evaluation.evaluate import answers_are_json, task_suite

    pool = task.split("train")
    held_out = [*task.splits.get("dev", ()), *task.splits.get("test", ())]
    leaked = set(held_out_rows(pool, held_out))
    pool = [e for e in pool if e not in leaked]  # dropped: the reward never sees them
    embedder = Embedder()  # loaded on first use only (a free-text threshold, similarity)
    suite = task_suite(task, embedder)  # the suite evaluation scores with
    similarity = None
    if suite.without_judge().needs_similarity:
        similarity = lambda outs, refs: cosine_pairs(embedder, outs, refs)  # noqa: E731
    return SuiteReward(suite, pool, held_out, stop_at_json=answers_are_json(task),
                       similarity=similarity, answers=task.answers)


def train_grpo_for_task(store, task, workspace, model: str | ModelSpec = DEFAULT_MODEL,
                        parent_adapter=None, targeted: Sequence[Example] = (),
                        config: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """The GRPO stage: pool prompts (where the targeted data points first) -> adapter under
    WS/adapters, lineage in the store, a tracked run."""
    config = config or task.settings.training
    reward = task_reward(task)
    prompts = select_prompts(list(reward.examples.values()), targeted, config.grpo_prompts,
                             config.seed)
    length = config.grpo_max_completion_length or task.settings.generation.max_new_tokens
    start = starting_point(model, parent_adapter)
    train_id = grpo_train_id(start.base_model_id, start.parent_id, prompts, reward, config,
                             length, task.settings.system_prompt)
    out = Path(workspace) / "adapters" / train_id
    result = train_grpo(model, prompts, reward, out, config, length,
                        parent_adapter=parent_adapter, progress=progress,
                        system_prompt=task.settings.system_prompt)
    if int(os.environ.get("RANK", "0")) == 0:
        digest = examples_digest(prompts)
        model_id = record_training(store, result, task.name, digest)
        tracking.log_training(workspace, task, result, digest, model_id, stage="grpo")
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m loop.train.grpo`: the GRPO stage on the task's pool (tests kill it)."""
    return shell_main(
        argv, "python -m loop.train.grpo", __doc__, lambda store, task, args, config:
        train_grpo_for_task(store, task, args.workspace, args.model, args.parent, config=config,
                            progress=not args.json),
        "adapter to continue training (and the KL reference)")


if __name__ == "__main__":
    sys.exit(main())
