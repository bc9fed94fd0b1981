"""Batched generation vs a per-example `model.generate` loop, on the same 64 demo prompts.

    .venv/bin/python bench/generation.py [--model smollm2-135m-instruct] [--n 64] [--batch-size 32]

Both sides run greedy decoding with the same max_new_tokens and stop at end of sequence; the
ratio (examples/s batched / examples/s looped) is measured in one run, so machine noise cancels.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    from loop.generate import _eos_ids, generate
    from loop.models import load_model
    from loop.prompts import build_prompt
    from loop.tasks import load_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    task = load_task(Path(__file__).resolve().parents[1] / "datasets/demo/task.toml")
    lm = load_model(args.model)
    examples = task.split("test")[: args.n]
    prompts = [build_prompt(lm.tokenizer, e) for e in examples]
    generate(lm, prompts[:4], args.max_new_tokens, 4, progress=False)  # warm-up

    t0 = time.perf_counter()
    batched = generate(lm, prompts, args.max_new_tokens, args.batch_size, progress=False)
    t_batched = time.perf_counter() - t0

    eos = _eos_ids(lm)
    t0 = time.perf_counter()
    looped = []
    for prompt in prompts:
        ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            out = lm.model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                                    eos_token_id=eos, pad_token_id=lm.tokenizer.pad_token_id)
        looped.append(lm.tokenizer.decode(out[0, ids["input_ids"].shape[1]:],
                                          skip_special_tokens=True).strip())
    t_loop = time.perf_counter() - t0

    same = sum(a.text == b for a, b in zip(batched, looped))
    print(f"model {args.model}, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"per-example loop : {len(prompts) / t_loop:7.2f} examples/s ({t_loop:.1f} s)")
    print(f"batched (bs={args.batch_size:>3}): {len(prompts) / t_batched:7.2f} examples/s "
          f"({t_batched:.1f} s)")
    print(f"speed-up ratio   : {t_loop / t_batched:.2f}x")
    print(f"identical outputs: {same}/{len(prompts)} (batched fp32 padding can flip near-ties)")


if __name__ == "__main__":
    main()
