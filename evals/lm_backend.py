"""A fast lm-eval model backend ("evalloop"): lm-eval's tasks and metrics, less wasted compute.

lm-eval's Hugging Face backend scores every (context, continuation) pair as its own sequence and
computes full-vocabulary logits at every position. This backend keeps its tokenisation, request
order, truncation and `is_greedy` semantics (it subclasses `HFLM` and replaces only
`_loglikelihood_tokens`) and changes how the model is run:

  * requests sharing a context are packed into one row: the context once, then each continuation
    as its own segment that attends to the context and to itself (a block attention mask with
    restarted position ids), so a 4-choice question encodes its question once, not four times;
  * the vocabulary projection runs only at the positions whose next token is scored;
  * rows are batched by a token budget, longest first;
  * bf16 is used where the hardware runs it faster: on CUDA when supported, on CPU when a one-off
    timing of this model says so (`loop.models.precision`, the same rule as training).

Use: `EvalloopLM(load_model("tiny-random"), dtype="float32")`, or from lm-eval's own CLI:
`lm_eval --model evalloop --model_args pretrained=smollm2-135m-instruct --tasks arc_easy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from loop.models.loading import DEFAULT_MODEL, LoadedModel, load_model
from loop.models.precision import prefer_bf16

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
HEAD_CHUNK = 1024  # scored positions per vocabulary projection (bounds the [P, vocab] buffer)


# ---------------------------------------------------------------------------- packing (pure)

@dataclass(frozen=True)
class Continuation:
    """One distinct continuation of a packed context and the requests it answers."""

    requests: tuple[int, ...]  # indices into the request list (identical pairs share one entry)
    predictors: tuple[int, ...]  # row positions whose logits predict `targets`
    targets: tuple[int, ...]


@dataclass(frozen=True)
class PackedRow:
    """A context followed by continuation segments; segment 0 is the shared context."""

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    segments: tuple[int, ...]
    continuations: tuple[Continuation, ...]

    @property
    def needs_block_mask(self) -> bool:
        return max(self.segments) >= 2  # two continuation segments must not see each other


def truncate(context: list[int], continuation: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """lm-eval's HF rule: keep the last max_length + 1 tokens of context + continuation."""
    if len(continuation) > max_length:
        raise ValueError(f"continuation of {len(continuation)} tokens exceeds max_length {max_length}")
    whole = (context + continuation)[-(max_length + 1):]
    return whole[: len(whole) - len(continuation)], continuation


def pack(pairs: Sequence[tuple[list[int], list[int]]], max_length: int,
         row_budget: int) -> list[PackedRow]:
    """Group (context, continuation) token pairs by context into packed rows.

    A row holds its context once and as many continuations as fit in `row_budget` tokens
    (a context with more continuations gets several rows).
    """
    groups: dict[tuple[int, ...], dict[tuple[int, ...], list[int]]] = {}
    for index, (context, continuation) in enumerate(pairs):
        context, continuation = truncate(list(context), list(continuation), max_length)
        groups.setdefault(tuple(context), {}).setdefault(tuple(continuation), []).append(index)
    rows = []
    for context, continuations in groups.items():
        chunk: list[tuple[tuple[int, ...], list[int]]] = []
        length = len(context)
        for continuation, requests in continuations.items():
            extra = len(continuation) - 1
            if chunk and length + extra > max(row_budget, len(context) + extra):
                rows.append(_pack_row(context, chunk))
                chunk, length = [], len(context)
            chunk.append((continuation, requests))
            length += extra
        rows.append(_pack_row(context, chunk))
    return rows


def _pack_row(context: tuple[int, ...], continuations) -> PackedRow:
    tokens, positions = list(context), list(range(len(context)))
    segments = [0] * len(context)
    packed = []
    for segment, (continuation, requests) in enumerate(continuations, start=1):
        # The context's last position predicts every continuation's first token; the
        # continuation's own tokens (all but the last) predict the rest.
        start = len(tokens)
        body = continuation[:-1]
        tokens += body
        positions += range(len(context), len(context) + len(body))
        segments += [segment] * len(body)
        # An empty continuation (the tokenizer merged it into the context) scores nothing:
        # lm-eval answers (0.0, True) for it, and so does an empty sum and all().
        predictors = (len(context) - 1, *range(start, start + len(body))) if continuation else ()
        packed.append(Continuation(tuple(requests), predictors, tuple(continuation)))
    return PackedRow(tuple(tokens), tuple(positions), tuple(segments), tuple(packed))


def token_batches(rows: Sequence[PackedRow], budget: int) -> list[list[int]]:
    """Row indices in batches of at most `budget` padded tokens, longest rows first."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i].tokens), rows[i].tokens))
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * len(rows[batches[-1][0]].tokens) <= budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


# ---------------------------------------------------------------------------- dtype choice

def choose_dtype(model, device) -> torch.dtype:
    """bf16 where it is faster for this model on this hardware, else fp32 (the one rule in
    `loop.models.precision`, shared with training; measured once per machine and model shape)."""
    return torch.bfloat16 if prefer_bf16(device, model.config, lambda: model) else torch.float32


# ---------------------------------------------------------------------------- the lm-eval model

@register_model("evalloop")
class EvalloopLM(HFLM):
    """lm-eval `LM` over an evalloop model (+ adapter) with packed, position-selective scoring."""

    def __init__(self, pretrained: LoadedModel | str = DEFAULT_MODEL, dtype: str = "auto",
                 token_budget: int = 4096, batch_size: int | str = 16,
                 max_length: int | None = None, max_batch_size: int | None = None,
                 device: str | None = None) -> None:
        loaded = pretrained if isinstance(pretrained, LoadedModel) else load_model(
            pretrained, device=device)
        if dtype == "auto":
            chosen = choose_dtype(loaded.model, loaded.device)
        elif dtype in DTYPES:
            chosen = DTYPES[dtype]
        else:
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {dtype!r}")
        loaded.model.to(chosen)  # in place: the caller hands this model to the backend
        super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer,
                         max_length=int(max_length) if max_length else None,
                         batch_size=int(batch_size) if str(batch_size).isdigit() else 16)
        self.loaded = loaded
        self.token_budget = int(token_budget)
        self.dtype_name = {v: k for k, v in DTYPES.items()}[chosen]
        inner = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") \
            else loaded.model
        self._body, self._head = inner.get_decoder(), inner.get_output_embeddings()
        self._head_only = self._head_matches_forward()

    def get_model_info(self) -> dict:
        # The stock method asks the hub for a sha; our fingerprint is the identity.
        return {"model_id": self.loaded.model_id, "model_dtype": self.dtype_name,
                "model_num_parameters": sum(p.numel() for p in self._model.parameters())}

    def _head_matches_forward(self) -> bool:
        """True when logits == head(decoder(x)): no softcapping or scaling we would skip."""
        ids = torch.tensor([[self.prefix_token_id, 42, 7, 1000]], device=self.device)
        with torch.inference_mode():
            full = self._model(input_ids=ids).logits[0, -1].float()
            ours = self._head(self._body(input_ids=ids).last_hidden_state[0, -1]).float()
        return torch.allclose(full, ours, atol=1e-3, rtol=1e-3)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """(logprob, is_greedy) per (strings, context tokens, continuation tokens), in order."""
        rows = pack([(ctx, cont) for _, ctx, cont in requests], self.max_length,
                    self.token_budget)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm or len(requests) < 2,
                        desc="Scoring (evalloop backend)")
        for batch in token_batches(rows, self.token_budget):
            chosen = [rows[i] for i in batch]
            for continuation, answer in zip(
                    (c for row in chosen for c in row.continuations), self._score(chosen)):
                for index in continuation.requests:
                    results[index] = answer
                progress.update(len(continuation.requests))
        progress.close()
        for (strings, _, _), answer in zip(requests, results):
            if strings is not None:
                self.cache_hook.add_partial("loglikelihood", strings, answer)
        return results

    def _score(self, rows: Sequence[PackedRow]) -> list[tuple[float, bool]]:
        """One forward pass over padded rows; log-probs only at the scored positions."""
        width = len(rows[0].tokens)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segments = torch.full((len(rows), width), -1, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row.tokens)] = torch.tensor(row.tokens)
            positions[r, : len(row.tokens)] = torch.tensor(row.positions)
            segments[r, : len(row.tokens)] = torch.tensor(row.segments)
        mask = self._block_mask(segments) if any(r.needs_block_mask for r in rows) else None
        flat, targets = [], []
        for r, row in enumerate(rows):
            for c in row.continuations:
                flat += [r * width + p for p in c.predictors]
                targets += c.targets
        logprobs, greedy = self._scored_logprobs(ids, positions, mask, flat, targets)
        answers, start = [], 0
        for row in rows:
            for c in row.continuations:
                end = start + len(c.targets)
                answers.append((float(logprobs[start:end].sum()), bool(greedy[start:end].all())))
                start = end
        return answers

    def _block_mask(self, segments: torch.Tensor) -> torch.Tensor:
        """[B, 1, L, L]: causal, and a key is visible if it is context or in the query's segment."""
        width = segments.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        keys, queries = segments[:, None, :], segments[:, :, None]
        allowed = (causal & ((keys == 0) | (keys == queries)))[:, None]
        if self._model.config._attn_implementation == "sdpa":
            return allowed.to(self.device)
        # eager and other kernels add the mask to the scores
        dtype = next(self._model.parameters()).dtype
        return ((~allowed).to(dtype) * torch.finfo(dtype).min).to(self.device)

    def _scored_logprobs(self, ids, positions, mask, flat, targets):
        """Per scored token: log p(target) (fp32 softmax) and whether it is the argmax."""
        device = self.device
        flat_t = torch.tensor(flat, device=device)
        targets_t = torch.tensor(targets, device=device)
        with torch.inference_mode():
            kwargs = {"input_ids": ids.to(device), "position_ids": positions.to(device),
                      "attention_mask": mask, "use_cache": False}
            if self._head_only:
                hidden = self._body(**kwargs).last_hidden_state
                hidden = hidden.reshape(-1, hidden.shape[-1])
            else:
                hidden = self._model(**kwargs).logits
                hidden = hidden.reshape(-1, hidden.shape[-1])
            # A context's last position predicts every continuation's first token: project once.
            unique, inverse = torch.unique(flat_t, return_inverse=True)
            logprobs = torch.empty(len(targets), dtype=torch.float32, device=device)
            greedy = torch.empty(len(targets), dtype=torch.bool, device=device)
            for start in range(0, len(unique), HEAD_CHUNK):
                chunk = hidden[unique[start:start + HEAD_CHUNK]]
                table = torch.log_softmax((self._head(chunk) if self._head_only else chunk).float(),
                                          dim=-1)
                here = (inverse >= start) & (inverse < start + HEAD_CHUNK)
                local, wanted = inverse[here] - start, targets_t[here]
                logprobs[here] = table[local, wanted]
                greedy[here] = table.argmax(dim=-1)[local] == wanted
        return logprobs.cpu(), greedy.cpu()
