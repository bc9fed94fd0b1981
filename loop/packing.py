"""Training batches without padding: tokenized prompt/completion rows, a padding-free collator and
the per-example ("varlen") attention that keeps packed examples apart.

A batch is one row holding its examples back to back, with position ids restarting at 0 for each
example and `cu_seq_lens_q/k` marking the boundaries (the flash-attention convention). Linear
layers, which are almost all of the compute, then see only real tokens. Attention must not mix
examples: `varlen_attention` runs SDPA once per example (causal), so no FLOP is spent on padding or
on masked cross-example blocks, and no token can attend to another example. Used by loop/train.py;
`tests/test_train.py` checks that packed logits equal one-example-at-a-time logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import accumulate, chain, pairwise

from loop.prompts import build_prompt, completion_text
from loop.records import Example

VARLEN = "evalloop_varlen"  # the attn_implementation name registered by `register_varlen_attention`
IGNORE = -100  # label of tokens that carry no loss (prompt tokens)


def tokenize_examples(tokenizer, examples: Sequence[Example], system_prompt: str | None,
                      max_seq_len: int) -> tuple[list[dict], list[str]]:
    """Rows {input_ids, labels} with prompt labels masked; returns (rows, ids skipped as too long).

    Prompt and completion are tokenized separately (no special tokens added), exactly as
    loop.generate sees the prompt and as the model emits the answer after it, so training and
    inference agree token for token. An example longer than `max_seq_len` is skipped rather than
    truncated: cutting it would drop the answer or train on a prompt the model never sees.
    """
    rows, skipped = [], []
    for example in examples:
        prompt = tokenizer(build_prompt(tokenizer, example, system_prompt),
                           add_special_tokens=False)["input_ids"]
        answer = tokenizer(completion_text(tokenizer, example),
                           add_special_tokens=False)["input_ids"]
        if len(prompt) + len(answer) > max_seq_len or not answer:
            skipped.append(example.id)
            continue
        rows.append({"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer})
    return rows, skipped


@dataclass(frozen=True)
class Collator:
    """Features -> model inputs. `padding_free`: one packed row; else right-padded rows + mask.

    A packed row is topped up to a multiple of `multiple` tokens with a separate all-padding
    segment: with a handful of distinct shapes the CPU allocator reuses its blocks, where a new
    length every step grew RSS by ~30 MB per step (measured on the 135M model, bf16).

    `token_budget` bounds a packed row: a batch with more tokens comes back as
    {"chunks": [packed row, ...], "labels": all labels} with consecutive examples packed into
    chunks of at most that many tokens (an example longer than the budget gets a chunk alone).
    The trainer runs forward + backward per chunk, so activation memory follows the budget, not
    the batch, while the optimizer step still sees the whole batch.
    """

    pad_token_id: int
    padding_free: bool = True
    multiple: int = 64
    token_budget: int | None = None

    def __call__(self, features: list[dict]) -> dict:
        import torch

        ids = [list(f["input_ids"]) for f in features]
        labels = [list(f["labels"]) for f in features]
        if not self.padding_free:
            real = sum(len(x) for x in ids)
            width = max(len(x) for x in ids)
            pad = [width - len(x) for x in ids]
            return {
                "input_ids": torch.tensor([x + [self.pad_token_id] * p for x, p in zip(ids, pad)]),
                "labels": torch.tensor([y + [IGNORE] * p for y, p in zip(labels, pad)]),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * p for x, p in zip(ids, pad)]),
                "real_tokens": real,
            }
        groups = budget_groups([len(x) for x in ids], self.token_budget)
        chunks = [self._pack([ids[i] for i in g], [labels[i] for i in g]) for g in groups]
        if len(chunks) == 1:
            return chunks[0]
        # top-level labels only let the trainer count the batch's targets before any chunk runs
        return {"chunks": chunks, "labels": torch.cat([c["labels"] for c in chunks], dim=1)}

    def _pack(self, ids: list[list[int]], labels: list[list[int]]) -> dict:
        import torch

        real = sum(len(x) for x in ids)
        if -real % self.multiple:
            ids = [*ids, [self.pad_token_id] * (-real % self.multiple)]
            labels = [*labels, [IGNORE] * len(ids[-1])]
        lengths = [len(x) for x in ids]
        flat_labels = []
        for lab in labels:  # an example's first token is never a target of the previous one
            flat_labels += [IGNORE, *lab[1:]]
        cu = torch.tensor([0, *accumulate(lengths)], dtype=torch.int32)
        return {
            "input_ids": torch.tensor([list(chain.from_iterable(ids))]),
            "labels": torch.tensor([flat_labels]),
            "position_ids": torch.tensor([[p for n in lengths for p in range(n)]]),
            "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": max(lengths), "max_length_k": max(lengths),
            "real_tokens": real,
        }


def budget_groups(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices of consecutive items, grouped greedily so each group's length sum <= budget
    (an item longer than the budget forms its own group); one group when budget is None."""
    if budget is None:
        return [list(range(len(lengths)))]
    groups: list[list[int]] = []
    total = 0
    for i, n in enumerate(lengths):
        if not groups or total + n > budget:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def pop_real_tokens(batch: dict) -> int:
    """Remove and return the non-padding token count (what tokens/s counts; not a model input)."""
    real = batch.pop("real_tokens", None)
    if real is not None:
        return int(real)
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs):
    """SDPA per packed example (causal within it); plain SDPA when the batch is not packed.

    query: (1, heads, tokens, dim); key/value: (1, kv_heads, tokens, dim); returns
    (1, tokens, heads, dim) like every transformers attention function.
    """
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    lengths = [e - s for s, e in pairwise(cu.tolist())]
    gqa = query.shape[1] != key.shape[1]
    # On CPU, SDPA on short sequences runs twice as fast in fp32 as in bf16 (and is exact); the
    # upcast copies are small next to the linear layers.
    dtype = query.dtype
    upcast = query.device.type == "cpu" and dtype != torch.float32
    with torch.autocast("cpu", enabled=False) if upcast else nullcontext():
        q, k, v = (x.float() for x in (query, key, value)) if upcast else (query, key, value)
        # split, not slicing: a slice's backward zero-fills a full-size gradient per example
        parts = [F.scaled_dot_product_attention(a, b, c, dropout_p=dropout, is_causal=True,
                                                scale=scaling, enable_gqa=gqa)
                 for a, b, c in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))]
        out = torch.cat([p.transpose(1, 2) for p in parts], dim=1)
    return out.to(dtype), None


def _varlen_mask(*args, attention_mask=None, **kwargs):
    """No mask for packed rows (boundaries travel as cu_seq_lens); SDPA's mask for padded ones."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_varlen_attention() -> str:
    """Make `attn_implementation=VARLEN` available to every transformers model; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(VARLEN, _varlen_mask)
    return VARLEN
