"""LoRA supervised fine-tuning with peft + trl's SFTTrainer; the only module that imports trl.

    config = task.settings.training
    result = train_adapter("smollm2-135m-instruct", task.split("train"), "ws/adapters/x", config,
                           dev_examples=task.split("dev"))
    record_training(store, result, task_id=task.name, dataset_hash=task.data_hash)

Shell (what `evalloop train` wraps): `python -m loop.train --task T.toml --workspace WS`;
several processes or GPUs: add `--processes N` (or `[training] processes = N`): this process
tokenizes, launches N ranks through accelerate (DDP or FSDP, loop/train/distributed.py) and alone
writes the store; the first rank alone writes the adapter and logs, in the same files.

Speed (bench/train_speed.py measures it against trl's defaults): padding-free packed batches with
per-example attention (loop/train/packing.py); logits only where a completion token is the target (the
LM head, a fifth of a small model's FLOPs, skips the prompt); bf16 weights + autocast where this
model runs faster in bf16 on this machine (loop/models/precision.py, measured once and cached); gradient
checkpointing only when asked. Rows that start with the same long text (chat template + a
task's fixed instruction) run that prefix once per micro-batch (`share_prefix`, loop/train/packing.py;
the same gradients); tokens/s still counts every row's own tokens. On 96 rentalcars rows that is
3.9x fewer forward tokens and 3.4x the tokens/s of unshared packing (bench/train_speed.py).
Memory: saved activations cost ~1.1 MB per forward token (135M model, bf16; half of it the MLP's
1536-wide tensors), so a batch is cut into micro-batches of at most `micro_batch_tokens` forward
tokens, each run forward + backward, with one optimizer step per batch (the same gradients). 16
unshared rows of a long-instruction task (~4,000 tokens) peaked at 6.3 GB RSS as one packed row
and at 3.6 GB in 2,048-token chunks; on rentalcars the 1,024-token default peaked at 2.2 GB
unshared and 1.9 GB shared (trl's defaults: 3.8 GB). Robustness: checkpoints
every `save_steps` in OUT/checkpoints, and a rerun with the same inputs resumes from the last
complete one (same total steps); a finished run is not redone. OUT itself is the adapter
(standard PEFT files) plus train_result.json and train_log.jsonl (one line per logging step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from loop import tracking
from loop.core.cache import write_atomic
from loop.core.errors import EvalloopError
from loop.core.settings import with_overrides
from loop.models.loading import (
    DEFAULT_MODEL,
    fingerprint,
    load_tokenizer,
    parse_model_name,
    pick_device,
)
from loop.core.prompts import IGNORE, tokenize_examples
from loop.train.packing import VARLEN, Collator, pop_real_tokens
from loop.core.records import content_hash
from loop.train.config import (LogRow, TrainConfig, TrainPlan, TrainResult, library_versions,
                               use_bf16)
from loop.core.launch import refuse_outside_launcher, sum_over_ranks
from loop.train.lora import (
    LOG_FILE,
    check_qlora,
    claim_out_dir,
    last_checkpoint,
    load_trainable,
    loss_summary,
    peak_mem_mb,
    read_logs,
    sort_target_modules,
)
from loop.train.outputs import (
    RESULT_FILE,
    TrainingError,
    export_merged,
    format_result,
    record_training,
)

__all__ = ["LogRow", "TrainConfig", "TrainResult", "TrainingError", "export_merged",
           "format_result", "main", "record_training", "train_adapter", "train_for_task"]

TRAIN_VERSION = "sft-lora-v1"  # part of every train id: bump when training semantics change


# ---------------------------------------------------------------------------- identity

def examples_digest(examples) -> str:
    return content_hash([(e.id, e.instruction, e.input, e.output) for e in examples])


def train_id_for(base_model_id: str, parent_id: str | None, examples, dev_examples,
                 config: TrainConfig, system_prompt: str | None) -> str:
    """Same inputs -> same id -> same output dir, which is what makes reruns resume."""
    return content_hash(TRAIN_VERSION, base_model_id, parent_id, examples_digest(examples),
                        examples_digest(dev_examples or ()), config.identity(), system_prompt)


# ---------------------------------------------------------------------------- model

# ---------------------------------------------------------------------------- trainer

class _Meter:
    """Non-padding tokens and time spent inside training steps (evaluation excluded)."""

    def __init__(self):
        self.tokens, self.seconds, self.t0 = 0, 0.0, 0.0
        self.mark = (0, 0.0)  # (tokens, seconds) at the previous logging step


def completion_loss(model, inputs: dict) -> tuple:
    """(summed next-token loss over labelled positions, their count, model outputs).

    The LM head runs only at positions whose next token is a label, i.e. inside completions:
    the prompt's logits would be computed only to be masked out.
    """
    import torch.nn.functional as F

    targets = inputs.pop("labels")[:, 1:]  # position i predicts token i+1
    keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
    out = model(**inputs, logits_to_keep=keep, use_cache=False)
    picked = targets[:, keep]
    loss = F.cross_entropy(out.logits.flatten(0, 1).float(), picked.flatten(),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((picked != IGNORE).sum()), out


def _sft_args(config: TrainConfig, ckpt_dir: Path, evaluate: bool, bf16: bool, device,
              padding_free: bool, progress: bool):
    from trl import SFTConfig

    # Each logged loss averages the steps since the last log; a resumed run restarts that
    # window at its checkpoint. With checkpoints on log boundaries, a resumed run logs the
    # same losses as an uninterrupted one.
    log_every = math.gcd(config.log_steps, config.save_steps)
    return SFTConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs or 1.0,
        max_steps=config.max_steps or -1, lr_scheduler_type="cosine", warmup_steps=0.05,
        weight_decay=0.0, logging_steps=log_every, save_strategy="steps",
        save_steps=config.save_steps, save_total_limit=2,
        eval_strategy="steps" if evaluate else "no", eval_steps=config.save_steps,
        load_best_model_at_end=evaluate and config.patience > 0,
        metric_for_best_model="eval_loss", greater_is_better=False,
        seed=config.seed, data_seed=config.seed, bf16=bf16, use_cpu=device.type == "cpu",
        gradient_checkpointing=config.gradient_checkpointing, max_length=None,
        # packed rows need no length grouping; padded rows do (and only those get it)
        train_sampling_strategy="random" if padding_free else "group_by_length",
        report_to=list(config.report_to) or "none", disable_tqdm=not progress,
        dataloader_num_workers=0,
        # dev loss only: gathering each eval batch's logits would cost vocab x targets floats
        prediction_loss_only=True,
        # several ranks: each batch of batch_size rows is split between them (accelerate's
        # batch sampler), so the optimizer steps are those of one process
        accelerator_config={"split_batches": config.processes > 1},
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient at every step
    )


def _make_trainer(model, tokenizer, rows, dev_rows, config: TrainConfig, ckpt_dir: Path,
                  bf16: bool, device, padding_free: bool, meter: _Meter, log_path: Path,
                  progress: bool):
    from transformers import EarlyStoppingCallback, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from datasets import Dataset

    class Trainer(SFTTrainer):
        """SFTTrainer with `completion_loss`, normalised over the whole accumulated batch; a
        batch the collator cut into chunks runs forward + backward chunk by chunk."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            chunks = inputs.get("chunks")
            if chunks is None:
                return super().training_step(model, inputs, num_items_in_batch)
            if num_items_in_batch is None:  # normalise by the batch's targets, not a chunk's
                num_items_in_batch = (int((inputs["labels"][:, 1:] != IGNORE).sum())
                                      * self.current_gradient_accumulation_steps)
            total = None
            for i, chunk in enumerate(chunks):
                # under DDP, gradients are reduced once, after the batch's last chunk
                sync = i == len(chunks) - 1
                with nullcontext() if sync else self.accelerator.no_sync(model):
                    loss = super().training_step(model, chunk, num_items_in_batch)
                total = loss if total is None else total + loss
            return total

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "chunks" in inputs:  # evaluation (no backward): the batch's summed loss / targets
                parts = [completion_loss(model, _model_inputs(c)) for c in inputs["chunks"]]
                loss = sum(p[0] for p in parts) / max(sum(p[1] for p in parts), 1)
                return (loss, parts[-1][2]) if return_outputs else loss
            real = pop_real_tokens(inputs)
            loss, count, out = completion_loss(model, inputs)
            if model.training:
                meter.tokens += real
                if num_items_in_batch is None:
                    count *= self.current_gradient_accumulation_steps
                else:  # the label count of all micro-batches (and, under DDP, all ranks)
                    count = num_items_in_batch
                    if self.args.average_tokens_across_devices:
                        loss = loss * self.accelerator.num_processes
            loss = loss / max(float(count), 1.0)
            return (loss, out) if return_outputs else loss

    class Logger(TrainerCallback):
        """Appends a LogRow per logging step to train_log.jsonl (a kill keeps earlier rows)."""

        def on_step_begin(self, args, state, control, **kw):
            meter.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            meter.seconds += time.perf_counter() - meter.t0

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs and "eval_loss" not in logs:
                return
            # every rank logs the same keys, so every rank joins this sum (a collective)
            total = sum_over_ranks(meter.tokens) if "loss" in logs else meter.mark[0]
            if not state.is_world_process_zero:
                return
            tokens, seconds = total - meter.mark[0], meter.seconds - meter.mark[1]
            if "loss" in logs:
                meter.mark = (total, meter.seconds)
            row = LogRow(step=state.global_step, loss=logs.get("loss"),
                         eval_loss=logs.get("eval_loss"), learning_rate=logs.get("learning_rate"),
                         tokens_per_s=tokens / seconds if "loss" in logs and seconds else None,
                         peak_mem_mb=peak_mem_mb(device), epoch=logs.get("epoch"))
            with log_path.open("a") as fh:
                fh.write(json.dumps(row.to_json()) + "\n")

    evaluate = bool(dev_rows)
    # only evalloop's varlen attention reads a shared prefix (flash-attention would ignore it)
    share = (config.share_prefix and padding_free
             and getattr(model.config, "_attn_implementation", None) == VARLEN)
    callbacks = [Logger()]
    if evaluate and config.patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    trainer = Trainer(
        model=model, processing_class=tokenizer,
        args=_sft_args(config, ckpt_dir, evaluate, bf16, device, padding_free, progress),
        data_collator=Collator(tokenizer.pad_token_id, padding_free,
                               token_budget=config.micro_batch_tokens, share_prefix=share),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(dev_rows) if evaluate else None, callbacks=callbacks)
    trainer.loss_is_scaled_for_ga = True  # compute_loss divides by the accumulated label count
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def _model_inputs(batch: dict) -> dict:
    inputs = dict(batch)
    pop_real_tokens(inputs)
    return inputs


def _rows(tokenizer, examples, system_prompt, max_seq_len: int) -> tuple[list[dict], list[str]]:
    if not examples:
        raise TrainingError("No training examples: the data is empty. In a cycle this means the "
                            "targeted stage accepted nothing (see the rejection reasons with "
                            "`evalloop generate` or on the app's Generated page).")
    rows, skipped = tokenize_examples(tokenizer, examples, system_prompt, max_seq_len)
    if not rows:
        raise TrainingError(f"No example fits max_seq_len={max_seq_len} tokens (of "
                            f"{len(examples)} given): raise [training] max_seq_len or shorten "
                            "them.")
    return rows, skipped


# ---------------------------------------------------------------------------- entry points

def plan_training(base_model_name: str, examples, out_dir, config: TrainConfig,
                  parent_adapter=None, dev_examples=None,
                  system_prompt: str | None = None) -> TrainPlan | TrainResult:
    """Check the inputs, tokenize, claim out_dir; the finished result when this run is done."""
    spec = parse_model_name(base_model_name)
    parent = Path(parent_adapter).expanduser().resolve() if parent_adapter else spec.adapter
    if parent is not None:
        parse_model_name(f"{spec.base}+{parent}")  # checks the adapter files exist
    if config.qlora:
        check_qlora(pick_device())
    tokenizer = load_tokenizer(spec)
    rows, skipped = _rows(tokenizer, examples, system_prompt, config.max_seq_len)
    dev_rows, _ = tokenize_examples(tokenizer, dev_examples or (), system_prompt,
                                    config.max_seq_len)
    base_id = fingerprint(replace(spec, adapter=None))
    parent_id = fingerprint(replace(spec, adapter=parent)) if parent else None
    train_id = train_id_for(base_id, parent_id, examples, dev_examples, config, system_prompt)
    out = Path(out_dir).expanduser().resolve()
    inputs = {"base": spec.base, "parent_adapter": str(parent) if parent else None,
              "n_train": len(rows), "n_dev": len(dev_rows), "config": config.as_dict()}
    finished = claim_out_dir(out, train_id, inputs)
    if finished is not None:
        return finished
    return TrainPlan(base=spec.base, parent_adapter=str(parent) if parent else None,
                     base_model_id=base_id, train_id=train_id, out_dir=str(out), config=config,
                     rows=rows, dev_rows=dev_rows, skipped=tuple(skipped))


def train_adapter(base_model_name: str, examples, out_dir, config: TrainConfig | None = None,
                  parent_adapter=None, dev_examples=None, progress: bool = True,
                  system_prompt: str | None = None) -> TrainResult:
    """Train (or resume, or return the finished) LoRA adapter for these exact inputs into out_dir.

    `base_model_name` may be `BASE+ADAPTER`: that adapter is then the parent, trained further.
    With `config.processes` > 1 the ranks run under accelerate's launcher; this process waits.
    """
    config = config or TrainConfig()
    if config.processes > 1:
        from loop.train.distributed import check_launchable

        check_launchable(config)
    plan = plan_training(base_model_name, examples, out_dir, config, parent_adapter,
                         dev_examples, system_prompt)
    if isinstance(plan, TrainResult):
        return plan
    if config.processes > 1:
        from loop.train.distributed import train_on_ranks

        return train_on_ranks(plan, progress)
    return run_plan(plan, progress)


def run_plan(plan: TrainPlan, progress: bool = True) -> TrainResult:
    """Train one planned run in this process (alone, or as one rank of several); the first
    rank alone writes the adapter, train_log.jsonl and train_result.json."""
    import torch

    config, out = plan.config, Path(plan.out_dir)
    spec = parse_model_name(plan.base)
    parent = Path(plan.parent_adapter) if plan.parent_adapter else None
    device = pick_device()
    tokenizer = load_tokenizer(spec)
    bf16 = use_bf16(config.bf16, device, spec.base) or config.qlora
    model, padding_free = load_trainable(spec, parent, config, bf16, device)
    meter, ckpt_dir = _Meter(), out / "checkpoints"
    resume, resumed_step = last_checkpoint(ckpt_dir)
    trainer = _make_trainer(model, tokenizer, plan.rows, plan.dev_rows, config, ckpt_dir, bf16,
                            device, padding_free, meter, out / LOG_FILE, progress)
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError:
        raise TrainingError(
            f"The GPU ran out of memory training '{spec.base}' with batch_size={config.batch_size}"
            f" and max_seq_len={config.max_seq_len}. Lower [training] batch_size (raise grad_accum "
            "to keep the effective batch), set gradient_checkpointing = true, or qlora = true."
        ) from None
    tokens = int(sum_over_ranks(meter.tokens))  # every rank's rows: the job's throughput
    state, logs = trainer.state, read_logs(out / LOG_FILE, trainer.state.global_step)
    result = TrainResult(
        train_id=plan.train_id, adapter_dir=str(out), base=spec.base,
        base_model_id=plan.base_model_id, parent_adapter=plan.parent_adapter, config=config,
        total_steps=state.max_steps, steps_done=state.global_step, resumed_from_step=resumed_step,
        n_train=len(plan.rows), n_dev=len(plan.dev_rows), skipped=plan.skipped,
        device=device.type,
        precision=("qlora-nf4+" if config.qlora else "") + ("bf16" if bf16 else "fp32"),
        padding_free=padding_free, tokens=tokens,
        tokens_per_s=tokens / meter.seconds if meter.seconds else 0.0,
        peak_mem_mb=peak_mem_mb(device), **loss_summary(logs),
        stopped_early=state.global_step < state.max_steps,
        elapsed_s=time.perf_counter() - started, logs=tuple(logs), versions=library_versions())
    _save_adapter(trainer, out)
    if trainer.is_world_process_zero():
        write_atomic(out / RESULT_FILE, json.dumps(result.to_json(), indent=2))
    return result


def _save_adapter(trainer, out: Path) -> None:
    """The adapter in plain PEFT files, written by the first rank. Under FSDP each rank holds a
    shard of every weight: all ranks gather the full state dict, the first one saves it."""
    state_dict = None
    if trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(out),
                                                                        state_dict=state_dict)
        sort_target_modules(out / "adapter_config.json")


def train_for_task(store, task, workspace, model: str = DEFAULT_MODEL, data_path=None,
                   parent_adapter=None, dataset_hash: str | None = None,
                   config: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """The training stage: task (+ exported data) -> adapter under WS/adapters, lineage in store."""
    from loop.data.tasks import read_jsonl

    examples = read_jsonl(Path(data_path), "train") if data_path else task.split("train")
    dev = task.splits.get("dev", ())
    config = config or task.settings.training
    spec = parse_model_name(model)
    parent = Path(parent_adapter).resolve() if parent_adapter else spec.adapter
    train_id = train_id_for(fingerprint(replace(spec, adapter=None)),
                            fingerprint(replace(spec, adapter=parent)) if parent else None,
                            examples, dev, config, task.settings.system_prompt)
    out = Path(workspace) / "adapters" / train_id
    result = train_adapter(model, examples, out, config, parent_adapter=parent_adapter,
                           dev_examples=dev, progress=progress,
                           system_prompt=task.settings.system_prompt)
    digest = dataset_hash or examples_digest(examples)
    model_id = record_training(store, result, task.name, digest)
    tracking.log_training(workspace, task, result, digest, model_id, stage="sft")
    return result


def config_from_args(task, args: argparse.Namespace) -> TrainConfig:
    """The task's [training] settings with the shell entry points' overrides (validated again
    with the rest of the table: processes must divide batch_size)."""
    overrides = {k: getattr(args, k, None)
                 for k in ("max_steps", "save_steps", "patience", "processes")}
    return with_overrides(task.settings, "training",
                          **{k: v for k, v in overrides.items() if v is not None},
                          **({"epochs": None} if getattr(args, "max_steps", None) else {}))


def main(argv: list[str] | None = None) -> int:
    """`python -m loop.train`: the same stage the CLI runs (tests kill and rerun it)."""
    # Idle OpenMP threads spin by default; on a CPU shared with other jobs every parallel op then
    # waits on descheduled spinners (25x slower measured: three jobs on two cores). Read by
    # libgomp when torch loads, so it is set before anything imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from loop.store.db import Store
    from loop.data.tasks import load_task

    p = argparse.ArgumentParser(prog="python -m loop.train", description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--workspace", required=True)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", help="training JSONL replacing the task's train split")
    p.add_argument("--parent", help="adapter to continue training")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--save-steps", type=int)
    p.add_argument("--patience", type=int, help="dev evaluations without improvement before "
                   "stopping (0: never stop early)")
    p.add_argument("--processes", type=int, help="ranks to train on (overrides [training] "
                   "processes; launched through accelerate, docs/scale.md)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        refuse_outside_launcher()
        task = load_task(args.task)
        config = config_from_args(task, args)
        with Store(args.workspace) as store:
            result = train_for_task(store, task, args.workspace, args.model, args.data,
                                    args.parent, config=config, progress=not args.json)
    except EvalloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
