"""Failure records and deterministic clusters."""

from __future__ import annotations

import numpy as np

from evals.rules import CheckInput
from evals.answers import infer_answers
from evals.suites import DEFAULT_SUITE, score_suite
from loop.failures.clusters import cluster_failures, collect_failures, summarize
from loop.core.records import Example


def _failures():
    examples = [Example(f"d{i}", "Convert the date to ISO format.", "2020-01-0%d" % (i + 1),
                        input=f"January {i + 1}, 2020", category="date") for i in range(4)]
    examples += [Example(f"s{i}", "Classify the sentiment.", "positive",
                         input=f"Great product number {i}", category="sentiment")
                 for i in range(3)]
    outputs = ["January 1, 2020"] * 4 + ["The sentiment is positive and I am sure"] * 3
    scores = score_suite(DEFAULT_SUITE, [CheckInput(e.instruction, e.input, e.output, o)
                                         for e, o in zip(examples, outputs)])
    return collect_failures(examples, [f"p{e.id}" for e in examples], scores, [0.5] * 7)


def test_failures_carry_categories_and_failed_checks():
    failures = _failures()
    assert len(failures) == 7
    assert all("wrong_answer" in f.categories and "exact_match" in f.failed_checks
               for f in failures)


def test_clusters_split_by_input_and_are_deterministic():
    failures = _failures()
    rng = np.random.default_rng(0)
    base = {"date": rng.normal(size=8), "sentiment": rng.normal(size=8)}
    vectors = np.stack([base[f.example_category] + 0.01 * rng.normal(size=8) for f in failures])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first = cluster_failures(failures, vectors)
    shuffled = list(reversed(failures))
    second = cluster_failures(shuffled, vectors[::-1].copy())
    assert [c.cluster_id for c in first] == [c.cluster_id for c in second]
    assert sorted(c.size for c in first) == [3, 4]
    # named by the signature (free text: the category) and two typical inputs
    assert first[0].label.startswith('wrong_answer · "January ')
    assert first[0].signatures == ("wrong_answer",)
    summary = summarize(failures, first, n_items=10)
    assert summary["clusters"][0]["share"] == 0.4 and len(summary["clusters"][0]["examples"]) == 2
    assert summary["signatures"] == [{"signature": "wrong_answer", "count": 7, "share": 0.7,
                                      "examples": ["d0", "d1"]}]


def test_many_failures_are_clustered_in_bounded_memory_like_the_exact_method(monkeypatch):
    """Above MAX_EXACT, a seeded sample is clustered and the rest join the nearest centroid:
    well separated groups come out the same as with exact clustering."""
    import loop.failures.clusters as failures

    rng = np.random.default_rng(1)
    centres = np.eye(16)[:4] * 5  # unrelated inputs (orthogonal)
    vecs = failures._unit(np.concatenate([c + rng.normal(scale=0.05, size=(60, 16))
                                          for c in centres]))
    # two signatures, each shared by two of the four input groups: 8 groups in all
    keys = failures._key_matrix([["missing_key:a"] if i % 2 else ["invalid_json", "expects:nothing"]
                                 for i in range(len(vecs))])
    exact = failures._cluster_labels(vecs, keys, 0.35)
    monkeypatch.setattr(failures, "MAX_EXACT", 50)
    monkeypatch.setattr(failures, "BLOCK", 64)
    sampled = failures._cluster_labels(vecs, keys, 0.35)
    assert len(set(exact.tolist())) == 8
    # the same partition (label numbers may differ)
    assert len({(a, b) for a, b in zip(exact.tolist(), sampled.tolist())}) == 8
    assert (failures._cluster_labels(vecs, keys, 0.35) == sampled).all()  # seeded


# ------------------------------------------------------------------ a fixed-instruction task

INSTRUCTION = ("Extract rental booking details from the customer's message. Possible slots: "
               "city, day, hour. Copy each value exactly as it appears in the message. Reply "
               "with a JSON object mapping each slot that is present to its text; reply {} if "
               "the message contains none. Do not explain your answer.")
# (input, reference, model output): three planted kinds of failure
PLANTED = {
    "no_slot": [("Message: sounds good", "{}", "Sure! Anything else?"),
                ("Message: yes please", "{}", "Great, booking it now."),
                ("Message: thanks a lot", "{}", "You're welcome!"),
                ("Message: that works for me", "{}", "Perfect.")],
    "missed_hour": [("Message: around 10:30 in the morning", '{"hour": "10:30"}', "{}"),
                    ("Message: at noon", '{"hour": "noon"}', "{}"),
                    ("Message: 5 pm would be best", '{"hour": "5 pm"}', "{}"),
                    ("Message: let's say 9am", '{"hour": "9am"}', "{}")],
    "prose_city": [("Message: I need a car in Paris", '{"city": "Paris"}', "You need a car."),
                   ("Message: pick up in New York", '{"city": "New York"}', "New York it is."),
                   ("Message: from Rome airport", '{"city": "Rome"}', "Rome is lovely."),
                   ("Message: Berlin please", '{"city": "Berlin"}', "Berlin, got it.")],
}


def _fixed_instruction_failures():
    from loop.core.prompts import user_message
    from loop.core.template import Template

    rows = [(kind, *row) for kind, group in PLANTED.items() for row in group]
    examples = [Example(f"{kind}-{i}", INSTRUCTION, ref, input=inp, category="slots")
                for i, (kind, inp, ref, _) in enumerate(rows)]
    outputs = [out for *_, out in rows]
    scores = score_suite(DEFAULT_SUITE, [CheckInput(e.instruction, e.input, e.output, o)
                                         for e, o in zip(examples, outputs)])
    template = Template.fit(user_message(e) for e in examples)
    return examples, collect_failures(examples, [f"p{e.id}" for e in examples], scores,
                                      [0.5] * len(examples), outputs, template)


def test_failures_are_signed_and_embedded_by_what_varies():
    _, failures = _fixed_instruction_failures()
    by_id = {f.example_id: f for f in failures}
    assert len(failures) == 12
    assert by_id["no_slot-0"].signatures == ("invalid_json",)
    assert by_id["no_slot-0"].keys == ("invalid_json", "expects:nothing")
    assert by_id["missed_hour-5"].signatures == ("missing_key:hour",)
    assert by_id["prose_city-8"].keys == ("invalid_json", "expects:something", "expects:city")
    assert all("Possible slots" not in f.text for f in failures)
    assert by_id["missed_hour-5"].text.endswith("at noon")


def test_fixed_instruction_task_splits_into_clusters_by_kind_with_real_embedder(workspace):
    """With the real MiniLM embedder: embedding the whole user message puts every failure in
    one cluster (the instruction dominates); embedding what varies, with the signature and
    what the reference expected, separates the three planted kinds and names them."""
    import loop.failures.clusters as fl
    from evals.similarity import CachedEmbedder, Embedder
    from loop.core.prompts import user_message
    from loop.store.db import Store
    from loop.store.embeddings import EmbeddingCache

    examples, failures = _fixed_instruction_failures()
    with Store(workspace) as store:
        embedder = CachedEmbedder(EmbeddingCache(store), Embedder())
        whole = fl._unit(embedder.encode([user_message(e) for e in examples]))
        vectors = embedder.encode([f.text for f in failures])
    one = fl._cluster_labels(whole, fl._key_matrix([("x",)] * len(whole)), 0.35, weight=0.0)
    assert len(set(one.tolist())) == 1  # the problem this design fixes

    clusters = cluster_failures(failures, vectors)
    assert len(clusters) >= 3
    for c in clusters:  # no cluster mixes planted kinds
        assert len({eid.split("-")[0] for eid in c.example_ids}) == 1, c
    names = {c.example_ids[0].split("-")[0]: c.label for c in clusters}
    assert names["missed_hour"].startswith("missing_key:hour · ")
    assert names["no_slot"].startswith("invalid_json (expects {})")
    assert names["prose_city"].startswith("invalid_json (expects city)")
    assert "Possible slots" not in " ".join(names.values())
    again = cluster_failures(list(reversed(failures)), vectors[::-1].copy())
    assert [c.cluster_id for c in again] == [c.cluster_id for c in clusters]


class _BagEmbedder:
    """A fake embedder: letter counts (deterministic, no model)."""

    def encode(self, texts):
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out + 1e-3


def test_recorded_failures_store_signatures_and_summaries_count_them(workspace):
    """End to end through the store: the label set comes from the task's answer model, outputs
    come from the stored predictions, and the stored summary counts signatures."""
    from loop.failures.stage import failure_summary, format_failures, record_failures
    from loop.store.db import Store

    colours = ["red", "green", "blue"]
    examples = [Example(f"e{i}", "Name the colour. One word.", colours[i % 3],
                        input=f"The {colours[i % 3]} car number {i}", split="dev")
                for i in range(9)]
    outputs = ["green", "purple", "blue", "green", "purple", "blue", "green", "purple", "blue"]
    scores = score_suite(DEFAULT_SUITE, [CheckInput(e.instruction, e.input, e.output, o)
                                         for e, o in zip(examples, outputs)])
    with Store(workspace) as store:
        store.put_task("colours", "task.toml", "h", examples)
        pids = [f"p{i}" for i in range(9)]
        store.insert("predictions", [{"prediction_id": p, "model_id": "m", "prompt_hash": p,
                                      "gen_hash": "g", "prompt": "x", "output": o}
                                     for p, o in zip(pids, outputs)])
        store.insert("run_items", [{"run_id": "r", "example_id": e.id, "prediction_id": p}
                                   for e, p in zip(examples, pids)])
        fresh = record_failures(store, "r", "colours", "m", "dev", examples, pids, scores,
                                [0.5] * 9, _BagEmbedder(),
                                answers=infer_answers([e.output for e in examples]))
        stored = failure_summary(store, "r")
        sigs = {r["example_id"]: r["signatures"] for r in store.query(
            "SELECT example_id, signatures FROM failures WHERE run_id = 'r'")}
    assert sigs == {"e0": ["label:red->green"], "e3": ["label:red->green"],
                    "e6": ["label:red->green"], "e1": ["label:green->unknown"],
                    "e4": ["label:green->unknown"], "e7": ["label:green->unknown"]}
    assert [(s["signature"], s["count"]) for s in stored["signatures"]] == [
        ("label:green->unknown", 3), ("label:red->green", 3)]
    assert stored["signatures"] == fresh["signatures"]
    assert sorted(c["label"].split(" · ")[0] for c in stored["clusters"]) == [
        "label:green->unknown", "label:red->green"]
    assert {tuple(c["signatures"]) for c in stored["clusters"]} == {
        ("label:green->unknown",), ("label:red->green",)}
    text = format_failures(stored)
    assert "label:red->green" in text and "signature" in text
