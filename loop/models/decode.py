"""Batched greedy generation that encodes a shared prompt prefix once.

    outputs = generate(loaded_model, prompts, max_new_tokens=64, batch_size=16)

Prompts of one task share a long prefix (chat template + fixed instruction). Prompts are grouped
by shared token prefix; each group's prefix is run through the model once and only the varying
suffixes are decoded, attending to the one prefix cache in place (loop/models/prefix_attention.py;
left padding sits between prefix and suffix, hidden by the attention mask; position ids continue
from the prefix). Rows leave the batch as soon as they stop. Prompts that share little, and
models whose attention does not dispatch through transformers' AttentionInterface, fall back to
plain batched `model.generate` (`prefix_cache=False` forces that path for every prompt).
Greedy outputs are the same on both paths up to fp32 rounding (rare near-ties can flip; see
bench/generation.py).

`stop_at_json=True` also stops a row once its text holds one complete JSON object or list, and
cuts the text there: the output equals the plain output cut after its first complete JSON value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from loop.models.loading import LoadedModel
from loop.models.prefix_attention import (PrefixAttentionUnsupported, forward_after_prefix,
                                          suffix_cache)
from loop.core.prompts import stop_strings

MIN_PREFIX = 32  # tokens; below this a prefix is not worth its own encode and smaller batches


@dataclass(frozen=True)
class GenOutput:
    text: str
    latency_s: float  # the batch's wall time (plus a share of its prefix encode) per example
    prompt_tokens: int  # the full prompt, shared prefix included
    output_tokens: int


# ---------------------------------------------------------------------------- pure helpers

def json_end(text: str) -> int | None:
    """Index just after the first complete JSON object/list in `text` (balanced brackets outside
    strings), or None while it is still open or absent."""
    depth, in_str, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch in "[{":
            depth += 1
        elif depth == 0:
            continue  # prose before the value: quotes and closers there do not count
        elif ch == '"':
            in_str = True
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def prefix_groups(encoded: Sequence[Sequence[int]], min_prefix: int = MIN_PREFIX,
                  ) -> list[tuple[int, list[int]]]:
    """Split prompts into groups that share a token prefix: [(prefix_len, indices)].

    Prompts are sorted by tokens, so a shared prefix is a run of neighbours; a run is split at
    its weakest link when the parts together save at least twice the tokens the whole run saves
    (fewer, bigger groups batch better). Every prefix leaves each row at least one token to run.
    Rows in no group of two or more with a prefix >= min_prefix are returned as (0, [i]).
    """
    order = sorted(range(len(encoded)), key=lambda i: list(encoded[i]))
    links = [common_prefix_len(encoded[a], encoded[b]) for a, b in zip(order, order[1:])]
    groups: list[tuple[int, list[int]]] = []
    todo = [(0, len(order))]  # runs order[lo:hi] with links[lo:hi - 1]; a stack, not recursion
    while todo:
        lo, hi = todo.pop()
        rows = order[lo:hi]
        if hi - lo < 2:
            groups.extend((0, [i]) for i in rows)
            continue
        weakest = min(links[lo:hi - 1])
        cuts = [lo] + [k + 1 for k in range(lo, hi - 1) if links[k] == weakest] + [hi]
        parts = list(zip(cuts, cuts[1:]))
        saved_parts = sum((b - a - 1) * min(links[a:b - 1]) for a, b in parts if b - a > 1)
        if weakest < min_prefix or saved_parts >= 2 * (hi - lo - 1) * weakest:
            todo.extend(parts)
            continue
        n_prefix = min([weakest] + [len(encoded[i]) - 1 for i in rows])
        groups.extend([(n_prefix, rows)] if n_prefix >= min_prefix else [(0, [i]) for i in rows])
    return groups


def _stopped(tok, ids: Sequence[int], eos_ids: Sequence[int], stop_at_json: bool) -> bool:
    """Whether a row ends with its last token `ids[-1]`."""
    if ids[-1] in eos_ids:
        return True
    return stop_at_json and json_end(tok.decode(ids, skip_special_tokens=True)) is not None


def finish(tok, ids: Sequence[int], eos_ids: Sequence[int], stops: Sequence[str],
           stop_at_json: bool) -> tuple[str, int]:
    """Text and token count of one row's new tokens, cut at its first stop (the vLLM backend
    passes its outputs through this too, so both backends cut the same way)."""
    n_out = next((k + 1 for k in range(len(ids))
                  if _stopped(tok, ids[:k + 1], eos_ids, stop_at_json)), len(ids))
    text = _truncate_at_stop(tok.decode(ids[:n_out], skip_special_tokens=True), stops)
    end = json_end(text) if stop_at_json else None
    return (text[:end] if end is not None else text).strip(), n_out


def _eos_ids(lm: LoadedModel) -> list[int]:
    ids = {lm.tokenizer.eos_token_id}
    gen_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def _truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


# ---------------------------------------------------------------------------- generation

OnBatch = Callable[[list[tuple[int, GenOutput]]], None]  # (prompt index, output) of one batch


def generate(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 64,
             batch_size: int = 16, progress: bool = True, desc: str = "generating",
             prefix_cache: bool = True, stop_at_json: bool = False,
             on_batch: OnBatch | None = None) -> list[GenOutput]:
    """Greedy outputs for `prompts`, in input order. `on_batch` gets each batch's outputs as
    soon as it is decoded (the caller stores them, so an interrupted run keeps them)."""
    tok = lm.tokenizer
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    groups = prefix_groups(encoded) if prefix_cache and supports_prefix_cache(lm) else []
    if not groups:
        groups = [(0, [i]) for i in range(len(prompts))]
    plain = [i for n, rows in groups if n == 0 for i in rows]
    results: list[GenOutput | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="ex", disable=not progress)

    def done(idx: Sequence[int]) -> None:
        if on_batch is not None:  # first: what the bar counts is stored
            on_batch([(i, results[i]) for i in idx])
        bar.update(len(idx))

    args = (lm, encoded, max_new_tokens, batch_size, stop_at_json, results, done)
    with bar:  # closed when generation stops too: no bar redrawn after an error message
        for n_prefix, rows in groups:
            if not n_prefix:
                continue
            try:
                _generate_with_prefix(*args, rows, n_prefix)
            except PrefixAttentionUnsupported:  # raised on the group's first forward, nothing
                plain.extend(rows)              # written
        if plain:
            _generate_plain(*args, plain)
    return results  # type: ignore[return-value]


def supports_prefix_cache(lm: LoadedModel) -> bool:
    """Whether a shared prompt prefix can be encoded once and read in place by every row."""
    # Prompt-learning adapters prepend virtual tokens on every forward, and sliding-window or
    # linear-attention caches do not expand as plain key/value tensors: those take the plain path.
    peft_config = getattr(lm.model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return False
    config = lm.model.config
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    return layer_types == {"full_attention"} and not getattr(config, "sliding_window", None)


def _generate_plain(lm, encoded, max_new_tokens, batch_size, stop_at_json, results, done,
                    rows: Sequence[int]) -> None:
    """Today's path: length-sorted, left-padded batches through `model.generate`."""
    import torch

    tok = lm.tokenizer
    tok.padding_side = "left"
    order = sorted(rows, key=lambda i: -len(encoded[i]))  # longest first
    eos_ids, stops = _eos_ids(lm), stop_strings(tok)
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
            text, n_out = finish(tok, new_tokens[row].tolist(), eos_ids, stops, stop_at_json)
            results[i] = GenOutput(text=text, latency_s=elapsed / len(idx),
                                   prompt_tokens=len(encoded[i]), output_tokens=n_out)
        done(idx)


def _generate_with_prefix(lm, encoded, max_new_tokens, batch_size, stop_at_json, results, done,
                          rows: Sequence[int], n_prefix: int) -> None:
    """Encode the group's prefix once (with the adapter active, as `lm.model` runs it), then
    decode every batch's suffixes against it."""
    import torch

    tok = lm.tokenizer
    eos_ids, stops = _eos_ids(lm), stop_strings(tok)
    t0 = time.perf_counter()
    with torch.inference_mode():
        prefix = torch.tensor([encoded[rows[0]][:n_prefix]], device=lm.device)
        prefix_kv = lm.model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
    prefix_share = (time.perf_counter() - t0) / len(rows)
    order = sorted(rows, key=lambda i: -len(encoded[i]))  # longest suffix first
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t0 = time.perf_counter()
        new = _decode(lm, prefix_kv, [encoded[i][n_prefix:] for i in idx], n_prefix,
                      max_new_tokens, eos_ids, stop_at_json)
        elapsed = time.perf_counter() - t0
        for row, i in enumerate(idx):
            text, n_out = finish(tok, new[row], eos_ids, stops, stop_at_json)
            results[i] = GenOutput(text=text, latency_s=elapsed / len(idx) + prefix_share,
                                   prompt_tokens=len(encoded[i]), output_tokens=n_out)
        done(idx)


def _decode(lm, prefix_kv, suffixes: Sequence[Sequence[int]], n_prefix: int,
            max_new_tokens: int, eos_ids: Sequence[int], stop_at_json: bool) -> list[list[int]]:
    """Greedy new tokens for each suffix after the shared prefix. The cache holds only the rows'
    suffixes and new tokens; attention reads the one prefix cache in place. Finished rows drop
    out of the batch (their cache rows with them) so later steps only pay for live rows."""
    import torch

    n, width, dev = len(suffixes), max(len(s) for s in suffixes), lm.device
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in suffixes], device=dev)
    mask = torch.tensor([[False] * (width - len(s)) + [True] * len(s) for s in suffixes],
                        device=dev)
    positions = n_prefix + mask.long().cumsum(1) - 1  # the suffix continues the prefix
    cache = suffix_cache(prefix_kv, n, width + max_new_tokens)
    live, new = list(range(n)), [[] for _ in range(n)]
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = forward_after_prefix(lm.model, prefix_kv, ids, mask, positions, cache)
            picked = logits[:, -1].argmax(-1).tolist()
            keep = []
            for j, (row, token) in enumerate(zip(live, picked)):
                new[row].append(token)
                if not _stopped(lm.tokenizer, new[row], eos_ids, stop_at_json):
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=dev)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                live = [live[j] for j in keep]
            ids = torch.tensor([[picked[j]] for j in keep], device=dev)
            mask = torch.cat([mask, mask.new_ones(len(keep), 1)], dim=1)
            positions = positions[:, -1:] + 1
    return new
