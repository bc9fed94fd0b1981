"""LoRA DPO on preference pairs (loop/targeted/pairs.py) with trl's DPOTrainer, on the SFT LoRA setup.

    result = train_dpo("smollm2-135m-instruct", read_pairs(path), "ws/adapters/x", config)
    # after SFT ("sft+dpo"): parent_adapter = the SFT adapter, which is also the reference

Shell: `python -m loop.train.dpo --task T.toml --workspace WS --pairs PAIRS.jsonl`.

The model is loaded exactly as for SFT (`loop.train.lora.load_trainable`: same base, precision,
LoRA config and seed). The reference model is the policy's starting point: trl copies the
starting adapter into a frozen "ref" adapter, which is the base model for a fresh LoRA
(B = 0) and the parent (e.g. the SFT) adapter otherwise. Prompts are rendered with the same chat
template as SFT and generation (`loop.core.prompts`), answers end with EOS like SFT targets.
Runs are fingerprinted (base, parent, pairs, config, system prompt -> train id -> output dir),
checkpointed every `save_steps` and resumed from the last complete checkpoint by a rerun; a
finished run is returned as is. OUT holds a standard PEFT adapter (the trained adapter only),
train_result.json and train_log.jsonl, like SFT.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from loop import tracking
from loop.models.loading import DEFAULT_MODEL, ModelSpec, load_tokenizer, pick_device
from loop.core.pairs import PreferencePair, read_pairs
from loop.core.prompts import build_prompt, completion_text
from loop.core.records import content_hash
from loop.train.lora import (  # what DPO shares with SFT
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
from loop.train.config import TrainConfig, TrainResult, use_bf16
from loop.train.outputs import TrainingError, record_training

DPO_VERSION = "dpo-lora-v1"  # part of every DPO train id: bump when DPO semantics change


def pairs_digest(pairs) -> str:
    return content_hash([(p.pair_id, p.instruction, p.input, p.chosen, p.rejected)
                         for p in pairs])


def dpo_train_id(base_model_id: str, parent_id: str | None, pairs, config: TrainConfig,
                 system_prompt: str | None) -> str:
    """Same inputs -> same id -> same output dir (resume); never equal to an SFT id."""
    return content_hash(DPO_VERSION, base_model_id, parent_id, pairs_digest(pairs),
                        config.identity(), system_prompt)


def pair_rows(tokenizer, pairs, system_prompt: str | None, max_seq_len: int
              ) -> tuple[list[dict], list[str], int]:
    """DPO rows {prompt, chosen, rejected} as text; (rows, skipped pair ids, longest tokens).
    A pair whose prompt + longer answer exceeds max_seq_len is skipped, never truncated."""
    rows, skipped, longest = [], [], 0
    for p in pairs:
        example = p.example()
        prompt = build_prompt(tokenizer, example, system_prompt)
        chosen = completion_text(tokenizer, example)
        rejected = completion_text(tokenizer, replace(example, output=p.rejected))
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        n_answer = max(len(tokenizer(a, add_special_tokens=False)["input_ids"])
                       for a in (chosen, rejected))
        if n_prompt + n_answer > max_seq_len:
            skipped.append(p.pair_id)
            continue
        longest = max(longest, n_prompt + n_answer)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows, skipped, longest


def _dpo_args(config: TrainConfig, ckpt_dir: Path, micro: int, bf16: bool, device,
              progress: bool):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=micro,
        gradient_accumulation_steps=config.grad_accum * (config.batch_size // micro),
        learning_rate=config.dpo_learning_rate or config.learning_rate,
        num_train_epochs=config.epochs or 1.0, max_steps=config.max_steps or -1,
        lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
        # on log boundaries, a resumed run logs the same losses as an uninterrupted one
        logging_steps=math.gcd(config.log_steps, config.save_steps), save_strategy="steps",
        save_steps=config.save_steps, save_total_limit=2, beta=config.dpo_beta,
        max_length=None, seed=config.seed, data_seed=config.seed, bf16=bf16,
        use_cpu=device.type == "cpu", gradient_checkpointing=config.gradient_checkpointing,
        report_to=list(config.report_to) or "none", disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataset_num_proc=None)


def _make_trainer(model, tokenizer, rows, config, ckpt_dir, micro, bf16, device, log_path,
                  progress):
    from trl import DPOTrainer

    from datasets import Dataset

    trainer = DPOTrainer(model=model, ref_model=None, processing_class=tokenizer,
                         args=_dpo_args(config, ckpt_dir, micro, bf16, device, progress),
                         train_dataset=Dataset.from_list(rows),
                         callbacks=[step_logger(log_path, device)])
    quiet_progress(trainer, progress)
    return trainer


def train_dpo(base_model_name: str | ModelSpec, pairs, out_dir, config: TrainConfig | None = None,
              parent_adapter=None, progress: bool = True,
              system_prompt: str | None = None) -> TrainResult:
    """Train (or resume, or return the finished) DPO LoRA adapter for these pairs into out_dir.
    `parent_adapter` (or BASE+ADAPTER): the adapter trained further, and the reference."""
    config = config or TrainConfig()
    start = starting_point(base_model_name, parent_adapter)
    spec, parent, base_id = start.spec, start.parent, start.base_model_id
    if not pairs:
        raise TrainingError("No preference pairs: build them with `evalloop pairs` (votes, "
                            "corrections or failures are needed; see the exclusion counts).")
    device = pick_device()
    if config.qlora:
        check_qlora(device)
    tokenizer = load_tokenizer(spec)
    rows, skipped, longest = pair_rows(tokenizer, pairs, system_prompt, config.max_seq_len)
    if not rows:
        raise TrainingError(f"No preference pair fits max_seq_len={config.max_seq_len} tokens "
                            f"(of {len(pairs)} given): raise [training] max_seq_len.")
    train_id = dpo_train_id(base_id, start.parent_id, pairs, config, system_prompt)
    out = Path(out_dir).expanduser().resolve()
    inputs = {"method": "dpo", "base": spec.base, "parent_adapter": str(parent) if parent else None,
              "n_pairs": len(rows), "config": config.as_dict()}
    finished = claim_out_dir(out, train_id, inputs)
    if finished is not None:
        return finished

    bf16 = use_bf16(config.bf16, device, spec.base) or config.qlora
    model, _ = load_trainable(spec, parent, config, bf16, device)
    micro = micro_batch(config.batch_size, config.micro_batch_tokens, 2 * longest)
    trainer = _make_trainer(model, tokenizer, rows, config, out / CHECKPOINTS, micro, bf16,
                            device, out / LOG_FILE, progress)
    run = LoraRun(train_id, out, spec.base, base_id, str(parent) if parent else None, config,
                  n_train=len(rows), n_dev=0, skipped=tuple(skipped), device=device, bf16=bf16,
                  padding_free=False)
    return run_trainer(trainer, run, oom_message=(
        f"The GPU ran out of memory in DPO on '{spec.base}': lower [training] "
        "micro_batch_tokens or max_seq_len, or set gradient_checkpointing = true."))


def train_dpo_for_task(store, task, workspace, pairs_path,
                       model: str | ModelSpec = DEFAULT_MODEL, parent_adapter=None,
                       dataset_hash: str | None = None,
                       config: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """The DPO stage: exported pairs -> adapter under WS/adapters, lineage in the store."""
    pairs: list[PreferencePair] = read_pairs(pairs_path)
    config = config or task.settings.training
    start = starting_point(model, parent_adapter)
    train_id = dpo_train_id(start.base_model_id, start.parent_id, pairs, config,
                            task.settings.system_prompt)
    out = Path(workspace) / "adapters" / train_id
    result = train_dpo(model, pairs, out, config, parent_adapter=parent_adapter,
                       progress=progress, system_prompt=task.settings.system_prompt)
    if int(os.environ.get("RANK", "0")) == 0:
        digest = dataset_hash or pairs_digest(pairs)
        model_id = record_training(store, result, task.name, digest)
        tracking.log_training(workspace, task, result, digest, model_id, stage="dpo")
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m loop.train.dpo`: the DPO stage on an exported pairs file (tests kill it)."""
    return shell_main(
        argv, "python -m loop.train.dpo", __doc__, lambda store, task, args, config:
        train_dpo_for_task(store, task, args.workspace, args.pairs, args.model, args.parent,
                           config=config, progress=not args.json),
        "adapter to continue training (and the reference)",
        lambda p: p.add_argument("--pairs", required=True, help="JSONL from `evalloop pairs`"))


if __name__ == "__main__":
    sys.exit(main())
