"""Batched greedy generation: length-sorted batches, left padding, stop at end of sequence.

    outputs = generate(loaded_model, prompts, max_new_tokens=64, batch_size=16)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from loop.models import LoadedModel
from loop.prompts import stop_strings


@dataclass(frozen=True)
class GenOutput:
    text: str
    latency_s: float  # the batch's wall time shared out over its examples
    prompt_tokens: int
    output_tokens: int


def _eos_ids(lm: LoadedModel) -> list[int]:
    ids = {lm.tokenizer.eos_token_id}
    gen_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def _truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def generate(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 64,
             batch_size: int = 16, progress: bool = True, desc: str = "generating",
             ) -> list[GenOutput]:
    """Greedy outputs for `prompts`, in input order."""
    import torch

    tok = lm.tokenizer
    tok.padding_side = "left"
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # longest first
    eos_ids, stops = _eos_ids(lm), stop_strings(tok)
    results: list[GenOutput | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="ex", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
        batch = {k: v.to(lm.device) for k, v in batch.items()}
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=eos_ids, pad_token_id=tok.pad_token_id)
        elapsed = time.perf_counter() - t0
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            ids = new_tokens[row].tolist()
            n_out = next((k + 1 for k, t in enumerate(ids) if t in eos_ids), len(ids))
            text = tok.decode(ids[:n_out], skip_special_tokens=True)
            results[i] = GenOutput(text=_truncate_at_stop(text, stops).strip(),
                                   latency_s=elapsed / len(idx), prompt_tokens=len(encoded[i]),
                                   output_tokens=n_out)
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]
