"""Several processes through accelerate's launcher: the command, the run, and the two collective
helpers the ranks share. Used by loop/train/distributed.py and loop/evaluation/sharded.py.

    cmd = accelerate_command(2, "loop.train.rank", [plan_path])
    run_ranks(cmd, 2, log_path=work / "launch.log", what="training", progress=False)

`accelerate launch --multi_gpu` starts the ranks with torchrun: one per GPU with NCCL on CUDA,
gloo on a CPU-only machine (`--cpu` would start a single process there). The process that calls
`run_ranks` is not a rank: it holds the store (DuckDB allows one writer) and waits; the ranks
never open it. That is why the module-level entry points (`python -m loop.train`, `evalloop`)
refuse to run as ranks of an outside launcher: their store would be opened N times.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loop.core.errors import EvalloopError
from loop.core.openmp import wait_briefly

# FSDP for LoRA: FSDP2 (per-parameter sharding, frozen and trainable weights mixed in a layer),
# one shard unit per decoder layer (the model's own `_no_split_modules`), and a full state dict
# gathered at save time, so the adapter files are the single-process ones.
FSDP_FLAGS = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy",
              "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT",
              "--fsdp_cpu_ram_efficient_loading", "false"]


class LaunchError(EvalloopError):
    """A rank failed or the launcher could not start the ranks."""


def accelerate_command(processes: int, module: str, args: list[str],
                       strategy: str = "ddp") -> list[str]:
    """`accelerate launch` for `processes` ranks running `python -m module args` on this
    machine. Port 0: a free port, so concurrent launches on one machine do not collide."""
    if processes < 2:
        raise LaunchError(f"A launch needs at least 2 processes, got {processes}.")
    mode = FSDP_FLAGS if strategy == "fsdp" else ["--multi_gpu"]
    return [sys.executable, "-m", "accelerate.commands.launch", *mode,
            "--num_processes", str(processes), "--num_machines", "1",
            "--dynamo_backend", "no", "--mixed_precision", "no", "--main_process_port", "0",
            "-m", module, *args]


def rank_environment(processes: int) -> dict[str, str]:
    """The launcher's environment: on CPU the cores are divided between the ranks (torchrun
    would give each one thread; more ranks than cores only adds contention)."""
    env = dict(os.environ)
    wait_briefly(env)  # long-spinning idle threads starve shared cores
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "OMP_NUM_THREADS" not in env and not has_cuda():
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return env


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_ranks(cmd: list[str], processes: int, log_path: Path, what: str,
              progress: bool) -> None:
    """Run the launcher to the end. With `progress` the ranks print to this terminal's stderr
    (stdout stays free for --json); otherwise their output goes to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        sink = sys.stderr if progress else log
        try:
            code = subprocess.run(cmd, env=rank_environment(processes), stdout=sink,
                                  stderr=sink, check=False).returncode
        except OSError as exc:
            raise LaunchError(f"Cannot start accelerate's launcher for {what}: {exc}.") from None
    if code != 0:
        where = "its output is above" if progress else f"log: {log_path}"
        tail = "" if progress else _tail(log_path)
        raise LaunchError(f"{what} on {processes} processes failed (launcher exit {code}; "
                          f"{where}). Finished work is kept: rerun to resume." + tail)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\nLast lines:\n" + "\n".join(text) if text else ""


def refuse_outside_launcher() -> None:
    """Entry points that open the store must not run as N ranks of torchrun/accelerate."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LaunchError("This command opens the store, which allows one writer, so it must not "
                          "run under torchrun or `accelerate launch`: run it as one process with "
                          "--processes N (or [training] processes = N); it launches the ranks "
                          "itself (docs/scale.md).")


def sum_over_ranks(value: float) -> float:
    """The sum of `value` over all ranks; `value` itself outside a process group. Every rank
    must call it at the same point (a collective)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item())
