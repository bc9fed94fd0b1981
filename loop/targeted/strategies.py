"""Targeted-data strategies: each turns failure clusters into candidate training examples.

    candidates = STRATEGIES["retrieval"](ctx, [Request(cluster, want=20, offset=0, round=0)])

A strategy is `(StrategyContext, Sequence[Request]) -> list[Candidate]`; a request asks for
`want` more candidates for one cluster, continuing its stream from `offset` (so a second round
gets new ones). Strategies propose; `loop.targeted.curate` decides. Registered strategies:

  retrieval    pool rows near the cluster's failing inputs (template text removed) that have
               what the failures lack (read from their signatures: the missing key, the label
               the model confused, the reference's shape), plus a few of the confused label.
               A cluster whose failures are all format-only (no JSON, a label outside the set)
               says nothing about content: it gets a seeded random draw of the pool instead
               ("coverage" rows; docs/targeting.md measured retrieval no better than random
               draws there, and worse on one task)
  generator    a task generator function (`[targeted] generator = "demo"` or "module:function")
  teacher      a stronger model writes new pairs from the failing items (loop.targeted.teacher)
  corrections  reviewer-corrected outputs, with priority

One module per family: retrieval (with coverage and the replay of passed skills) in
loop/targeted/retrieval.py, generator and teacher (and the checks of what they write) in
loop/targeted/synthesis.py, corrections here; the records they share in
loop/targeted/candidates.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loop.targeted.candidates import Candidate, Request, StrategyContext, as_train
from loop.targeted.retrieval import retrieval
from loop.targeted.synthesis import generator, teacher

CORRECTIONS_GROUP = "corrections"  # the cluster of a correction whose item is not a failure here


def corrections(ctx: StrategyContext, requests: Sequence[Request]) -> list[Candidate]:
    """Every reviewer correction (latest per item), with priority, whether or not its cluster
    asked for more (repeats in later rounds have the same ids and are merged). A correction of a
    dev item may contain that item; one of a test item is left to decontamination to reject."""
    return [Candidate(
        as_train(c.example, c.corrected_output), "corrections",
        ctx.cluster_of.get(c.example.id, CORRECTIONS_GROUP), (c.example.id,),
        {"correction_id": c.correction_id, "reviewer": c.reviewer,
         "prediction_id": c.prediction_id, "split": c.example.split}, priority=1,
        own_ref=f"dev:{c.example.id}" if c.example.split == "dev" else "")
        for c in ctx.corrections]


# its names are the settings' StrategyName (loop.core.settings; tests/test_settings.py checks)
STRATEGIES: dict[str, Callable[[StrategyContext, Sequence[Request]], list[Candidate]]] = {
    "corrections": corrections, "retrieval": retrieval, "generator": generator, "teacher": teacher,
}
