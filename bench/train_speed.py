"""Training speed and memory: evalloop's trainer vs trl's SFTTrainer with default arguments, in one
run, on the same model, the same rows of a task's train split (one epoch each).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_speed.py [--task T.toml] [--n 128]
        [--model smollm2-135m-instruct] [--threads N] [--qlora] [--json]

`--task` defaults to the demo task; real tasks (a long fixed instruction, short answers) are where
memory matters, e.g. `--task ../shared/real-tasks/rentalcars/task.toml`. Each trainer runs in its
own subprocess, so each peak RSS is its own high-water mark. Both get the same LoRA
adapter (rank 16, alpha 32, dropout 0.05, all linear layers); trl keeps every SFTConfig default
(batch 8, gradient checkpointing on, bf16 autocast, padded batches, full-vocabulary logits).
tokens/s counts example tokens (each row's own non-padding tokens, as if nothing were shared)
over the wall time of `trainer.train()`; evalloop runs twice, with its default shared-prefix
packing and with `share_prefix = false`, and also reports forward tokens (what the model actually
ran: a micro-batch's shared prefix once, top-up padding excluded).

On CUDA every run also reports its peak GPU memory (torch.cuda.max_memory_allocated), evalloop
trains in bf16 (`[training] bf16 = "auto"`), and `--qlora` adds evalloop on a 4-bit base
(bitsandbytes, `qlora = true`); without CUDA `--qlora` says so and is skipped.

Peak fraction: LoRA training costs about 4 x N FLOPs per trained token, N = model parameters
(2N for the forward matmuls, 2N for the activation gradients; frozen weights get no weight
gradients; LoRA's own and the attention-score FLOPs are ignored). achieved = forward tokens/s x
4N, shown as a fraction of this machine's measured square-matmul GFLOP/s in fp32 and in bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from loop.core.openmp import wait_briefly  # noqa: E402
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}


DEMO_TASK = ROOT / "datasets" / "demo" / "task.toml"


def load_examples(task_path: str, n: int, seed: int = 0):
    """(n train rows drawn with `seed`, the task's system prompt): the same rows for both sides."""
    from loop.data.tasks import load_task

    task = load_task(task_path)
    pool = list(task.split("train"))
    return random.Random(seed).sample(pool, min(n, len(pool))), task.settings.system_prompt


def run_ours(model: str, task_path: str, n: int, share_prefix: bool = True,
             qlora: bool = False) -> dict:
    from loop.train import packing
    from loop.train.sft import train_adapter
    from loop.train.config import TrainConfig

    rows, system = load_examples(task_path, n)
    # evalloop's defaults, one epoch and no checkpoint or dev evaluation (as on the trl side)
    config = TrainConfig(epochs=1.0, save_steps=10**6, patience=0, seed=0,
                         share_prefix=share_prefix, qlora=qlora)
    forward = [0]
    collate = packing.Collator.__call__

    def counting(self, features):  # the bench's own tally of what the model runs
        batch = collate(self, features)
        forward[0] += sum(c["forward_tokens"] for c in batch.get("chunks", [batch]))
        return batch

    packing.Collator.__call__ = counting
    with tempfile.TemporaryDirectory() as tmp:
        result = train_adapter(model, rows, Path(tmp) / "adapter", config, progress=False,
                               system_prompt=system)
    return {"tokens": result.tokens, "forward_tokens": forward[0], "seconds": result.elapsed_s,
            "steps": result.steps_done, "precision": result.precision,
            "params": _param_count(model), "micro_batch_tokens": config.micro_batch_tokens,
            "batch_size": config.batch_size, "share_prefix": share_prefix, "qlora": qlora}


def run_trl_defaults(model: str, task_path: str, n: int) -> dict:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from datasets import Dataset
    from loop.models.loading import base_path, load_tokenizer, parse_model_name
    from loop.core.prompts import build_prompt, completion_text

    tok = load_tokenizer(parse_model_name(model))
    rows, system = load_examples(task_path, n)
    data = Dataset.from_list([{"prompt": build_prompt(tok, e, system),
                               "completion": completion_text(tok, e)} for e in rows])
    with tempfile.TemporaryDirectory() as tmp:
        # only what is needed to run offline on a CPU; every training choice stays trl's default
        args = SFTConfig(output_dir=tmp, num_train_epochs=1, report_to="none", disable_tqdm=True,
                         use_cpu=not _cuda())
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base_path(model)),
                             args=args, train_dataset=data, processing_class=tok,
                             peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"tokens": tokens, "forward_tokens": tokens, "seconds": seconds,
            "steps": trainer.state.global_step,
            "precision": "bf16 autocast" if args.bf16 else "fp32", "params": _param_count(model),
            "gradient_checkpointing": args.gradient_checkpointing,
            "batch_size": args.per_device_train_batch_size}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _param_count(model: str) -> int:
    """N in 4 x N: the model's parameter count (a tied embedding counted once, standing in for
    the LM-head matmul it also performs)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from loop.models.loading import base_path

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_path(model)))
    return sum(p.numel() for p in meta.parameters())


def measure_matmul_gflops(dtype_name: str, size: int = 1024, seconds: float = 1.0,
                          seed: int = 0) -> float:
    """Sustained square-matmul GFLOP/s on the CPU in float32 or bfloat16 (2 n^3 FLOPs each)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def child(variant: str, model: str, task_path: str, n: int, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if variant == "peak":
        row = {d: max(measure_matmul_gflops(d, seconds=0.5) for _ in range(3))
               for d in ("fp32", "bf16")}
    else:
        row = (run_trl_defaults(model, task_path, n) if variant == "trl"
               else run_ours(model, task_path, n, share_prefix=variant != "unshared",
                             qlora=variant == "qlora"))
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if torch.cuda.is_available():
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(row))


def spawn(variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--model", args.model,
           "--task", str(args.task), "--n", str(args.n)] + (
        ["--threads", str(args.threads)] if args.threads else [])
    # both trainers alike: idle OpenMP threads wait as evalloop's do (loop/core/openmp.py), which
    # on a CPU shared with other jobs decides the result more than the trainer does
    env = wait_briefly({**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--task", default=str(DEMO_TASK), help="task TOML whose train rows are used")
    p.add_argument("--n", "--examples", dest="n", type=int, default=128,
                   help="train rows (drawn at random, seed 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--qlora", action="store_true", help="add evalloop on a 4-bit base (CUDA)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", choices=["ours", "unshared", "trl", "qlora", "peak"],
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.model, args.task, args.n, args.threads)

    import torch

    peak = spawn("peak", args)  # best of three, in a child like the trainers (same threads)
    rows = {}
    variants = ["trl", "unshared", "ours"]
    if args.qlora and torch.cuda.is_available():
        variants.append("qlora")
    elif args.qlora:
        print("--qlora needs CUDA (bitsandbytes 4-bit): skipped", file=sys.stderr)
    for variant in variants:
        rows[variant] = spawn(variant, args)
        print(f"{variant}: {json.dumps(rows[variant])}", file=sys.stderr, flush=True)
    for row in rows.values():
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
        row["forward_tokens_per_s"] = row["forward_tokens"] / row["seconds"]
        row["gflops"] = row["forward_tokens_per_s"] * 4 * row["params"] / 1e9  # FLOPs run
        row["peak_fraction"] = {d: row["gflops"] / g for d, g in peak.items()}
    report = {"model": args.model, "task": args.task, "examples": args.n,
              "threads": args.threads or torch.get_num_threads(),
              "matmul_peak_gflops": peak, "speedup": rows["ours"]["tokens_per_s"]
              / rows["trl"]["tokens_per_s"],
              "speedup_unshared": rows["unshared"]["tokens_per_s"]
              / rows["trl"]["tokens_per_s"],
              "peak_rss_ratio": rows["ours"]["peak_rss_mb"] / rows["trl"]["peak_rss_mb"],
              "runs": rows, "flops_per_token": "4 x N parameters"}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"model {args.model} ({rows['ours']['params'] / 1e6:.0f}M params), task {args.task}, "
          f"{args.n} examples, 1 epoch, {report['threads']} threads")
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s "
          f"(FLOPs per trained token = 4 x N)")
    print("tokens/s: example tokens (shared prefixes counted per row); fwd tok/s: tokens the "
          "model ran; GFLOP/s from forward tokens")
    gpu = "peak_gpu_mb" in rows["ours"]
    print(f"{'trainer':<18}{'precision':<16}{'steps':>6}{'tokens/s':>10}{'fwd tok/s':>10}"
          f"{'GFLOP/s':>9}{'%fp32 pk':>9}{'%bf16 pk':>9}{'peak RSS':>10}"
          + (f"{'peak GPU':>10}" if gpu else ""))
    names = {"trl": "trl defaults", "unshared": "evalloop unshared", "ours": "evalloop",
             "qlora": "evalloop QLoRA"}
    for variant, row in rows.items():
        print(f"{names[variant]:<18}{row['precision']:<16}{row['steps']:>6}"
              f"{row['tokens_per_s']:>10.0f}{row['forward_tokens_per_s']:>10.0f}"
              f"{row['gflops']:>9.1f}{row['peak_fraction']['fp32']:>9.1%}"
              f"{row['peak_fraction']['bf16']:>9.1%}{row['peak_rss_mb']:>8.0f}MB"
              + (f"{row['peak_gpu_mb']:>8.0f}MB" if gpu else ""))
    print(f"speedup (tokens/s vs trl defaults): evalloop {report['speedup']:.2f}x, unshared "
          f"{report['speedup_unshared']:.2f}x; peak RSS evalloop / trl defaults: "
          f"{report['peak_rss_ratio']:.2f}")


if __name__ == "__main__":
    main()
