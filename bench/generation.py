"""Shared-prefix generation vs plain batched `model.generate`, on the same prompts of one task.

    .venv/bin/python bench/generation.py --task ../shared/real-tasks/hotel_intents/task.toml \
        [--n 64] [--split dev] [--model smollm2-135m-instruct] [--batch-sizes 32,64]

Both sides decode greedily with the task's max_new_tokens and stop at end of sequence; plain
runs at the task's batch size, the shared-prefix path at each of --batch-sizes (first = the
task's unless given). A third column adds stop-at-JSON when the task's references are JSON (as
`evalloop eval` decides). Throughputs are measured in one run, so machine noise mostly cancels;
"identical" compares each output with the plain output (cut after its first JSON value for the
stop-at-JSON column).

`--backend vllm` adds a vLLM row (loop/models/vllm_backend.py: bf16, its own prefix caching, the
JSON stop when the task's references are JSON) on the same prompts, compared with the same plain
outputs: on a CUDA machine with `pip install 'evalloop[gpu]'`, one command measures vLLM against
transformers. Without CUDA or vllm it says so after the transformers rows and exits 0.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_TASK = Path(__file__).resolve().parents[2] / "shared/real-tasks/hotel_intents/task.toml"


def main() -> None:
    import torch

    from loop.evaluation.evaluate import answers_are_json
    from loop.models.decode import generate, json_end
    from loop.models.loading import load_model
    from loop.core.prompts import build_prompt
    from loop.data.tasks import load_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=str(DEFAULT_TASK), help="task.toml or its folder")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--batch-sizes", default="", help="prefix-path batch sizes, e.g. 32,64")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                        help="vllm: add a vLLM row (CUDA + the gpu extra)")
    args = parser.parse_args()

    path = Path(args.task)
    task = load_task(path / "task.toml" if path.is_dir() else path)
    gen = task.settings.generation
    sizes = [int(b) for b in args.batch_sizes.split(",") if b] or [gen.batch_size]
    lm = load_model(args.model)
    examples = task.split(args.split)[: args.n]
    prompts = [build_prompt(lm.tokenizer, e, task.settings.system_prompt) for e in examples]
    use_json = answers_are_json(task)

    def timed(**kw):
        t0 = time.perf_counter()
        out = generate(lm, prompts, gen.max_new_tokens, progress=False, **kw)
        return out, time.perf_counter() - t0

    generate(lm, prompts[:2], 4, 2, progress=False, prefix_cache=False)  # warm-up both paths
    generate(lm, prompts[:2], 4, 2, progress=False)
    plain, t_plain = timed(batch_size=gen.batch_size, prefix_cache=False)
    rows = [("plain generate", gen.batch_size, plain, t_plain, [o.text for o in plain])]
    for bs in sizes:
        out, t = timed(batch_size=bs)
        rows.append(("shared prefix", bs, out, t, rows[0][4]))
    if use_json:
        cut = [o.text[:json_end(o.text)] for o in plain]  # None keeps the whole text
        out, t = timed(batch_size=sizes[0], stop_at_json=True)
        rows.append(("prefix+json stop", sizes[0], out, t, [c.strip() for c in cut]))
    vllm_note = vllm_row(args, prompts, gen, use_json, rows) if args.backend == "vllm" else None

    n_tokens = sum(o.prompt_tokens for o in plain) / len(plain)
    print(f"task {task.name} ({args.split}), model {args.model}, {len(prompts)} prompts of "
          f"{n_tokens:.0f} tokens on average, max_new_tokens {gen.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}, references JSON: {use_json}")
    print(f"{'path':<18}{'batch':>6}{'ex/s':>9}{'seconds':>9}{'ratio':>8}"
          f"{'identical':>11}{'out tokens':>12}")
    for name, bs, out, t, ref in rows:
        same = sum(o.text == r for o, r in zip(out, ref))
        mean_out = sum(o.output_tokens for o in out) / len(out)
        print(f"{name:<18}{bs:>6}{len(out) / t:>9.2f}{t:>9.1f}{t_plain / t:>7.2f}x"
              f"{same:>6}/{len(out):<4}{mean_out:>12.1f}")
    if vllm_note:
        print(vllm_note)


def vllm_row(args, prompts, gen, use_json, rows) -> str | None:
    """Append vLLM's row (compared with the plain outputs, JSON-cut when the task is JSON), or
    return why it cannot run here."""
    from loop.models.backends import vllm_missing

    if missing := vllm_missing():
        return (f"vLLM is unavailable here: it needs {missing} "
                "(`pip install 'evalloop[gpu]'` on a CUDA machine).")
    from loop.models.vllm_backend import VllmGenerator

    generator = VllmGenerator.load(args.model)
    generator.generate(prompts[:2], 4, progress=False)  # warm-up: CUDA graphs, first kernels
    t0 = time.perf_counter()
    out = generator.generate(prompts, gen.max_new_tokens, progress=False,
                             stop_at_json=use_json)
    ref = rows[-1][4] if use_json else rows[0][4]
    rows.append(("vllm" + (" json stop" if use_json else ""), "auto", out,
                 time.perf_counter() - t0, ref))
    return None


if __name__ == "__main__":
    main()
