"""Curation filters on fakes: answer agreement, n-gram overlap with template filtering,
contamination, duplicates, cluster balance, replay budget and answer shapes."""

from __future__ import annotations

import numpy as np
import pytest

from loop.targeted import curate as cur
from loop.targeted import lexical as lex
from loop.targeted.synthesis import answer_shape


def bow(texts, dim=512):
    """A fake embedder: hashed bag of words, L2-normalised (close texts -> high cosine)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for w in lex.words(text):
            out[i, sum(map(ord, w)) * 7919 % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def vectors(items, refs):
    return cur.Vectors(bow([i.question for i in items]), bow([i.answer for i in items]),
                       bow([r.question for r in refs]), bow([r.answer or "" for r in refs]))


def item(key, q, a, group="c1", **kw):
    return cur.Item(key=key, question=q, answer=a, group=group, **kw)


TEMPLATE = ("Extract the person's details as a compact JSON object with exactly the keys name, "
            "age and city. Output only JSON.")


@pytest.mark.parametrize("a, b, cosine, agree", [
    ("Paris", "paris.", 0.0, True),
    ('{"a": 1, "b": "x"}', '{"b":"x","a":1}', 0.0, True),
    ("300", "420", 0.99, False),  # short answers never agree by embedding
    ('{"a": 1}', '{"a": 2}', 0.99, False),
    ("The capital of France is Paris, on the Seine.",
     "Paris is the capital of France and lies on the Seine.", 0.91, True),
    ("The meeting moved to 3 pm on the 4th floor today.",
     "The meeting moved to 5 pm on the 4th floor today.", 0.99, False),  # numbers differ
    ("The capital of France is Paris, on the Seine.",
     "Paris is the capital of France and lies on the Seine.", 0.7, False),
])
def test_answers_agree(a, b, cosine, agree):
    assert cur.answers_agree(a, b, cosine, 0.9) is agree


def test_ngram_overlap_finds_copies_but_not_shared_templates():
    refs = [f"{TEMPLATE}\n{name} ({age}) works as a nurse in {city}."
            for name, age, city in [("Maria Lopez", 34, "Porto"), ("John Smith", 51, "Leeds"),
                                    ("Aiko Tanaka", 29, "Osaka")]]
    pool = [f"{TEMPLATE}\nPerson {i} ({20 + i}) works as a baker in Town{i}." for i in range(10)]
    index = lex.build_ngram_index(refs, ["t0", "t1", "t2"], n=13, template_df=5, background=pool)
    share, doc = lex.ngram_overlap(index, refs[1])
    assert (share, index.labels[doc]) == (1.0, "t1")
    assert lex.ngram_overlap(index, pool[3])[0] < 0.5  # same instruction, other person
    # without the pool as background, the shared instruction would look like item content
    naive = lex.build_ngram_index(refs, ["t0", "t1", "t2"], n=13, template_df=50)
    assert lex.ngram_overlap(naive, pool[3])[0] > lex.ngram_overlap(index, pool[3])[0]
    assert lex.ngram_overlap(index, refs[1], skip="t1")[0] < 0.5


def test_short_texts_are_one_gram():
    index = lex.build_ngram_index(["What is the capital of Peru?"], ["t"], n=13)
    assert lex.ngram_overlap(index, "what is the capital of peru")[0] == 1.0
    assert lex.ngram_overlap(index, "What is the capital of Chile?")[0] == 0.0


def test_contamination_rules_and_exemption():
    refs = [cur.Reference("test:a", "Convert 12 hours to minutes.", "720"),
            cur.Reference("dev:b", "Name the colour: the car was red.", "red"),
            cur.Reference("benchmark:arc/test.jsonl:1",
                          "Which gas do plants take in from the air for photosynthesis?")]
    items = [
        item("exact", "convert 12 hours to MINUTES", "720"),
        item("para", "Convert 12 hours to minutes, please.", "720"),
        item("other-answer", "Convert 12 hours to minutes, please.", "600"),
        item("bench", "Which gas do plants take in from the air for photosynthesis", "CO2"),
        item("clean", "Translate 'dog' into French.", "chien"),
        item("own", "Name the colour: the car was red.", "crimson", own_ref="dev:b"),
    ]
    index = lex.build_ngram_index([f"{r.question}\n{r.answer or ''}" for r in refs],
                                  [r.label for r in refs], n=13)
    leaks = cur.contamination(items, refs, vectors(items, refs), [index], cur.CurateConfig())
    got = dict(zip([i.key for i in items], leaks))
    assert "test:a" in got["exact"] and "same question" in got["exact"]
    assert "test:a" in got["para"] and "same answer" in got["para"]
    assert got["other-answer"] is None  # close question, different answer: a new item
    assert "benchmark:arc" in got["bench"]
    assert got["clean"] is None
    assert got["own"] is None  # a reviewer's correction of dev item b may contain b


def test_duplicates_keep_the_first_in_precedence():
    long_q = "Please convert exactly 5 whole hours to minutes for me"
    items = [item("a", "Convert 5 hours to minutes.", "300"),
             item("b", "convert 5 hours to MINUTES", "300"),  # exact after normalisation
             item("c", "Convert 5 hours into minutes now.", "300"),
             item("d", "Convert 5 hours into minutes now.", "301", priority=1),
             item("e", long_q, "300"),
             item("f", long_q + " now", "300"),  # near duplicate of e, same answer
             item("g", long_q + " today", "301")]  # near question, other answer: kept
    vecs = vectors(items, [])
    order = cur.precedence(items)
    assert order[0] == 3  # priority first
    dups = cur.duplicates(items, order, vecs.item_q, vecs.item_a, cur.CurateConfig())
    assert dups.keys() == {1, 2, 5}
    assert dups[1] == "same question as a" and dups[2] == "same question as d"
    assert dups[5].startswith("near duplicate") and dups[5].endswith("of e")


def test_balance_is_round_robin_and_reuses_unused_shares():
    items = [item(f"x{i}", f"q{i}", "a", group=g)
             for i, g in enumerate(["big"] * 6 + ["small"] + ["mid"] * 3)]
    def counts(n):
        groups = [items[i].group for i in cur.balance(items, list(range(len(items))), n,
                                                       ["big", "small", "mid"])]
        return {g: groups.count(g) for g in ("big", "small", "mid")}

    assert counts(6) == {"big": 3, "small": 1, "mid": 2}
    assert counts(8) == {"big": 4, "small": 1, "mid": 3}  # small's unused share goes on
    assert len(cur.balance(items, list(range(len(items))), 100)) == len(items)


def test_curate_gives_every_item_one_reason():
    refs = [cur.Reference("test:t", "What is the boiling point of water in Celsius?", "100")]
    items = [item("fail", "Say hi.", "", reason="failed_suite", detail="empty output"),
             item("leak", "What is the boiling point of water in Celsius?", "100"),
             item("k1", "Spell 'cat' backwards.", "tac", group="g1"),
             item("dup", "spell CAT backwards", "tac", group="g1", rank=1),
             item("k2", "Spell 'dog' backwards.", "god", group="g2"),
             item("k3", "Spell 'owl' backwards.", "lwo", group="g2", rank=1),
             item("r1", "Spell 'cat' backwards.", "tac", group="replay", replay=True),
             item("r2", "Add 2 and 2.", "4", group="replay", replay=True),
             item("r3", "Add 3 and 3.", "6", group="replay", replay=True, rank=1)]
    index = lex.build_ngram_index([f"{r.question}\n{r.answer}" for r in refs], ["test:t"])
    decisions = cur.curate(items, vectors(items, refs), refs, [index], n=2, n_replay=1,
                           group_order=["g1", "g2"])
    got = {d.key: (d.accepted, d.reason) for d in decisions}
    assert [d.key for d in decisions] == [i.key for i in items]
    assert got == {"fail": (False, "failed_suite"), "leak": (False, "contaminated"),
                   "k1": (True, None), "dup": (False, "duplicate"), "k2": (True, None),
                   "k3": (False, "over_budget"),
                   "r1": (False, "duplicate"),  # a replayed row never displaces a targeted one
                   "r2": (True, None), "r3": (False, "over_budget")}
    assert all(d.detail for d in decisions if not d.accepted)


@pytest.mark.parametrize("output, refs, bad", [
    ("", ["a"], "empty"),
    ('{"name": "A"}', ['{"name": "B"}'] * 10, None),
    ("name: A", ['{"name": "B"}'] * 10, "JSON"),
    ('Sure: {"name": "A"}', ['{"name": "B"}'] * 10, "JSON alone"),  # training answers are clean
    ('["greet"]', ['["booking"]', '["greet"]'] * 5, None),
    ('["hello"]', ['["booking"]', '["greet"]'] * 5, "labels"),
    ("7", ["1", "2", "3"] * 4, None),
    ("seven", ["1", "2", "3"] * 4, "number"),
    ("positive", ["positive", "negative"] * 10, None),
    ("Positive.", ["positive", "negative"] * 10, None),
    ("maybe", ["positive", "negative"] * 10, "labels"),
    ("2001-02-03", [f"19{i:02d}-01-01" for i in range(20)], None),  # open answers: no label set
    ("word " * 80, ["short answer"] * 3, "longer"),
])
def test_answer_shape(output, refs, bad):
    from evals.answers import infer_answers

    why = answer_shape(output, infer_answers(refs), refs)
    assert (why is None) if bad is None else (bad in why)


def test_lexical_shortlist_keeps_only_references_sharing_rare_words():
    refs = ["Which gas do plants absorb from the air for photosynthesis?",
            "What is the boiling point of water at sea level?",
            "Which planet is known as the red planet?"] + [f"filler question {i}" for i in range(300)]
    items = ["Plants absorb which gas from air during photosynthesis?", "Spell cat backwards."]
    assert lex.lexical_shortlist(items, refs) == [0]
    assert lex.lexical_shortlist([], refs) == []


# ---------------------------------------------------------------------------- fixed instructions

SLOT_INSTRUCTION = ("Extract booking details from the user's message. Possible slots: city, "
                    "date, time. Copy each value exactly as it appears in the message. Reply "
                    "with a JSON object mapping each slot that is present to its text; reply {} "
                    "if the message contains none.")


def slot_q(message: str, requested: str = "none") -> str:
    return f"{SLOT_INSTRUCTION}\n\nRequested slot: {requested}\nMessage: {message}"


def varying_items(pool, tests):
    """(items, refs) over the varying parts, the template fitted on every question."""
    from loop.core.template import Template

    template = Template.fit([q for q, _ in pool + tests])
    items = [item(f"p{i}", template.varying(q), a) for i, (q, a) in enumerate(pool)]
    refs = [cur.Reference(f"test:{i}", template.varying(q), a) for i, (q, a) in enumerate(tests)]
    return items, refs


FILLER = ["sounds good", "ok thanks", "that works for me", "perfect", "great thank you",
          "no that is all", "can you help me", "I need a car", "hello there", "yes please"]


def test_shared_template_alone_never_contaminates_but_a_paraphrase_does():
    tests = [(slot_q("I need the car in Boston on Friday", "city"), '{"city": "Boston"}'),
             (slot_q("yes"), "{}"), (slot_q("13", "time"), '{"time": "13"}')]
    tests += [(slot_q(f"{w} number {k}"), "{}") for k, w in enumerate(FILLER)]
    pool = [(slot_q("I need a car in Boston on Friday please", "city"), '{"city": "Boston"}'),
            (slot_q("yes"), "{}"),  # the same short input, same common answer: the same item
            (slot_q("yes please, go ahead"), "{}"),  # another short input: not a copy
            (slot_q("14", "time"), '{"time": "14"}'),
            (slot_q("13", "date"), '{"date": "13"}')]  # same words, other requested slot
    pool += [(slot_q(f"{w} {k} times over"), "{}") for k, w in enumerate(FILLER)]
    items, refs = varying_items(pool, tests)
    index = lex.build_ngram_index([f"{r.question}\n{r.answer}" for r in refs],
                                  [r.label for r in refs],
                                  background=[f"{i.question}\n{i.answer}" for i in items])
    leaks = cur.contamination(items, refs, vectors(items, refs), [index], cur.CurateConfig(),
                              [a for _, a in pool])
    assert "test:0" in leaks[0]  # planted paraphrase of a test input, same answer
    assert "test:1" in leaks[1]
    assert leaks[2:] == [None] * (len(pool) - 2)
    # the whole question, instruction included, would make the shared-instruction rows leak
    full = [item(f"p{i}", q, a) for i, (q, a) in enumerate(pool)]
    full_refs = [cur.Reference(f"test:{i}", q, a) for i, (q, a) in enumerate(tests)]
    naive = cur.contamination(full, full_refs, vectors(full, full_refs), [], cur.CurateConfig(),
                              [a for _, a in pool])
    assert sum(x is not None for x in naive[5:]) > sum(x is not None for x in leaks[5:])


def test_fixed_instruction_pool_keeps_its_empty_answers():
    rng = np.random.default_rng(0)
    cities = ["Boston", "Denver", "Austin", "Seattle", "Miami", "Dallas", "Tampa", "Reno"]
    def row(k):
        if k % 5 < 2:  # 40% of rows answer {}
            return slot_q(f"{FILLER[k % 10]} and {rng.integers(1000)} more words {k}"), "{}"
        city = cities[k % 8]
        return slot_q(f"pick it up in {city} around noon, case {k}", "city"), \
            f'{{"city": "{city}"}}'
    pool, tests = [row(k) for k in range(200)], [row(k) for k in range(1000, 1060)]
    items, refs = varying_items(pool, tests)
    vecs = vectors(items, refs)
    index = lex.build_ngram_index([f"{r.question}\n{r.answer}" for r in refs],
                                  [r.label for r in refs],
                                  background=[f"{i.question}\n{i.answer}" for i in items])
    decisions = cur.curate(items, vecs, refs, [index], n=200,
                           background_answers=[a for _, a in pool])
    empty = [d for d, (_, a) in zip(decisions, pool) if a == "{}"]
    assert sum(d.accepted for d in empty) == len(empty) == 80
    assert sum(d.accepted for d in decisions) >= 0.95 * len(pool)


@pytest.mark.parametrize("a, b, same", [
    ("Message: yes", "message: YES", True),
    ("Message: yes", "Message: yes please", False),
    ("Message: 13", "Message: 14", False),  # numbers differ
    ("Requested slot: none Message: sounds good, thanks a lot",
     "Requested slot: none Message: sounds good, thanks a lot!", True),
])
def test_near_verbatim(a, b, same):
    assert cur.near_verbatim(a, b, 0.9) is same


def test_allocate_and_weighted_balance_follow_cluster_size():
    assert cur.allocate(100, {"big": 60, "small": 3}) == {"big": 95, "small": 5}
    assert cur.allocate(2, {"a": 1, "b": 1, "c": 5}) == {"a": 0, "b": 0, "c": 2}
    assert sum(cur.allocate(37, {"a": 1.5, "b": 2.5, "c": 3}).values()) == 37
    items = [item(f"x{i}", f"q{i}", "a", group=g)
             for i, g in enumerate(["big"] * 40 + ["small"] * 40)]
    picked = [items[i].group for i in cur.balance(items, list(range(80)), 21, ["big", "small"],
                                                  {"big": 60, "small": 3})]
    assert picked.count("big") == 20 and picked.count("small") == 1
    # a group that runs out leaves its share to the others
    few = items[:40] + items[40:42]
    picked = [few[i].group for i in cur.balance(few, list(range(42)), 30, (),
                                                {"big": 1, "small": 10})]
    assert picked.count("small") == 2 and picked.count("big") == 28
