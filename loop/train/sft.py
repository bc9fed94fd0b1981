"""LoRA supervised fine-tuning with peft + trl's SFTTrainer (loop/train/sft_trainer.py): plan a
run (inputs checked, rows tokenized, output dir claimed), train it here or on N ranks, record it.

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
import sys
from pathlib import Path

from loop import tracking
from loop.core.launch import sum_over_ranks
from loop.core.prompts import tokenize_examples
from loop.core.records import content_hash
from loop.models.loading import (
    DEFAULT_MODEL,
    ModelSpec,
    load_tokenizer,
    parse_model_name,
    pick_device,
)
from loop.train.config import (LogRow, TrainConfig, TrainPlan, TrainResult, use_bf16)
from loop.train.lora import (
    CHECKPOINTS,
    LOG_FILE,
    LoraRun,
    check_qlora,
    claim_out_dir,
    load_trainable,
    run_trainer,
    shell_main,
    starting_point,
)
from loop.train.outputs import TrainingError, export_merged, format_result, record_training
from loop.train.sft_trainer import TokenMeter, make_sft_trainer

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

def plan_training(base_model_name: str | ModelSpec, examples, out_dir, config: TrainConfig,
                  parent_adapter=None, dev_examples=None,
                  system_prompt: str | None = None) -> TrainPlan | TrainResult:
    """Check the inputs, tokenize, claim out_dir; the finished result when this run is done."""
    start = starting_point(base_model_name, parent_adapter)
    spec, parent = start.spec, start.parent
    if config.qlora:
        check_qlora(pick_device())
    tokenizer = load_tokenizer(spec)
    rows, skipped = _rows(tokenizer, examples, system_prompt, config.max_seq_len)
    dev_rows, _ = tokenize_examples(tokenizer, dev_examples or (), system_prompt,
                                    config.max_seq_len)
    base_id = start.base_model_id
    train_id = train_id_for(base_id, start.parent_id, examples, dev_examples, config,
                            system_prompt)
    out = Path(out_dir).expanduser().resolve()
    inputs = {"base": spec.base, "parent_adapter": str(parent) if parent else None,
              "n_train": len(rows), "n_dev": len(dev_rows), "config": config.as_dict()}
    finished = claim_out_dir(out, train_id, inputs)
    if finished is not None:
        return finished
    return TrainPlan(base=spec.base, parent_adapter=str(parent) if parent else None,
                     base_model_id=base_id, train_id=train_id, out_dir=str(out), config=config,
                     rows=rows, dev_rows=dev_rows, skipped=tuple(skipped))


def train_adapter(base_model_name: str | ModelSpec, examples, out_dir, config: TrainConfig | None = None,
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
    config, out = plan.config, Path(plan.out_dir)
    spec = parse_model_name(plan.base)
    parent = Path(plan.parent_adapter) if plan.parent_adapter else None
    device = pick_device()
    tokenizer = load_tokenizer(spec)
    bf16 = use_bf16(config.bf16, device, spec.base) or config.qlora
    model, padding_free = load_trainable(spec, parent, config, bf16, device)
    meter = TokenMeter()
    trainer = make_sft_trainer(model, tokenizer, plan.rows, plan.dev_rows, config,
                               out / CHECKPOINTS, bf16, device, padding_free, meter,
                               out / LOG_FILE, progress)

    def throughput(state) -> tuple[int, float]:
        tokens = int(sum_over_ranks(meter.tokens))  # every rank's rows: the job's throughput
        return tokens, tokens / meter.seconds if meter.seconds else 0.0

    run = LoraRun(plan.train_id, out, spec.base, plan.base_model_id, plan.parent_adapter, config,
                  n_train=len(plan.rows), n_dev=len(plan.dev_rows), skipped=plan.skipped,
                  device=device, bf16=bf16, padding_free=padding_free)
    return run_trainer(trainer, run, throughput=throughput, oom_message=(
        f"The GPU ran out of memory training '{spec.base}' with batch_size={config.batch_size}"
        f" and max_seq_len={config.max_seq_len}. Lower [training] batch_size (raise grad_accum "
        "to keep the effective batch), set gradient_checkpointing = true, or qlora = true."))


def train_for_task(store, task, workspace, model: str | ModelSpec = DEFAULT_MODEL, data_path=None,
                   parent_adapter=None, dataset_hash: str | None = None,
                   config: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """The training stage: task (+ exported data) -> adapter under WS/adapters, lineage in store."""
    from loop.data.tasks import read_split

    examples = read_split(Path(data_path), "train") if data_path else task.split("train")
    dev = task.splits.get("dev", ())
    config = config or task.settings.training
    start = starting_point(model, parent_adapter)
    train_id = train_id_for(start.base_model_id, start.parent_id, examples, dev, config,
                            task.settings.system_prompt)
    out = Path(workspace) / "adapters" / train_id
    result = train_adapter(model, examples, out, config, parent_adapter=parent_adapter,
                           dev_examples=dev, progress=progress,
                           system_prompt=task.settings.system_prompt)
    digest = dataset_hash or examples_digest(examples)
    model_id = record_training(store, result, task.name, digest)
    tracking.log_training(workspace, task, result, digest, model_id, stage="sft")
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m loop.train`: the same stage the CLI runs (tests kill and rerun it)."""
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="training JSONL replacing the task's train split")
        p.add_argument("--patience", type=int, help="dev evaluations without improvement before "
                       "stopping (0: never stop early)")
        p.add_argument("--processes", type=int, help="ranks to train on (overrides [training] "
                       "processes; launched through accelerate, docs/scale.md)")

    return shell_main(argv, "python -m loop.train", __doc__, lambda store, task, args, config:
                      train_for_task(store, task, args.workspace, args.model, args.data,
                                     args.parent, config=config, progress=not args.json),
                      "adapter to continue training", add_arguments, refuse_launcher=True)


if __name__ == "__main__":
    sys.exit(main())
