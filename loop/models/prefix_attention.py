"""Attention over one shared prefix plus per-row suffixes, without copying the prefix per row.

    cache = suffix_cache(prefix_cache, n_rows, capacity)     # empty, n rows
    logits = forward_after_prefix(model, prefix_cache, ids, mask, positions, cache)

Decoding a batch after a shared prefix used to copy the prefix's keys/values into every row and
read all those copies at every step: at batch 64 with a 200-token prefix that is most of the
memory traffic, and compacting the batch when a row stops copied it again. Here the cache holds
only each row's suffix and new tokens; every attention layer scores its queries against the one
prefix (a single matmul over all rows' queries, reading the prefix once) and against its own
suffix (masked by the caller's 4-D boolean mask), and takes one softmax over both ("cascade"
attention, as in vLLM and FlashInfer). The result equals attention over the concatenated keys up
to fp32 summation order.

The model's attention is switched to this function (transformers' AttentionInterface) only for
the forward; a model whose attention does not dispatch through that interface (hand-wired
attention) raises PrefixAttentionUnsupported on the first forward, before anything is returned,
so callers fall back to the plain path.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

NAME = "evalloop_shared_prefix"
_active: contextvars.ContextVar[_Prefix | None] = contextvars.ContextVar(NAME, default=None)


@dataclass
class _Prefix:
    layers: list  # per layer (keys, values), each [1, kv_heads, prefix_len, head_dim]
    calls: list[int] = field(default_factory=lambda: [0])


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention signature: query [n, heads, q, d], key/value [n, kv_heads, s, d]
    (the rows' suffixes), attention_mask [n, 1, q, s] boolean; returns ([n, q, heads, d], None)."""
    import torch

    prefix = _active.get()
    prefix_keys, prefix_values = prefix.layers[module.layer_idx]
    prefix.calls[0] += 1
    n, heads, q_len, dim = query.shape
    kv_heads, p_len, s_len = key.shape[1], prefix_keys.shape[2], key.shape[2]
    groups = heads // kv_heads  # query head h reads kv head h // groups (as repeat_kv lays out)
    scale = dim ** -0.5 if scaling is None else scaling
    rows = groups * q_len
    q = query.reshape(n, kv_heads, rows, dim)
    # Prefix scores: all rows' queries against the one prefix, one matmul per kv head.
    q_by_head = q.transpose(0, 1).reshape(kv_heads, n * rows, dim)
    s_prefix = torch.matmul(q_by_head, prefix_keys[0].transpose(-1, -2))
    s_prefix = s_prefix.view(kv_heads, n, rows, p_len).transpose(0, 1)
    s_suffix = torch.matmul(q, key.transpose(-1, -2))
    visible = attention_mask[:, :, None].expand(n, kv_heads, groups, q_len, s_len)
    s_suffix = s_suffix.masked_fill(~visible.reshape(n, kv_heads, rows, s_len), float("-inf"))
    weights = torch.softmax(torch.cat([s_prefix, s_suffix], dim=-1).float() * scale, dim=-1)
    weights = weights.to(value.dtype)
    w_prefix = weights[..., :p_len].transpose(0, 1).reshape(kv_heads, n * rows, p_len)
    out = torch.matmul(w_prefix, prefix_values[0]).view(kv_heads, n, rows, dim).transpose(0, 1)
    out = out + torch.matmul(weights[..., p_len:], value)
    out = out.reshape(n, heads, q_len, dim).transpose(1, 2).contiguous()
    return out, None


@functools.cache  # once per process: registering is global in transformers
def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, attention)


@contextlib.contextmanager
def shared_prefix_attention(model, prefix_cache) -> Iterator[list[int]]:
    """Run `model`'s attention through `attention` over `prefix_cache` (a transformers cache of
    one row) inside the block; yields the one-element call counter."""
    _register()
    prefix = _Prefix([(layer.keys, layer.values) for layer in prefix_cache.layers])
    config = model.config
    before = config._attn_implementation
    token = _active.set(prefix)
    config._attn_implementation = NAME
    try:
        yield prefix.calls
    finally:
        config._attn_implementation = before
        _active.reset(token)


class PrefixAttentionUnsupported(RuntimeError):
    """The model's attention layers do not dispatch through transformers' AttentionInterface, so
    the shared prefix cannot be read in place."""


def forward_after_prefix(model, prefix_cache, ids, mask, positions, cache, logits_to_keep=1):
    """Logits of `ids` ([n, q] new tokens of n rows) after the shared prefix and each row's
    cached suffix. `mask` [n, s] is True at the real (not padding) tokens of the rows' suffixes
    so far, these `ids` included; `positions` continue the prefix's; `cache` is `suffix_cache`'s,
    which this forward extends."""
    import torch

    q_len, kv_len = ids.shape[1], mask.shape[1]
    causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=mask.device).tril(kv_len - q_len)
    with shared_prefix_attention(model, prefix_cache) as calls:
        logits = model(input_ids=ids, attention_mask=mask[:, None, None, :] & causal,
                       position_ids=positions, cache=cache, use_cache=True,
                       logits_to_keep=logits_to_keep).logits
    if calls[0] != len(prefix_cache.layers):
        raise PrefixAttentionUnsupported(type(model).__name__)
    return logits


def suffix_cache(prefix_cache, n: int, capacity: int):
    """An empty cache of `n` rows shaped like the prefix's, in buffers of `capacity` tokens."""
    from transformers import DynamicCache

    cache = DynamicCache()
    layer_class = _preallocated_layer_class()
    cache.layers = [layer_class(layer.keys, n, capacity) for layer in prefix_cache.layers]
    return cache


@functools.cache  # built on first use: transformers is imported only when generating
def _preallocated_layer_class():
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A DynamicLayer that writes new keys/values into a preallocated buffer: the stock one
        concatenates the whole cache at every step."""

        def __init__(self, like, n: int, capacity: int):
            super().__init__()
            shape = (n, like.shape[1], capacity, like.shape[3])
            self._k, self._v = like.new_empty(shape), like.new_empty(shape)
            self.length, self.device, self.is_initialized = 0, like.device, True
            self._views()

        def _views(self) -> None:
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[2]
            self._k[:, :, self.length:end] = key_states
            self._v[:, :, self.length:end] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices) -> None:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()

    return PreallocatedLayer
