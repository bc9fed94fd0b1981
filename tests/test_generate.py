"""Shared-prefix generation equals plain batched generation (greedy, tiny random model)."""

from __future__ import annotations

import pytest

from loop.evaluation.evaluate import answers_are_json
from loop.models.decode import finish, generate, json_end, prefix_groups
from loop.core.prompts import build_prompt
from loop.core.records import Example
from tests.conftest import random_adapter

INSTRUCTION = ("Read the guest's message and list every request it makes, one per line, using "
               "the hotel's own words wherever possible and nothing else.")
INPUTS = ["hi", "Can I get a late check out tomorrow please?", "wifi is down", "thanks!",
          "I lost my key card and my phone, can you help me get into room 204 tonight?",
          "hi", "Is there parking?", "book a table for two at 8", "pool hours", "no"]
MAX_NEW = 12


def prompts_for(tok, instruction: str = INSTRUCTION, inputs=INPUTS) -> list[str]:
    return [build_prompt(tok, Example(f"e{i}", instruction, "", text)) for i, text in
            enumerate(inputs)]


def _varied(lm):
    """Tiny-random ties its head to the embeddings and so repeats its last token; an untied
    seeded head makes greedy outputs vary per prompt, which the comparisons need."""
    import torch

    torch.manual_seed(3)
    head = torch.nn.Linear(lm.model.config.hidden_size, lm.model.config.vocab_size, bias=False)
    base = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model
    base.lm_head = head
    return lm


def _with_early_stops(lm, prompts):
    """Declare as end-of-sequence a token that some rows emit mid-answer and others never do,
    so that rows stop early at different steps while others run to max_new_tokens."""
    import torch

    tok = lm.tokenizer
    tok.padding_side = "left"
    batch = tok.pad({"input_ids": [tok(p, add_special_tokens=False)["input_ids"]
                                   for p in prompts]}, return_tensors="pt")
    with torch.inference_mode():
        out = lm.model.generate(**batch, max_new_tokens=MAX_NEW, do_sample=False,
                                pad_token_id=tok.pad_token_id)
    rows = [r[batch["input_ids"].shape[1]:].tolist() for r in out]
    counts = {t: sum(t in r[1:MAX_NEW - 1] for r in rows) for r in rows for t in r}
    stop = max((t for t, c in counts.items() if 0 < c < len(rows) // 2), key=counts.get)
    lm.model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    return lm


@pytest.fixture(scope="module")
def base_lm():
    from loop.models.loading import load_model

    lm = _varied(load_model("tiny-random"))
    return _with_early_stops(lm, prompts_for(lm.tokenizer))


@pytest.fixture(scope="module")
def adapter_lm(tmp_path_factory):
    from loop.models.loading import load_model

    adapter = random_adapter(tmp_path_factory.mktemp("adapter") / "a")
    lm = _varied(load_model(f"tiny-random+{adapter}"))
    return _with_early_stops(lm, prompts_for(lm.tokenizer))


def _same(lm, prompts, batch_size, **kw):
    plain = generate(lm, prompts, MAX_NEW, batch_size, progress=False, prefix_cache=False, **kw)
    cached = generate(lm, prompts, MAX_NEW, batch_size, progress=False, **kw)
    assert [o.text for o in cached] == [o.text for o in plain]
    assert [o.output_tokens for o in cached] == [o.output_tokens for o in plain]
    assert [o.prompt_tokens for o in cached] == [o.prompt_tokens for o in plain]
    assert all(o.latency_s > 0 for o in cached)
    return plain


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("which", ["base_lm", "adapter_lm"])
def test_prefix_cache_equals_plain_generation(request, which, batch_size):
    lm = request.getfixturevalue(which)
    prompts = prompts_for(lm.tokenizer)
    encoded = [lm.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    groups = prefix_groups(encoded)
    assert len(groups) == 1 and groups[0][0] >= 32  # the shared path runs, for every row
    outs = _same(lm, prompts, batch_size)
    lengths = [o.output_tokens for o in outs]
    assert min(lengths) < MAX_NEW and max(lengths) == MAX_NEW  # early stops and full runs
    assert len({o.text for o in outs}) > 3


def test_adapter_changes_outputs(base_lm, adapter_lm):
    prompts = prompts_for(base_lm.tokenizer)
    base = generate(base_lm, prompts, MAX_NEW, 8, progress=False)
    tuned = generate(adapter_lm, prompts, MAX_NEW, 8, progress=False)
    assert [o.text for o in base] != [o.text for o in tuned]  # the prefix cache used the adapter


def test_mixed_prefixes_single_prompt_and_no_shared_prefix(base_lm):
    tok = base_lm.tokenizer
    other = ("Translate the guest's message into formal French, keeping names and numbers "
             "exactly as written, and add nothing of your own to the translation at all.")
    mixed = prompts_for(tok) + prompts_for(tok, other, INPUTS[:4]) + ["Unrelated short prompt"]
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in mixed]
    shared = sorted(len(rows) for n, rows in prefix_groups(encoded) if n)
    assert shared == [4, len(INPUTS)]  # one group per instruction; the odd prompt alone
    _same(base_lm, mixed, 4)
    _same(base_lm, mixed[:1], 4)
    _same(base_lm, ["Say something.", "Different words entirely."], 2)


def test_shared_prefix_generation_equals_plain_generation_with_shots(base_lm):
    """Random shots are the same for every item: the shots join the one shared prefix, and
    nearest shots (different per item) still give the plain outputs."""
    tok = base_lm.tokenizer
    shots = [Example(f"s{i}", INSTRUCTION, f"request {i}", text)
             for i, text in enumerate(["need towels", "late checkout?", "taxi at 6"])]
    shared = [build_prompt(tok, Example(f"e{i}", INSTRUCTION, "", text), None, shots)
              for i, text in enumerate(INPUTS)]
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in shared]
    groups = prefix_groups(encoded)
    before_item = shared[0][:shared[0].rindex(INPUTS[0])]  # system prompt and the shots
    assert "taxi at 6" in before_item
    n_shots = len(tok(before_item, add_special_tokens=False)["input_ids"])
    assert len(groups) == 1 and groups[0][0] >= n_shots  # the shots are in the shared prefix
    _same(base_lm, shared, 4)
    own = [build_prompt(tok, Example(f"e{i}", INSTRUCTION, "", text), None,
                        shots[i % 3:] + shots[:i % 3]) for i, text in enumerate(INPUTS)]
    _same(base_lm, own, 4)


def test_stop_at_json_equals_plain_output_cut(base_lm):
    prompts = prompts_for(base_lm.tokenizer)
    plain = generate(base_lm, prompts, MAX_NEW, 4, progress=False, prefix_cache=False)
    cut = generate(base_lm, prompts, MAX_NEW, 4, progress=False, stop_at_json=True)
    assert [o.text for o in cut] == [o.text[:json_end(o.text)].strip() for o in plain]


def test_finish_cuts_after_the_first_json_value(base_lm):
    tok = base_lm.tokenizer
    ids = tok('["a", "b]"] and more [1]', add_special_tokens=False)["input_ids"]
    text, n = finish(tok, ids, [tok.eos_token_id], [], stop_at_json=True)
    assert text == '["a", "b]"]'
    assert json_end(tok.decode(ids[:n])) is not None and json_end(tok.decode(ids[:n - 1])) is None
    assert finish(tok, ids, [tok.eos_token_id], [], stop_at_json=False) == \
        ('["a", "b]"] and more [1]', len(ids))


def test_json_end():
    assert json_end('{"a": "}"} tail') == len('{"a": "}"}')
    assert json_end('Sure: ["x", ["y"]]!') == len('Sure: ["x", ["y"]]')
    assert json_end('{"a": "\\"}"') is None  # the escaped quote keeps the string open
    assert json_end('no json "]" here') is None
    assert json_end("[]") == 2


def test_prefix_groups_cover_every_row_once_and_leave_a_token_to_run():
    shared = list(range(100, 140))
    encoded = [shared + [1, 2], shared + [1, 2], shared + [3], shared, [5, 6, 7], [5, 6, 8]]
    groups = prefix_groups(encoded)
    assert sorted(i for _, rows in groups for i in rows) == list(range(len(encoded)))
    (n, rows), = [g for g in groups if g[0]]
    assert sorted(rows) == [0, 1, 2, 3] and n == len(shared) - 1  # row 3 keeps its last token
    assert prefix_groups([]) == []


def test_answers_are_json(tmp_path):
    from tests.conftest import write_task

    from loop.data.tasks import load_task

    def task(outputs, name):
        rows = [{"instruction": f"q{i}", "output": o} for i, o in enumerate(outputs)]
        return load_task(write_task(tmp_path / name, {"test": rows}))

    assert answers_are_json(task(['{"a": 1}'] * 9 + ["oops"], "objects"))
    assert answers_are_json(task(['["a"]'] * 9 + ["oops"], "lists"))
    assert not answers_are_json(task(['["a"]'] * 8 + ["oops", "7"], "mixed"))  # under 90% JSON


@pytest.mark.parametrize("heads,kv_heads,q_len", [(4, 4, 1), (6, 2, 1), (6, 2, 5)])
def test_prefix_attention_equals_attention_over_the_concatenated_keys(heads, kv_heads, q_len):
    """One shared prefix + per-row suffixes (left padding masked, causal within the new
    queries) gives what SDPA gives over each row's full keys; grouped-query heads included."""
    import types

    import torch

    from loop.models.prefix_attention import _Prefix, _active, attention

    torch.manual_seed(0)
    n, dim, p_len, s_len = 3, 8, 7, 6
    query = torch.randn(n, heads, q_len, dim)
    prefix_k, prefix_v = torch.randn(1, kv_heads, p_len, dim), torch.randn(1, kv_heads, p_len, dim)
    key, value = torch.randn(n, kv_heads, s_len, dim), torch.randn(n, kv_heads, s_len, dim)
    padding = torch.tensor([[True] * s_len, [False] * 2 + [True] * (s_len - 2),
                            [False] * 4 + [True] * (s_len - 4)])
    causal = torch.ones(q_len, s_len, dtype=torch.bool).tril(s_len - q_len)
    mask = padding[:, None, None, :] & causal

    token = _active.set(_Prefix([(prefix_k, prefix_v)]))
    try:
        out, _ = attention(types.SimpleNamespace(layer_idx=0), query, key, value, mask,
                           scaling=dim ** -0.5)
    finally:
        _active.reset(token)

    full_k = torch.cat([prefix_k.expand(n, -1, -1, -1), key], 2).repeat_interleave(
        heads // kv_heads, 1)
    full_v = torch.cat([prefix_v.expand(n, -1, -1, -1), value], 2).repeat_interleave(
        heads // kv_heads, 1)
    full_mask = torch.cat([torch.ones(n, 1, q_len, p_len, dtype=torch.bool),
                           mask.expand(n, 1, q_len, s_len)], -1)
    expected = torch.nn.functional.scaled_dot_product_attention(query, full_k, full_v,
                                                                attn_mask=full_mask)
    assert out.shape == (n, q_len, heads, dim)
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_a_model_whose_attention_bypasses_the_interface_takes_the_plain_path(base_lm,
                                                                             monkeypatch):
    """If no layer ran through the shared-prefix attention (a model with hand-wired attention),
    the group falls back to plain generation instead of decoding without its prefix."""
    import contextlib

    import loop.models.prefix_attention as prefix_attention

    @contextlib.contextmanager
    def not_dispatched(model, prefix_cache):
        yield [0]  # the model never calls the registered function

    monkeypatch.setattr(prefix_attention, "shared_prefix_attention", not_dispatched)
    _same(base_lm, prompts_for(base_lm.tokenizer), 4)
