"""Preference pairs (prompt, chosen, rejected) from what the store already holds.

    result = build_pairs(store, load_task("task.toml"))      # or `evalloop pairs --task T.toml`
    print(format_result(result))

Four sources, each pair tagged with its `source` so they are never mixed up:
  human       blind A/B votes from the app (judge "human"): winner vs loser
  judge       automatic judges' matches (reference, llm), kept apart from human votes
  correction  a reviewer's corrected answer vs the model output it corrected
  failure     the reference vs a failing prediction (the item failed, so the reference is the
              full answer the model should have given)
Ties, "both bad", unjudged matches, missing outputs and identical answers never become pairs;
each exclusion is counted with its reason. Pairs are then decontaminated against the test split
(and benchmark questions when [targeted] benchmark_data is set) with the same rules as SFT data
(loop/targeted/curate.py, against loop/targeted/references.py). Dev items are allowed: dev is
where failures are mined and corrections are made, and the gate scores on test. Exported as
JSONL (`prompt`, `chosen`, `rejected` + provenance) with a manifest beside it; the pair record
and its reader are loop/core/pairs.py (DPO reads them too).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from loop.core.cache import write_atomic
from loop.core.errors import ConfigError
from loop.core.pairs import PreferencePair
from loop.core.paths import path_part
from loop.core.records import Example, content_hash
from loop.store import arena as arena_queries
from loop.store import failures as failure_queries
from loop.store import targeted as targeted_queries
from loop.store.db import Store

SOURCES = ("human", "judge", "correction", "failure")
PAIRS_VERSION = "pairs-v1"  # part of every manifest hash: bump when pair building changes


@dataclass(frozen=True)
class Exclusion:
    source: str
    reason: str  # tie, both_bad, no_verdict, no_output, same_output, no_reference,
    #              superseded, unknown_item, duplicate, contaminated
    origin: str
    detail: str = ""


@dataclass(frozen=True)
class PairSet:
    pairs: tuple[PreferencePair, ...]
    excluded: tuple[Exclusion, ...]

    def counts(self) -> dict[str, dict]:
        """Per source: pairs kept and exclusions by reason."""
        kept = Counter(p.source for p in self.pairs)
        dropped: dict[str, Counter] = {s: Counter() for s in SOURCES}
        for e in self.excluded:
            dropped.setdefault(e.source, Counter())[e.reason] += 1
        return {s: {"pairs": kept[s], "excluded": dict(sorted(dropped[s].items()))}
                for s in SOURCES}


# ---------------------------------------------------------------------------- pure builders

def pairs_from_matches(task_id: str, matches: Iterable[dict], items: dict[str, Example]
                       ) -> tuple[list[PreferencePair], list[Exclusion]]:
    """Match rows {match_id, example_id, model_a, model_b, judge, verdict, voter, output_a,
    output_b} -> winner-vs-loser pairs; source "human" for judge "human", else "judge"."""
    pairs, out = [], []
    for m in matches:
        source = "human" if m["judge"] == "human" else "judge"
        verdict, origin = m.get("verdict"), m["match_id"]
        reason = ({"tie": "tie", "both_bad": "both_bad", None: "no_verdict"}.get(verdict)
                  or _missing(m.get("output_a"), m.get("output_b"))
                  or (None if m["example_id"] in items else "unknown_item"))
        if reason is None and verdict not in ("A", "B"):
            reason = "no_verdict"
        if reason:
            out.append(Exclusion(source, reason, origin, f"verdict {verdict}"))
            continue
        win, lose = ("a", "b") if verdict == "A" else ("b", "a")
        ex = items[m["example_id"]]
        pairs.append(PreferencePair(source, task_id, ex.id, ex.instruction, ex.input,
                                    m[f"output_{win}"], m[f"output_{lose}"], m[f"model_{win}"],
                                    m[f"model_{lose}"], origin, m["judge"], m.get("voter")))
    return pairs, out


def pairs_from_corrections(task_id: str, corrections: Iterable[dict], items: dict[str, Example]
                           ) -> tuple[list[PreferencePair], list[Exclusion]]:
    """Correction rows {correction_id, example_id, corrected_output, reviewer, prediction_id,
    output, model_id}, newest first -> corrected vs corrected-output pairs. An older correction
    of the same (item, prediction) is superseded by the newer one."""
    pairs, out, seen = [], [], set()
    for c in corrections:
        origin, key = c["correction_id"], (c["example_id"], c.get("prediction_id"))
        reason = ("superseded" if key in seen else
                  _missing(c.get("output"), c["corrected_output"])
                  or (None if c["example_id"] in items else "unknown_item"))
        seen.add(key)
        if reason:
            out.append(Exclusion("correction", reason, origin))
            continue
        ex = items[c["example_id"]]
        pairs.append(PreferencePair("correction", task_id, ex.id, ex.instruction, ex.input,
                                    c["corrected_output"], c["output"],
                                    f"reviewer:{c.get('reviewer') or 'unknown'}",
                                    c.get("model_id") or "unknown", origin))
    return pairs, out


def pairs_from_failures(task_id: str, failures: Iterable[dict], items: dict[str, Example]
                        ) -> tuple[list[PreferencePair], list[Exclusion]]:
    """Failure rows {run_id, example_id, model_id, reference, output} -> reference vs output."""
    pairs, out = [], []
    for f in failures:
        origin = f"{f['run_id']}:{f['example_id']}"
        reference = f.get("reference") or ""
        reason = ("no_reference" if not reference.strip() else
                  _missing(f.get("output"), reference)
                  or (None if f["example_id"] in items else "unknown_item"))
        if reason:
            out.append(Exclusion("failure", reason, origin))
            continue
        ex = items[f["example_id"]]
        pairs.append(PreferencePair("failure", task_id, ex.id, ex.instruction, ex.input,
                                    reference, f["output"], "reference", f["model_id"], origin))
    return pairs, out


def _missing(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return "no_output"
    return "same_output" if a.strip() == b.strip() else None


def dedupe(pairs: Sequence[PreferencePair]) -> tuple[list[PreferencePair], list[Exclusion]]:
    """The first of identical (source, prompt, chosen, rejected) pairs; the rest excluded."""
    kept, out, seen = [], [], set()
    for p in pairs:
        if p.pair_id in seen:
            out.append(Exclusion(p.source, "duplicate", p.origin, p.pair_id))
        else:
            seen.add(p.pair_id)
            kept.append(p)
    return kept, out


# ---------------------------------------------------------------------------- decontamination

def decontaminate(pairs: Sequence[PreferencePair], task, embedder
                  ) -> tuple[list[PreferencePair], list[Exclusion]]:
    """SFT's contamination rules (loop/targeted/curate.py) against test items and configured benchmark
    questions: a pair is an item (question = its prompt, answer = `chosen`)."""
    from loop.targeted import curate as cur
    from loop.targeted.lexical import lexical_shortlist
    from loop.targeted.inputs import curate_config
    from loop.targeted.references import EmbeddingMemo, curation_references

    if not pairs:
        return [], []
    cfg = task.settings.targeted
    vary = task.varying_part()
    no_dev = replace(task, splits={k: v for k, v in task.splits.items() if k != "dev"})
    refs = curation_references(no_dev, cfg, vary)
    embed = EmbeddingMemo(embedder)
    items = [cur.Item(p.pair_id, vary(p.prompt), p.chosen, p.source) for p in pairs]
    shortlist = lexical_shortlist([i.question for i in items],
                                  [b.question for b in refs.bench]) if refs.bench else []
    checked = refs.task + [refs.bench[j] for j in shortlist]
    vectors = cur.Vectors(embed([i.question for i in items]), embed([i.answer for i in items]),
                          embed([r.question for r in checked]),
                          embed([r.answer or "" for r in checked]))
    pool_answers = [e.output for e in task.splits.get("train", ())]
    leaks = cur.contamination(items, checked, vectors, refs.indexes, curate_config(cfg),
                              pool_answers)
    kept = [p for p, leak in zip(pairs, leaks) if not leak]
    out = [Exclusion(p.source, "contaminated", p.origin, leak)
           for p, leak in zip(pairs, leaks) if leak]
    return kept, out


def collect_pairs(store: Store, task, sources: Sequence[str] = SOURCES,
                  failure_run: str | None = None) -> PairSet:
    """Every pair of the chosen sources, deduplicated, before decontamination."""
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown pair source(s) {', '.join(unknown)}; known: "
                          f"{', '.join(SOURCES)}.")
    items = {e.id: e for split in task.splits.values() for e in split}
    pairs: list[PreferencePair] = []
    excluded: list[Exclusion] = []
    matches = (arena_queries.matches_with_outputs(store, task.name)
               if {"human", "judge"} & set(sources) else [])
    steps = (("human", lambda: pairs_from_matches(
                 task.name, [m for m in matches if m["judge"] == "human"], items)),
             ("judge", lambda: pairs_from_matches(
                 task.name, [m for m in matches if m["judge"] != "human"], items)),
             ("correction", lambda: pairs_from_corrections(
                 task.name, targeted_queries.corrections_with_outputs(store, task.name), items)),
             ("failure", lambda: pairs_from_failures(
                 task.name, failure_queries.failure_rows(store, task.name, failure_run), items)))
    for source, build in steps:
        if source in sources:
            got, dropped = build()
            pairs += got
            excluded += dropped
    pairs, dups = dedupe(pairs)
    return PairSet(tuple(pairs), tuple(excluded + dups))


# ---------------------------------------------------------------------------- the stage

@dataclass(frozen=True)
class PairsResult:
    dataset_path: str
    manifest_path: str
    manifest_hash: str
    n_pairs: int
    counts: dict

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PairsResult:
        return cls(**data)


def build_pairs(store: Store, task, sources: Sequence[str] = SOURCES,
                failure_run: str | None = None, out_dir: str | Path | None = None,
                embedder=None) -> PairsResult:
    """Collect, decontaminate and export the task's preference pairs; returns the paths."""
    if embedder is None:
        from loop.targeted.stage import default_embedder

        embedder = default_embedder(store)
    found = collect_pairs(store, task, sources, failure_run)
    kept, leaked = decontaminate(found.pairs, task, embedder)
    final = PairSet(tuple(kept), found.excluded + tuple(leaked))
    return export_pairs(final, task, Path(out_dir) if out_dir else
                        store.workspace / "data" / path_part(task.name) / "pairs",
                        {"sources": list(sources), "failure_run": failure_run})


def export_pairs(pairs: PairSet, task, out_dir: Path, params: dict) -> PairsResult:
    """`<hash>.jsonl` (one pair a line) and `<hash>.manifest.json`; the hash covers the pairs
    and what produced them, so the same pairs give the same files."""
    rows = [p.row() for p in pairs.pairs]
    manifest = {"version": PAIRS_VERSION, "task": task.name, "data_hash": task.data_hash,
                "params": params, "n_pairs": len(rows), "counts": pairs.counts(),
                "pair_ids": [r["pair_id"] for r in rows]}
    digest = content_hash(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path, manifest_path = out_dir / f"{digest}.jsonl", out_dir / f"{digest}.manifest.json"
    write_atomic(data_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_atomic(manifest_path, json.dumps({**manifest, "manifest_hash": digest,
                                             "dataset": data_path.name}, indent=2))
    return PairsResult(str(data_path), str(manifest_path), digest, len(rows), pairs.counts())


def format_result(result: PairsResult) -> str:
    lines = [f"{result.n_pairs} preference pairs -> {result.dataset_path}"]
    for source, c in result.counts.items():
        dropped = ", ".join(f"{k} {v}" for k, v in c["excluded"].items()) or "none"
        lines.append(f"  {source:<11}{c['pairs']:>6} pairs   excluded: {dropped}")
    return "\n".join(lines)
