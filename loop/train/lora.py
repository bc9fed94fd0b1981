"""What LoRA training shares across methods (SFT in train/sft.py, DPO in train/dpo.py): the
trainable model (base + LoRA, or a parent adapter made trainable), the output directory's claim
and resume point, the per-step log and the adapter's canonical config.

    model, padding_free = load_trainable(spec, parent, config, bf16, device)
    finished = claim_out_dir(out, train_id, inputs)        # a finished run: its TrainResult
    checkpoint, step = last_checkpoint(out / "checkpoints")
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from loop.core.cache import write_atomic
from loop.models.loading import base_path
from loop.train.config import LogRow, TrainConfig, TrainResult
from loop.train.outputs import RESULT_FILE, TrainingError
from loop.train.packing import register_varlen_attention

LOG_FILE, INPUTS_FILE = "train_log.jsonl", "train_inputs.json"


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
