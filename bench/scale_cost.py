"""Cost model for several devices: LoRA training (DDP, FSDP) and sharded evaluation of a 7B model on
8 GPUs, from this repo's measured single-device figures plus clearly labelled GPU assumptions.

    python bench/scale_cost.py [--json]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scale_cost.py --measure   # the launch overhead here

The tables run no model: they are what docs/scale.md shows. `--measure` times 1 process against
2 gloo ranks on this machine (tiny model: the fixed cost of a launch, not a speedup). Figures are MEASURED
(this repo, README "Real tasks") or ASSUMED (no GPU was available to measure; each assumption
names its source or reasoning). Change an assumption and rerun to see how the answer moves.

Model of a training step (per optimizer step of `global_tokens` example tokens):
  * compute: LoRA costs ~4 x P FLOPs per token (2P forward, 2P activation gradients; frozen
    weights get no weight gradient), P = base parameters. A device delivers peak x utilisation
    FLOP/s. Utilisation is calibrated on this CPU: our trainer's forward tokens/s x 4P against
    the CPU's measured bf16 matmul rate.
  * DDP: each step all-reduces the trainable gradients, 2(N-1)/N x bytes / bus bandwidth
    (NCCL's ring; bytes = trainable params x 4, fp32 LoRA gradients).
  * FSDP (FULL_SHARD): each step all-gathers the bf16 base twice (forward, and again for the
    backward), 2 x (N-1)/N x 2P / bandwidth, and reduce-scatters the gradients,
    (N-1)/N x bytes / bandwidth. For LoRA the frozen base is what FSDP moves.
  * Step time is given without overlap (compute + communication, an upper bound) and with full
    overlap (max of the two, the lower bound DDP buckets and FSDP prefetch aim at).
  * A launch costs a fixed start (processes, imports, weights from local disk), paid once.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

# ---------------------------------------------------------------------------- inputs

MEASURED = {
    # README "Real tasks": 135M model, 2-core AMD EPYC, one epoch of 96 rows, example tokens/s
    "cpu_135m_example_tokens_per_s": {"rentalcars": 700, "hotel_intents": 956},
    # the same runs: shared prompt prefixes cut the tokens the model actually runs
    "prefix_sharing_ratio": {"rentalcars": 3.9, "hotel_intents": 6.1},
    # loop/train/config.py cpu_bf16_choice() on this machine (2 threads)
    "cpu_bf16_matmul_gflops": 372.2,
    "smollm2_135m_params": 134.5e6,
    # `--measure` on this machine (2 shared cores), tiny model: extra wall time of 2 gloo ranks
    # over 1 process, training 8 steps / generating 24 items (docs/scale.md)
    "cpu_launch_overhead_s": {"train": 24.0, "eval": 23.1},  # load average ~7 at the time
}

ASSUMED = {
    "gpu": "H100 SXM 80 GB (8 per node, NVSwitch)",
    "gpu_bf16_peak_tflops": 989.0,  # NVIDIA datasheet, dense bf16 (sparsity excluded)
    # utilisation of the peak by the trainer: set to what it reaches on this CPU (computed
    # below, 23-26%); published HF-Trainer LoRA runs at 7B report 20-40% on H100
    "gpu_utilisation": 0.25,
    "gpu_hbm_tbs": 3.35,  # datasheet memory bandwidth
    "decode_bandwidth_efficiency": 0.5,  # share of HBM bandwidth batched HF decoding reaches
    "prefill_utilisation": 0.4,  # prompt encoding is large matmuls: higher than training
    # NCCL all-reduce bus bandwidth: nccl-tests on 8x H100 SXM report ~350-480 GB/s (NVLink 4
    # via NVSwitch); PCIe Gen5 cards without NVLink ~20 GB/s; 2 nodes over 400 Gb/s
    # InfiniBand NDR ~40 GB/s
    "busbw_gbs": {"NVLink": 360.0, "PCIe": 20.0, "2 nodes, IB 400G": 40.0},
    "launch_s": 40.0,  # per launch: processes, imports, 13.5 GB of bf16 weights from NVMe
}

# Llama-2-7B shapes (public config): the usual "7B" of LoRA recipes
LLAMA_7B = {"params": 6.74e9, "hidden": 4096, "intermediate": 11008, "layers": 32,
            "kv_dim": 4096}
LLAMA_70B = {"params": 69.0e9, "hidden": 8192, "intermediate": 28672, "layers": 80,
             "kv_dim": 1024}
SMOLLM2_135M = {"params": 134.5e6, "hidden": 576, "intermediate": 1536, "layers": 30,
                "kv_dim": 192}

# The workload: a nightly cycle on a 7B task
ROWS, TOKENS_PER_ROW, EPOCHS, BATCH_ROWS = 2000, 512, 2, 16
EVAL_ITEMS, PROMPT_TOKENS, NEW_TOKENS, DECODE_BATCH = 2000, 300, 64, 32
GPUS = 8


def lora_params(shape: dict, rank: int = 16) -> int:
    """LoRA on every linear layer of a Llama block (evalloop's default target_modules)."""
    h, i, kv = shape["hidden"], shape["intermediate"], shape["kv_dim"]
    per_layer = (rank * (h + h) * 2          # q, o
                 + rank * (h + kv) * 2       # k, v
                 + rank * (h + i) * 3)       # gate, up, down
    return per_layer * shape["layers"]


def cpu_utilisation() -> dict[str, float]:
    """Our trainer's share of this CPU's bf16 matmul rate, per measured task."""
    out = {}
    for task, rate in MEASURED["cpu_135m_example_tokens_per_s"].items():
        forward = rate / MEASURED["prefix_sharing_ratio"][task]
        flops = forward * 4 * MEASURED["smollm2_135m_params"]
        out[task] = flops / (MEASURED["cpu_bf16_matmul_gflops"] * 1e9)
    return out


def gpu_tokens_per_s(params: float) -> float:
    """Training tokens/s of one GPU (forward tokens; no prefix sharing: flash-attention, used on
    CUDA when installed, runs every row's prefix)."""
    return ASSUMED["gpu_bf16_peak_tflops"] * 1e12 * ASSUMED["gpu_utilisation"] / (4 * params)


# ---------------------------------------------------------------------------- training

@dataclass(frozen=True)
class TrainRow:
    setup: str
    gpus: int
    weights_gb_per_gpu: float  # bf16 base (sharded under FSDP) + LoRA weights, grads, Adam
    comm_ms: float
    compute_ms: float
    tokens_per_s_no_overlap: float
    tokens_per_s_overlap: float
    speedup: float  # vs 1 GPU, no overlap
    nightly_min: float  # launch + ROWS x TOKENS_PER_ROW x EPOCHS tokens, no overlap


def train_row(setup: str, shape: dict, gpus: int, strategy: str, link: str | None) -> TrainRow:
    params = shape["params"]
    trainable = lora_params(shape)
    grad_bytes = trainable * 4
    lora_state_gb = trainable * 16 / 1e9  # fp32 weight + grad + Adam m, v
    base_gb = params * 2 / 1e9
    step_tokens = BATCH_ROWS * TOKENS_PER_ROW
    compute_s = step_tokens / gpus / gpu_tokens_per_s(params)
    if gpus == 1:
        comm_s = 0.0
    else:
        bw = ASSUMED["busbw_gbs"][link] * 1e9
        frac = (gpus - 1) / gpus
        if strategy == "ddp":
            comm_s = 2 * frac * grad_bytes / bw
        else:  # fsdp: gather the bf16 base for forward and backward, reduce-scatter grads
            comm_s = 2 * frac * params * 2 / bw + frac * grad_bytes / bw
    weights = (base_gb / gpus + lora_state_gb / gpus) if strategy == "fsdp" else \
        base_gb + lora_state_gb
    no_overlap = step_tokens / (compute_s + comm_s)
    overlap = step_tokens / max(compute_s, comm_s)
    single = gpu_tokens_per_s(params)
    total_tokens = ROWS * TOKENS_PER_ROW * EPOCHS
    return TrainRow(setup, gpus, round(weights, 1), comm_s * 1e3, compute_s * 1e3, no_overlap,
                    overlap, no_overlap / single,
                    (ASSUMED["launch_s"] + total_tokens / no_overlap) / 60)


def training_table() -> list[TrainRow]:
    return [
        train_row("7B, 1 GPU", LLAMA_7B, 1, "ddp", None),
        train_row("7B, DDP, NVLink", LLAMA_7B, GPUS, "ddp", "NVLink"),
        train_row("7B, DDP, PCIe", LLAMA_7B, GPUS, "ddp", "PCIe"),
        train_row("7B, DDP, 2x4 GPUs over IB", LLAMA_7B, GPUS, "ddp", "2 nodes, IB 400G"),
        train_row("7B, FSDP, NVLink", LLAMA_7B, GPUS, "fsdp", "NVLink"),
        train_row("7B, FSDP, PCIe", LLAMA_7B, GPUS, "fsdp", "PCIe"),
        train_row("70B, FSDP, NVLink", LLAMA_70B, GPUS, "fsdp", "NVLink"),
    ]


# ---------------------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class EvalRow:
    setup: str
    gpus: int
    prefill_s: float
    decode_s: float
    wall_s: float  # launch + (prefill + decode) / gpus: shards share nothing


def eval_row(setup: str, shape: dict, gpus: int, speedup: float = 1.0) -> EvalRow:
    params = shape["params"]
    prefill = (EVAL_ITEMS * PROMPT_TOKENS * 2 * params
               / (ASSUMED["gpu_bf16_peak_tflops"] * 1e12 * ASSUMED["prefill_utilisation"]))
    # each decode step reads the bf16 weights once for the whole batch
    step = params * 2 / (ASSUMED["gpu_hbm_tbs"] * 1e12 * ASSUMED["decode_bandwidth_efficiency"])
    decode = EVAL_ITEMS / DECODE_BATCH * NEW_TOKENS * step / speedup
    return EvalRow(setup, gpus, prefill / gpus, decode / gpus,
                   ASSUMED["launch_s"] + (prefill + decode) / gpus)


def eval_table() -> list[EvalRow]:
    return [eval_row("7B, 1 GPU, HF generate", LLAMA_7B, 1),
            eval_row("7B, 8 shards, HF generate", LLAMA_7B, GPUS)]


# ---------------------------------------------------------------------------- output

def markdown() -> str:
    util = cpu_utilisation()
    t7, t135 = lora_params(LLAMA_7B), lora_params(SMOLLM2_135M)
    cpu_7b = min(MEASURED["cpu_135m_example_tokens_per_s"].values()) * (
        MEASURED["smollm2_135m_params"] / LLAMA_7B["params"])
    shares = ", ".join(f"{t} {u:.0%}" for t, u in util.items())
    lines = [
        (f"Trainer utilisation on this CPU (measured): {shares} of the bf16 matmul rate; GPU "
         f"utilisation assumed {ASSUMED['gpu_utilisation']:.0%}."),
        (f"One GPU ({ASSUMED['gpu']}, assumed): {gpu_tokens_per_s(LLAMA_7B['params']):,.0f} "
         f"training tokens/s on 7B; this 2-core CPU would do ~{cpu_7b:.0f} "
         "(the measured 135M rate scaled by parameters)."),
        (f"LoRA r16 on all linear layers: {t7 / 1e6:.1f}M trainable parameters on 7B "
         f"({t7 * 4 / 1e6:.0f} MB of fp32 gradients per step), {t135 / 1e6:.2f}M on the 135M "
         f"model ({t135 * 4 / 1e6:.1f} MB)."),
        (f"Step: {BATCH_ROWS} rows x {TOKENS_PER_ROW} tokens; nightly job: {ROWS} rows x "
         f"{EPOCHS} epochs = {ROWS * TOKENS_PER_ROW * EPOCHS / 1e6:.2f}M tokens, plus "
         f"{ASSUMED['launch_s']:.0f} s launch."), "",
        ("| setup | GPUs | weights GB/GPU | comm ms/step | compute ms/step | tokens/s "
         "(no overlap / overlap) | speedup | nightly training |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in training_table():
        lines.append(f"| {r.setup} | {r.gpus} | {r.weights_gb_per_gpu:.1f} | {r.comm_ms:.1f} | "
                     f"{r.compute_ms:.1f} | {r.tokens_per_s_no_overlap:,.0f} / "
                     f"{r.tokens_per_s_overlap:,.0f} | {r.speedup:.1f}x | "
                     f"{r.nightly_min:.1f} min |")
    lines += ["", (f"Evaluation: {EVAL_ITEMS} items x ({PROMPT_TOKENS} prompt + {NEW_TOKENS} new "
                   f"tokens), decode batch {DECODE_BATCH}, {ASSUMED['launch_s']:.0f} s launch."),
              "", "| setup | GPUs | prefill s | decode s | wall s |", "|---|---:|---:|---:|---:|"]
    for r in eval_table():
        lines.append(f"| {r.setup} | {r.gpus} | {r.prefill_s:.1f} | {r.decode_s:.1f} | "
                     f"{r.wall_s:.0f} |")
    return "\n".join(lines)


def measure() -> dict:
    """Wall seconds of 1 process and of 2 gloo ranks on the tiny model, training and generating."""
    import os
    import sys
    import tempfile
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "tests")]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from conftest import classification_records, random_adapter

    from loop.core.records import Example
    from loop.evaluation.sharded import generate_sharded
    from loop.models.decode import generate
    from loop.models.loading import load_model
    from loop.train.config import TrainConfig
    from loop.train.sft import train_adapter

    rows = [Example(Example.make_id(r["instruction"], r["input"], r["output"]),
                    r["instruction"], r["output"], input=r["input"])
            for r in classification_records(64)]
    config = TrainConfig(max_steps=8, epochs=None, batch_size=8, save_steps=8, bf16=False)
    out: dict = {"train": {}, "eval": {}}
    with tempfile.TemporaryDirectory() as tmp:
        adapter = random_adapter(Path(tmp) / "adapter")
        prompts = [f"Name the colour: item {i} is {c}." for i, c in
                   enumerate(["red", "green", "blue", "yellow"] * 6)]
        for n in (1, 2):
            start = time.perf_counter()
            train_adapter("tiny-random", rows, Path(tmp) / f"train{n}",
                          TrainConfig(**{**config.as_dict(), "processes": n}), progress=False)
            out["train"][n] = time.perf_counter() - start
            start = time.perf_counter()
            if n == 1:
                generate(load_model(f"tiny-random+{adapter}", device="cpu"), prompts, 8, 4,
                         progress=False)
            else:
                generate_sharded(f"tiny-random+{adapter}", prompts, n, Path(tmp) / "shards", 8,
                                 4, progress=False)
            out["eval"][n] = time.perf_counter() - start
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--measure", action="store_true", help="time 1 vs 2 processes here")
    args = p.parse_args()
    if args.measure:
        walls = measure()
        for stage, row in walls.items():
            print(f"{stage}: 1 process {row[1]:.1f} s, 2 ranks {row[2]:.1f} s "
                  f"(+{row[2] - row[1]:.1f} s)")
        return
    if args.json:
        print(json.dumps({"measured": MEASURED, "assumed": ASSUMED,
                          "cpu_utilisation": cpu_utilisation(),
                          "training": [asdict(r) for r in training_table()],
                          "evaluation": [asdict(r) for r in eval_table()]}, indent=2))
    else:
        print(markdown())


if __name__ == "__main__":
    main()
