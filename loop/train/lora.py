"""What LoRA training shares across methods (SFT in train/sft.py, DPO in train/dpo.py, GRPO in
train/grpo.py): the starting point (base + parent adapter, both fingerprinted), the trainable
model (base + LoRA, or the parent made trainable), the output directory's claim and resume
point, the per-step log, the run itself (train from the last complete checkpoint, out of memory
as a TrainingError, the TrainResult, the saved adapter), the adapter's canonical config and the
shell entry point (`python -m loop.train[.dpo|.grpo]`).

    start = starting_point("smollm2-135m-instruct", parent_adapter)   # ids for the train id
    finished = claim_out_dir(out, train_id, inputs)        # a finished run: its TrainResult
    model, padding_free = load_trainable(start.spec, start.parent, config, bf16, device)
    trainer = ...                                          # the method's trl trainer
    result = run_trainer(trainer, LoraRun(train_id, out, ...), oom_message="...")
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.core.cache import write_atomic
from loop.core.errors import EvalloopError
from loop.core.openmp import wait_briefly
from loop.models.loading import DEFAULT_MODEL, ModelSpec, as_model_spec, base_path, fingerprint
from loop.train.config import LogRow, TrainConfig, TrainResult, library_versions
from loop.train.outputs import RESULT_FILE, TrainingError, format_result
from loop.train.packing import register_varlen_attention

LOG_FILE, INPUTS_FILE = "train_log.jsonl", "train_inputs.json"
CHECKPOINTS = "checkpoints"  # OUT/checkpoints: the trainer's output_dir


@dataclass(frozen=True)
class StartingPoint:
    """The model a run trains from: the base, plus the parent adapter it continues (None: a
    fresh LoRA), with both fingerprints (part of every train id)."""

    spec: ModelSpec  # spec.adapter: the parent adapter
    base_model_id: str
    parent_id: str | None

    @property
    def parent(self) -> Path | None:
        return self.spec.adapter


def starting_point(model: str | ModelSpec, parent_adapter=None) -> StartingPoint:
    """`model` may be BASE+ADAPTER: that adapter is the parent unless `parent_adapter` names
    one; the parent's files are checked."""
    spec = as_model_spec(model)
    if parent_adapter:
        spec = spec.with_adapter(parent_adapter)
    return StartingPoint(spec, fingerprint(spec.with_adapter(None)),
                         fingerprint(spec) if spec.adapter else None)


def claim_out_dir(out: Path, train_id: str, inputs: dict) -> TrainResult | None:
    """Create OUT or check it holds this same run; return the finished result if there is one."""
    manifest = out / INPUTS_FILE
    if manifest.is_file():
        if json.loads(manifest.read_text()).get("train_id") != train_id:
            raise TrainingError(f"{out} holds a different training run ({manifest} has another "
                                "train_id): pick a new output directory or delete that one.")
        done = out / RESULT_FILE
        if done.is_file() and (out / "adapter_model.safetensors").is_file():
            return TrainResult.from_json(json.loads(done.read_text()))
    elif out.is_dir() and any(out.iterdir()):
        raise TrainingError(f"{out} exists and is not an evalloop training directory: choose an "
                            "empty or new output directory.")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(manifest, json.dumps({"train_id": train_id, **inputs}, indent=2, default=str))
    return None


def last_checkpoint(ckpt_dir: Path) -> tuple[Path | None, int]:
    """The newest checkpoint whose trainer state was fully written (a kill can cut a save short)."""
    best: tuple[Path | None, int] = (None, 0)
    for path in ckpt_dir.glob("checkpoint-*"):
        try:
            step = int(path.name.rsplit("-", 1)[1])
            state = json.loads((path / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        if (state.get("global_step") == step and step > best[1]
                and (path / "adapter_model.safetensors").is_file()):
            best = (path, step)
    return best


def micro_batch(batch_size: int, token_budget: int, row_tokens: int) -> int:
    """Items per forward: the largest divisor of batch_size whose items, `row_tokens` padded
    tokens each, fit `token_budget` tokens (at least 1), so that gradient accumulation still
    gives the optimizer batch_size items a step. A DPO item is a pair (its chosen and rejected
    rows: twice the longest row), a GRPO item one completion row."""
    fit = max(1, token_budget // max(row_tokens, 1))
    return max(d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= fit)


def check_qlora(device) -> None:
    import importlib.util

    if device.type != "cuda":
        raise TrainingError("[training] qlora = true needs a CUDA GPU (bitsandbytes 4-bit "
                            "kernels); "
                            "this machine has none. Set qlora = false to train in bf16/fp32.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError("[training] qlora = true needs the bitsandbytes package: "
                            "`pip install bitsandbytes`, or set qlora = false.")


def attention_implementation(device) -> str:
    import importlib.util

    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"  # reads the same cu_seq_lens, in one fused kernel
    return register_varlen_attention()


def load_trainable(spec, parent: Path | None, config: TrainConfig, bf16: bool, device):
    """Base (+parent adapter, trainable) with LoRA; returns (peft model, padding_free)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32, "use_safetensors": True}
    if config.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        if config.processes > 1:  # 4-bit weights load on a device: this rank's own
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    path, padding_free = base_path(spec.base), True
    try:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention_implementation(device),
                                                     **kwargs)
    except ValueError:  # an architecture without pluggable attention: padded batches instead
        model, padding_free = AutoModelForCausalLM.from_pretrained(path, **kwargs), False
    except OSError as exc:
        raise TrainingError(f"Cannot load base model '{spec.base}' from {path}: "
                            f"{str(exc).splitlines()[0]}.") from None
    if config.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, config.gradient_checkpointing)
    if parent is not None:
        model = PeftModel.from_pretrained(model, str(parent), is_trainable=True)
    else:
        from transformers import set_seed

        set_seed(config.seed)  # LoRA A is drawn at random: the same seed, the same adapter
        modules = config.target_modules
        model = get_peft_model(model, LoraConfig(
            r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
            target_modules=modules if isinstance(modules, str) else list(modules),
            task_type="CAUSAL_LM"))
    if bf16 and not config.qlora:
        # peft casts each LoRA input up to the fp32 adapter dtype, a full activation copy per
        # adapted layer; under bf16 autocast the LoRA matmuls run in bf16 anyway
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled") or hasattr(module, "lora_A"):
                module.cast_input_dtype_enabled = False
    return model, padding_free


def step_logger(log_path: Path, device, reward_key: str | None = None):
    """A trainer callback appending a LogRow (loss, learning rate, peak memory, and the mean
    reward under `reward_key` when given) per logging step to train_log.jsonl; the first rank
    writes, and a kill keeps the earlier rows. (SFT's own logger also counts tokens/s.)"""
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs or not state.is_world_process_zero:
                return
            row = LogRow(step=state.global_step, loss=logs["loss"],
                         learning_rate=logs.get("learning_rate"),
                         peak_mem_mb=peak_mem_mb(device), epoch=logs.get("epoch"),
                         reward=logs.get(reward_key) if reward_key else None)
            with log_path.open("a") as fh:
                fh.write(json.dumps(row.to_json()) + "\n")

    return StepLogger()


def quiet_progress(trainer, progress: bool) -> None:
    """The step bar alone: transformers' ProgressCallback also writes every log dict under it
    (`{'loss': '0.9572', 'grad_norm': ...}` each few steps); the bar's postfix shows the loss
    instead (train_log.jsonl has every figure). Without progress the printer goes too."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
        return

    class StepBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if self.training_bar is not None and isinstance(loss, (int, float)):
                self.training_bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepBar)


def peak_mem_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def read_logs(path: Path, up_to: int) -> list[LogRow]:
    """Rows logged so far (a killed run's rows survive it), merged per step."""
    merged: dict[int, LogRow] = {}
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            row = LogRow(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut short by a kill
        if row.step <= up_to:
            merged[row.step] = merged[row.step].merge(row) if row.step in merged else row
    return [merged[s] for s in sorted(merged)]


def loss_summary(logs: list[LogRow]) -> dict:
    return {"train_loss": next((r.loss for r in reversed(logs) if r.loss is not None), None),
            "best_eval_loss": min((r.eval_loss for r in logs if r.eval_loss is not None),
                                  default=None)}


def sort_target_modules(config_path: Path) -> None:
    """peft saves an expanded module set in hash order, which changes from process to process;
    sorted, the same training gives the same file, hence the same model fingerprint."""
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        write_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class LoraRun:
    """What a run's TrainResult records that is known before training starts."""

    train_id: str
    out: Path
    base: str
    base_model_id: str
    parent_adapter: str | None
    config: TrainConfig
    n_train: int
    n_dev: int
    skipped: tuple[str, ...]
    device: Any  # torch.device
    bf16: bool
    padding_free: bool


def no_throughput(state) -> tuple[int, float]:
    return 0, 0.0


def run_trainer(trainer, run: LoraRun, oom_message: str,
                throughput: Callable[[Any], tuple[int, float]] = no_throughput) -> TrainResult:
    """Train from the last complete checkpoint in OUT/checkpoints (the GPU out of memory: a
    TrainingError saying `oom_message`), save the trained adapter and, on the first rank,
    train_result.json; return the TrainResult. `throughput(trainer state)` -> (tokens,
    tokens/s); every rank calls it, so it may be a collective."""
    import torch

    resume, resumed_step = last_checkpoint(run.out / CHECKPOINTS)
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError:
        raise TrainingError(oom_message) from None
    state = trainer.state
    tokens, tokens_per_s = throughput(state)
    logs = read_logs(run.out / LOG_FILE, state.global_step)
    config = run.config
    result = TrainResult(
        train_id=run.train_id, adapter_dir=str(run.out), base=run.base,
        base_model_id=run.base_model_id, parent_adapter=run.parent_adapter, config=config,
        total_steps=state.max_steps, steps_done=state.global_step, resumed_from_step=resumed_step,
        n_train=run.n_train, n_dev=run.n_dev, skipped=run.skipped, device=run.device.type,
        precision=("qlora-nf4+" if config.qlora else "") + ("bf16" if run.bf16 else "fp32"),
        padding_free=run.padding_free, tokens=tokens, tokens_per_s=tokens_per_s,
        peak_mem_mb=peak_mem_mb(run.device), **loss_summary(logs),
        stopped_early=state.global_step < state.max_steps,
        elapsed_s=time.perf_counter() - started, logs=tuple(logs), versions=library_versions())
    save_adapter(trainer, run.out)
    if trainer.is_world_process_zero():
        write_atomic(run.out / RESULT_FILE, json.dumps(result.to_json(), indent=2))
    return result


def save_adapter(trainer, out: Path) -> None:
    """The trained adapter in plain PEFT files, written by the first rank: "default" only, not
    the frozen "ref" copy DPO and GRPO train against. Under FSDP each rank holds a shard of every
    weight: all ranks gather the full state dict, the first one saves it."""
    state_dict = None
    if trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(
            str(out), state_dict=state_dict, selected_adapters=["default"])
        sort_target_modules(out / "adapter_config.json")


# ---------------------------------------------------------------------------- shell

def shell_main(argv: list[str] | None, prog: str, doc: str, train: Callable[..., TrainResult],
               parent_help: str, add_arguments: Callable[[argparse.ArgumentParser], None]
               | None = None, refuse_launcher: bool = False) -> int:
    """A method's stage from a shell (`python -m loop.train`, `loop.train.dpo`,
    `loop.train.grpo`; tests kill and rerun them): --task, --workspace, --model, --parent,
    --max-steps, --save-steps, the method's own flags and --json; `train(store, task, args,
    config)` runs it. An EvalloopError prints `error: ...` and exits 2."""
    # Read by libgomp when torch loads, so it is set before anything imports torch.
    wait_briefly()
    from loop.core.launch import refuse_outside_launcher
    from loop.data.tasks import load_task
    from loop.store.db import Store
    from loop.train.config import config_from_args

    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--workspace", required=True)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--parent", help=parent_help)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--save-steps", type=int)
    if add_arguments is not None:
        add_arguments(p)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if refuse_launcher:
            refuse_outside_launcher()
        task = load_task(args.task)
        config = config_from_args(task, args)
        with Store(args.workspace) as store:
            result = train(store, task, args, config)
    except EvalloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))
    return 0
