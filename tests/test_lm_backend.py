"""The evalloop lm-eval backend: packing logic, and per-request agreement with lm-eval's HFLM."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from evals.lm_backend import EvalloopLM, pack, token_batches, truncate
from loop.models.loading import base_path, load_model

MAX_LENGTH = 64  # small, so that one context below is truncated the way lm-eval truncates


# ---------------------------------------------------------------------------- pure packing

def test_truncate_keeps_the_last_max_length_plus_one_tokens():
    context, continuation = truncate(list(range(10)), [100, 101], max_length=5)
    assert context + continuation == [6, 7, 8, 9, 100, 101]
    assert continuation == [100, 101]
    assert truncate([1, 2], [3], max_length=5) == ([1, 2], [3])
    with pytest.raises(ValueError, match="exceeds max_length"):
        truncate([1], list(range(7)), max_length=5)


def test_pack_encodes_a_shared_context_once_and_merges_identical_requests():
    question = [1, 2, 3, 4]
    pairs = [(question, [10, 11]), (question, [12]), ([9, 9], [5]), (question, [10, 11])]
    rows = pack(pairs, max_length=100, row_budget=100)
    assert len(rows) == 2
    shared = next(r for r in rows if r.tokens[:4] == tuple(question))
    # context once, then the body of each continuation (its last token is only a target)
    assert shared.tokens == (1, 2, 3, 4, 10)
    assert shared.positions == (0, 1, 2, 3, 4)
    assert [c.requests for c in shared.continuations] == [(0, 3), (1,)]
    first, second = shared.continuations
    assert first.predictors == (3, 4) and first.targets == (10, 11)
    assert second.predictors == (3,) and second.targets == (12,)
    assert not shared.needs_block_mask  # one multi-token continuation: causal is enough


def test_pack_restarts_positions_per_continuation_and_splits_rows_on_the_budget():
    context = [1, 2, 3]
    pairs = [(context, [10, 11, 12]), (context, [20, 21, 22]), (context, [30, 31, 32])]
    (row,) = pack(pairs, max_length=100, row_budget=100)
    assert row.tokens == (1, 2, 3, 10, 11, 20, 21, 30, 31)
    assert row.positions == (0, 1, 2, 3, 4, 3, 4, 3, 4)
    assert row.segments == (0, 0, 0, 1, 1, 2, 2, 3, 3)
    assert row.needs_block_mask
    assert [c.predictors for c in row.continuations] == [(2, 3, 4), (2, 5, 6), (2, 7, 8)]
    split = pack(pairs, max_length=100, row_budget=6)
    assert [len(r.continuations) for r in split] == [1, 1, 1]
    assert all(r.tokens[:3] == (1, 2, 3) for r in split)
    covered = sorted(i for r in split for c in r.continuations for i in c.requests)
    assert covered == [0, 1, 2]


def test_token_batches_are_longest_first_and_within_the_budget():
    rows = pack([([i] * n, [7]) for i, n in enumerate([3, 9, 5, 9, 1])], 100, 100)
    batches = token_batches(rows, budget=20)
    lengths = [[len(rows[i].tokens) for i in b] for b in batches]
    assert lengths[0][0] == 9
    flat = [n for b in lengths for n in b]
    assert flat == sorted(flat, reverse=True)
    assert all(len(b) * b[0] <= 20 or len(b) == 1 for b in lengths)
    assert sorted(i for b in batches for i in b) == list(range(5))


# ---------------------------------------------------------------------------- agreement

QUESTION = "Question: Which colour is the sky on a clear day?\nAnswer:"
LONG = "The river carried the boat past the mill and the old stone bridge. " * 12


def _requests(greedy: list[tuple[str, str]]) -> list[Instance]:
    pairs = [(QUESTION, c) for c in (" blue", " green", " a deep shade of red", " yellow")]
    pairs += [(QUESTION, " light blue, almost white")]  # two multi-token choices: block mask
    pairs += [(QUESTION, " blue")]  # an identical pair: one score, two answers
    pairs += [(QUESTION, ":::")]  # merges into "Answer:" when tokenized: an empty continuation
    pairs += [("Paris is the capital of", " France"), ("", "Hello there, world"),
              (LONG, " and then it stopped."), (LONG, " The end.")]  # LONG exceeds MAX_LENGTH
    pairs += greedy
    return [Instance("loglikelihood", {}, pair, idx) for idx, pair in enumerate(pairs)]


@pytest.fixture(scope="module")
def hf_fp32() -> HFLM:
    return HFLM(pretrained=base_path("tiny-random"), dtype="float32", batch_size=4,
                max_length=MAX_LENGTH, device="cpu")


@pytest.fixture(scope="module")
def requests(hf_fp32) -> list[Instance]:
    # Continuations the model itself would pick, so that is_greedy is True for some requests.
    greedy = []
    for context in ("Once upon a time", "Question: 2 + 2 =", QUESTION):
        ids = hf_fp32.tok_encode(context)
        out = hf_fp32.model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False)
        greedy.append((context, hf_fp32.tok_decode(out[0, len(ids):].tolist())))
    return _requests(greedy)


def test_loglikelihoods_match_lm_eval_in_fp32(hf_fp32, requests):
    ours = EvalloopLM(load_model("tiny-random"), dtype="float32", max_length=MAX_LENGTH,
                      token_budget=256).loglikelihood(requests)
    theirs = hf_fp32.loglikelihood(requests)
    assert len(ours) == len(theirs) == len(requests)
    assert max(abs(a[0] - b[0]) for a, b in zip(ours, theirs)) <= 1e-3
    assert [a[1] for a in ours] == [b[1] for b in theirs]
    assert any(a[1] for a in ours), "no greedy request: the is_greedy check would be vacuous"
    assert ours[0] == ours[5]  # the identical pair
    assert len({round(a[0], 4) for a in ours[:4]}) == 4  # four different choices


def test_bf16_loglikelihoods_are_within_2e_2_of_lm_eval(hf_fp32, requests):
    """bf16 against lm-eval's fp32 answers: the bar is 2e-2 per request.

    lm-eval's own bf16 mode misses that bar (it takes log_softmax of bf16 logits, an error of
    about 0.03 per token at log p = -10); we upcast before log_softmax, so our bf16 error is
    the model's bf16 rounding alone, and no larger than lm-eval's bf16 error.
    """
    reference = hf_fp32.loglikelihood(requests)
    hf_bf16 = HFLM(pretrained=base_path("tiny-random"), dtype="bfloat16", batch_size=4,
                   max_length=MAX_LENGTH, device="cpu").loglikelihood(requests)
    lm = EvalloopLM(load_model("tiny-random"), dtype="bfloat16", max_length=MAX_LENGTH,
                    token_budget=256)
    assert lm.dtype_name == "bfloat16"
    ours = lm.loglikelihood(requests)
    our_error = max(abs(a[0] - b[0]) for a, b in zip(ours, reference))
    their_error = max(abs(a[0] - b[0]) for a, b in zip(hf_bf16, reference))
    assert our_error <= 2e-2
    assert our_error <= their_error
    agree = sum(a[1] == b[1] for a, b in zip(ours, reference))
    assert agree >= len(requests) - 1  # a near-tie may flip under bf16 rounding


def test_the_request_order_is_kept_whatever_the_batching(hf_fp32, requests):
    lm = EvalloopLM(load_model("tiny-random"), dtype="float32", max_length=MAX_LENGTH,
                    token_budget=32)  # one row per batch
    forward = lm.loglikelihood(requests)
    backward = lm.loglikelihood(requests[::-1])[::-1]
    assert max(abs(a[0] - b[0]) for a, b in zip(forward, backward)) <= 1e-4


def test_an_empty_continuation_scores_like_lm_eval():
    (row,) = pack([([1, 2, 3], []), ([1, 2, 3], [4])], max_length=100, row_budget=100)
    empty, other = row.continuations
    assert empty.predictors == () and empty.targets == ()
    assert other.predictors == (2,)


def test_the_backend_dtype_is_the_training_decision(tmp_path, monkeypatch):
    """One bf16 rule: the backend reads the probe training wrote (loop.models.precision)."""
    from loop.models import precision
    from loop.train.config import use_bf16

    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path))
    trains_bf16 = use_bf16("auto", torch.device("cpu"), "tiny-random")
    monkeypatch.setattr(precision, "time_forward", lambda model: 1 / 0)  # no second probe
    lm = EvalloopLM(load_model("tiny-random", device="cpu"), dtype="auto", max_length=MAX_LENGTH)
    assert lm.dtype_name == ("bfloat16" if trains_bf16 else "float32")
