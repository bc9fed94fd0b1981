"""trl's SFTTrainer as evalloop trains with it: the loss only where a completion token is the
target (`completion_loss`), normalised over the whole accumulated batch; a batch the collator
cut into chunks (loop/train/packing.py) runs forward + backward chunk by chunk; a LogRow per
logging step in train_log.jsonl, with the tokens/s `TokenMeter` counts. loop/train/sft.py
plans and runs it.

    trainer = make_sft_trainer(model, tokenizer, rows, dev_rows, config, out / "checkpoints",
                               bf16, device, padding_free, TokenMeter(), out / LOG_FILE, progress)
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

from loop.core.launch import sum_over_ranks
from loop.core.prompts import IGNORE
from loop.train.config import LogRow, TrainConfig
from loop.train.lora import peak_mem_mb, quiet_progress
from loop.train.packing import VARLEN, Collator, pop_real_tokens


class TokenMeter:
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


def make_sft_trainer(model, tokenizer, rows, dev_rows, config: TrainConfig, ckpt_dir: Path,
                  bf16: bool, device, padding_free: bool, meter: TokenMeter, log_path: Path,
                  progress: bool):
    from transformers import EarlyStoppingCallback, TrainerCallback
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
    quiet_progress(trainer, progress)
    return trainer


def _model_inputs(batch: dict) -> dict:
    inputs = dict(batch)
    pop_real_tokens(inputs)
    return inputs
