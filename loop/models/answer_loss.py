"""How well a model already knows each reference answer: mean token NLL of the answer after its
prompt, the signal loss-based data selection ranks the pool by.

    losses = answer_losses(loaded_model, examples)   # one float per example, higher = unknown

The task's shared prompt prefix is encoded once and read in place by every batch (as in
`loop.models.decode`, through `loop.models.prefix_attention`); rows are left-padded so every
answer ends at the last position and only the answer's positions go through the vocabulary
projection. Tokenisation is the training one (`loop.core.prompts.tokenize_examples`): prompt
and answer (+ end-of-turn token) tokenized separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from loop.models.decode import supports_prefix_cache, prefix_groups
from loop.models.loading import LoadedModel
from loop.models.prefix_attention import (PrefixAttentionUnsupported, forward_after_prefix,
                                          suffix_cache)
from loop.core.prompts import IGNORE, tokenize_examples
from loop.core.records import Example


def answer_losses(lm: LoadedModel, examples: Sequence[Example], system_prompt: str | None = None,
                  batch_size: int = 16, progress: bool = False,
                  reduce: Literal["mean", "max"] = "mean") -> np.ndarray:
    """Negative log-likelihood of each example's answer tokens, in input order: their mean, or
    the largest (the answer's least likely token: where greedy decoding would leave it)."""
    rows, _ = tokenize_examples(lm.tokenizer, examples, system_prompt, max_seq_len=1 << 30)
    if len(rows) != len(examples):
        raise ValueError("every example needs a non-empty answer")
    n_prompt = [r["labels"].count(IGNORE) for r in rows]
    prompt_ids = [r["input_ids"][:k] for r, k in zip(rows, n_prompt)]
    answer_ids = [r["input_ids"][k:] for r, k in zip(rows, n_prompt)]
    out = np.zeros(len(examples), dtype=np.float64)
    # a prefix must leave each row its last prompt token: its logit scores the first answer token
    trimmed = [ids[:-1] for ids in prompt_ids]
    groups = prefix_groups(trimmed) if supports_prefix_cache(lm) else \
        [(0, [i]) for i in range(len(examples))]
    singles = [i for n, rows in groups if n == 0 for i in rows]
    work = [(n, rows) for n, rows in groups if n > 0] + ([(0, singles)] if singles else [])
    bar = tqdm(total=len(examples), desc="answer losses", unit="row", disable=not progress)
    for n_prefix, rows in work:
        _group_losses(lm, prompt_ids, answer_ids, rows, n_prefix, batch_size, out, bar, reduce)
    bar.close()
    return out


def _group_losses(lm, prompt_ids, answer_ids, rows: Sequence[int], n_prefix: int,
                  batch_size: int, out: np.ndarray, bar, reduce: str = "mean") -> None:
    import torch

    prefix_kv = None
    if n_prefix:
        with torch.inference_mode():
            prefix = torch.tensor([prompt_ids[rows[0]][:n_prefix]], device=lm.device)
            prefix_kv = lm.model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
    order = sorted(rows, key=lambda i: -(len(prompt_ids[i]) + len(answer_ids[i])))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [prompt_ids[i][n_prefix:] + answer_ids[i] for i in idx]
        lengths = [len(answer_ids[i]) for i in idx]
        try:
            losses = _batch_losses(lm, prefix_kv, n_prefix, seqs, lengths, reduce)
        except PrefixAttentionUnsupported:  # on the first batch: score the group unshared
            _group_losses(lm, prompt_ids, answer_ids, rows, 0, batch_size, out, bar, reduce)
            return
        out[idx] = losses
        bar.update(len(idx))


def _batch_losses(lm, prefix_kv, n_prefix: int, seqs: Sequence[Sequence[int]],
                  answer_lens: Sequence[int], reduce: str = "mean") -> np.ndarray:
    import torch
    import torch.nn.functional as F

    n, width, dev = len(seqs), max(len(s) for s in seqs), lm.device
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in seqs], device=dev)
    mask = torch.tensor([[False] * (width - len(s)) + [True] * len(s) for s in seqs], device=dev)
    positions = (n_prefix + mask.long().cumsum(1) - 1).clamp(min=0)
    keep = max(answer_lens) + 1  # the logit before each answer token, all at the row's end
    with torch.inference_mode():
        if prefix_kv is None:
            logits = lm.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions,
                              use_cache=False, logits_to_keep=keep).logits
        else:
            logits = forward_after_prefix(lm.model, prefix_kv, ids, mask, positions,
                                          suffix_cache(prefix_kv, n, width), keep)
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts the last keep-1 tokens
    targets = ids[:, -(keep - 1):]
    token_nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    answer = torch.zeros_like(token_nll, dtype=torch.bool)
    for row, length in enumerate(answer_lens):
        answer[row, -length:] = True
    if reduce == "max":
        return (token_nll * answer).amax(1).cpu().numpy()
    return ((token_nll * answer).sum(1) / torch.tensor(answer_lens, device=dev)).cpu().numpy()
