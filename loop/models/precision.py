"""One answer to "is bf16 faster here?", for training and for the benchmark backend.

    prefer_bf16(device, model.config, lambda: model)   # True / False

CUDA: bf16 whenever the GPU supports it. CPU: a measured probe, memoised per machine and model
shape in `<cache>/bf16.json`: the best of three forward passes of the model itself in fp32 and in
bf16 on a fixed random batch; bf16 only when it is at least BF16_MIN_SPEEDUP times faster. The
model matters: on this repository's 2-core EPYC the 135M SmolLM2 runs 1.9x faster in bf16, the
2-layer test model 1.6x slower (matmul GFLOP/s alone said bf16 for both). Other devices: fp32.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from loop.core.cache import memoised

BF16_MIN_SPEEDUP = 1.25  # below this the timing is within the noise of a shared machine: fp32
MEMO = "bf16"


def prefer_bf16(device, model_config, load_model: Callable[[], Any]) -> bool:
    """Whether to run this model in bf16 on `device`. `load_model()` gives the model in fp32 and
    is called only when the CPU probe is not memoised yet."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(cpu_probe(model_config, load_model)["bf16"])


def cpu_probe(model_config, load_model: Callable[[], Any]) -> dict:
    """{'bf16', 'fp32_s', 'bf16_s', 'measured_at'} for this CPU, torch and model shape."""
    return memoised(MEMO, probe_key(model_config), lambda: _measure(load_model()))


def probe_key(model_config) -> str:
    import torch

    c = model_config
    return (f"{platform.machine()} {cpu_name()} | torch {torch.__version__} | "
            f"threads {torch.get_num_threads()} | {c.model_type} h{c.hidden_size} "
            f"l{c.num_hidden_layers} v{c.vocab_size}")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _measure(model) -> dict:
    import torch

    fp32_s = time_forward(model)
    bf16_s = time_forward(copy.deepcopy(model).to(torch.bfloat16))
    return {"bf16": fp32_s / bf16_s >= BF16_MIN_SPEEDUP, "fp32_s": round(fp32_s, 4),
            "bf16_s": round(bf16_s, 4), "measured_at": datetime.now(timezone.utc).isoformat()}


def time_forward(model, batch: int = 4, length: int = 128) -> float:
    """Best of three forward passes over a fixed random batch (after one warm-up)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)
    times = []
    with torch.inference_mode():
        for _ in range(4):
            start = time.perf_counter()
            model(input_ids=ids.to(model.device)).logits.float().sum()
            times.append(time.perf_counter() - start)
    return min(times[1:])
