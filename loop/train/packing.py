"""Training batches without padding: a padding-free collator over tokenized prompt/completion
rows (`loop.core.prompts.tokenize_examples`) and the per-example ("varlen") attention that keeps
packed examples apart.

A batch is one row holding its examples back to back, with position ids restarting at 0 for each
example and `cu_seq_lens_q/k` marking the boundaries (the flash-attention convention). Linear
layers, which are almost all of the compute, then see only real tokens. Attention must not mix
examples: `varlen_attention` runs SDPA once per example (causal), so no FLOP is spent on padding or
on masked cross-example blocks, and no token can attend to another example. Used by loop/train/sft.py;
`tests/test_train.py` checks that packed logits equal one-example-at-a-time logits.

Shared prefix: rows of a task usually start with the same long text (chat template + a fixed
instruction, 120-230 tokens on the real tasks, against ~30 tokens of input + answer). When the
rows of a packed chunk share at least MIN_SHARED_PREFIX tokens, the chunk holds
[prefix once][row 1's rest][row 2's rest]...: the prefix attends causally to itself, each rest to
the whole prefix and causally to itself, and a rest's position ids continue from the prefix
length. Every rest thus sees exactly what its row saw alone, and the prefix's activations get the
sum of all rows' gradients: the same gradients as training the rows one by one, for a fraction
of the forward tokens. Each rest keeps >= 1 prompt token, so every target is predicted inside its
own rest (the prefix's last position predicts no label).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import accumulate, chain, pairwise

from loop.core.prompts import IGNORE, MIN_SHARED_PREFIX

VARLEN = "evalloop_varlen"  # the attn_implementation name registered by `register_varlen_attention`


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

    `share_prefix` (packed rows only; needs `varlen_attention`): rows are sorted so that rows
    with a common prefix meet in a chunk, and a chunk whose rows share >= MIN_SHARED_PREFIX
    tokens holds that prefix once (`shared_prefix_len` in the batch; see the module docstring).
    The budget then counts forward tokens. `real_tokens` always counts the rows' own tokens (as
    if unshared), `forward_tokens` the tokens the model actually runs (neither counts top-up).
    """

    pad_token_id: int
    padding_free: bool = True
    multiple: int = 64
    token_budget: int | None = None
    share_prefix: bool = False

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
        if self.share_prefix:
            groups = prefix_groups(ids, [_prompt_len(y) for y in labels], self.token_budget)
        else:
            groups = [(g, 0) for g in budget_groups([len(x) for x in ids], self.token_budget)]
        chunks = [self._pack([ids[i] for i in g], [labels[i] for i in g], prefix)
                  for g, prefix in groups]
        if len(chunks) == 1:
            return chunks[0]
        # top-level labels only let the trainer count the batch's targets before any chunk runs
        return {"chunks": chunks, "labels": torch.cat([c["labels"] for c in chunks], dim=1)}

    def _pack(self, ids: list[list[int]], labels: list[list[int]], prefix: int = 0) -> dict:
        """One packed row; with `prefix`, segment 0 is the shared prefix and the others the rows'
        rests, whose positions start at `prefix`."""
        import torch

        real = sum(len(x) for x in ids)
        starts = [0] * len(ids)
        if prefix:
            ids = [ids[0][:prefix], *(x[prefix:] for x in ids)]
            labels = [[IGNORE] * prefix, *(y[prefix:] for y in labels)]
            starts = [0, *(prefix for _ in starts)]
        forward = sum(len(x) for x in ids)
        if -forward % self.multiple:
            ids = [*ids, [self.pad_token_id] * (-forward % self.multiple)]
            labels = [*labels, [IGNORE] * len(ids[-1])]
            starts.append(0)
        lengths = [len(x) for x in ids]
        flat_labels = []
        for lab in labels:  # a segment's first token is never a target of the previous one
            flat_labels += [IGNORE, *lab[1:]]
        cu = torch.tensor([0, *accumulate(lengths)], dtype=torch.int32)
        batch = {
            "input_ids": torch.tensor([list(chain.from_iterable(ids))]),
            "labels": torch.tensor([flat_labels]),
            "position_ids": torch.tensor([[s + p for s, n in zip(starts, lengths)
                                           for p in range(n)]]),
            "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": max(lengths), "max_length_k": max(lengths),
            "real_tokens": real, "forward_tokens": forward,
        }
        if prefix:
            batch["shared_prefix_len"] = prefix
        return batch


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


def prefix_groups(ids: Sequence[Sequence[int]], prompt_lens: Sequence[int], budget: int | None,
                  minimum: int = MIN_SHARED_PREFIX) -> list[tuple[list[int], int]]:
    """(indices, shared prefix length or 0) per chunk: rows sorted by their tokens, grouped
    greedily while the chunk's forward tokens stay <= budget (a lone row may exceed it).

    Sorted rows put rows with a common prefix side by side, and a group's common prefix is then
    the smallest neighbour-to-neighbour one. The prefix stops one token before the earliest
    answer of the group. A group that shares stops before a row that would end the sharing, so
    rows with another instruction start their own chunk.
    """
    groups: list[tuple[list[int], int]] = []
    members: list[int] = []
    common = total = 0

    def cost(n: int, common: int, total: int) -> int:
        return total - (n - 1) * common if n > 1 and common >= minimum else total

    for i in sorted(range(len(ids)), key=lambda i: list(ids[i])):
        if members:
            joined = min(common, _common_len(ids[members[-1]], ids[i]), prompt_lens[i] - 1)
            n = len(members) + 1
            sharing = len(members) > 1 and common >= minimum
            fits = budget is None or cost(n, joined, total + len(ids[i])) <= budget
            if fits and not (sharing and joined < minimum):
                members.append(i)
                common, total = joined, total + len(ids[i])
                continue
            groups.append((members, common if cost(len(members), common, total) < total else 0))
        members, common, total = [i], prompt_lens[i] - 1, len(ids[i])
    if members:
        groups.append((members, common if cost(len(members), common, total) < total else 0))
    return groups


def _common_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _prompt_len(labels: Sequence[int]) -> int:
    """Tokens before the first target (the whole row when nothing is labelled)."""
    return next((i for i, y in enumerate(labels) if y != IGNORE), len(labels))


def pop_real_tokens(batch: dict) -> int:
    """Remove the token counts (not model inputs); return the rows' own non-padding tokens (what
    tokens/s counts: a shared prefix counts once per row, as if unshared)."""
    batch.pop("forward_tokens", None)
    real = batch.pop("real_tokens", None)
    if real is not None:
        return int(real)
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs):
    """SDPA per packed segment (causal within it); plain SDPA when the batch is not packed.

    With `shared_prefix_len` P, segment 0 is the prefix (causal) and every later segment
    attends to the prefix's keys and causally to its own (query j sees prefix keys and its own
    keys <= j). query: (1, heads, tokens, dim); key/value: (1, kv_heads, tokens, dim); returns
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
    prefix = kwargs.get("shared_prefix_len") or 0
    if prefix and lengths[0] != prefix:
        raise ValueError(f"shared_prefix_len={prefix} but the first segment has {lengths[0]} "
                         "tokens")
    gqa = query.shape[1] != key.shape[1]
    # On CPU, SDPA on short sequences runs twice as fast in fp32 as in bf16 (and is exact); the
    # upcast copies are small next to the linear layers.
    dtype = query.dtype
    upcast = query.device.type == "cpu" and dtype != torch.float32
    with torch.autocast("cpu", enabled=False) if upcast else nullcontext():
        q, k, v = (x.float() for x in (query, key, value)) if upcast else (query, key, value)
        # split, not slicing: a slice's backward zero-fills a full-size gradient per example
        qs, ks, vs = (x.split(lengths, 2) for x in (q, k, v))
        parts = []
        for i, (a, b, c) in enumerate(zip(qs, ks, vs)):
            # every segment after the prefix (the top-up one too: its outputs carry no loss)
            if prefix and i:  # the prefix's keys first; lower-right aligned causal mask
                b, c = torch.cat([ks[0], b], 2), torch.cat([vs[0], c], 2)
                mask = torch.ones(a.shape[2], b.shape[2], dtype=torch.bool,
                                  device=a.device).tril(prefix)
                parts.append(F.scaled_dot_product_attention(
                    a, b, c, attn_mask=mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa))
            else:
                parts.append(F.scaled_dot_product_attention(
                    a, b, c, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa))
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
