"""The arena stage: judge pairs of stored predictions, store matches, rate and plot.

    run_arena(store, task, ["smollm2-135m-instruct", "smollm2-135m-instruct+ws/adapter"])

Both models' test predictions come from `evaluate` (generated only where missing) through the
`run_items`, `predictions` and `scores` tables. Match ids are content hashes of (task, example,
the two model ids, judge), so running the arena again judges and adds nothing twice; only pairs
whose earlier verdict was an error are judged again. Model ids are fingerprints; names come from
the `models` table. Pairing, judging and rating are scoring (evals/arena.py); this module reads
their inputs from the store and writes what they return.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evals import arena as pairwise
from evals import judges
from loop.core.clock import now
from loop.core.errors import ConfigError
from loop.core.records import content_hash
from loop.store import arena as queries
from loop.store.db import Store
from loop.store.rows import MatchRow, RatingSnapshotRow
from loop.store.runs import model_names


@dataclass(frozen=True)
class Entrant:
    """A model version, or a model under a [[prompts]] variant, with an evaluation run on the
    task's test split."""
    name: str
    model_id: str  # the weights' fingerprint, or a prompted entrant's id (prompted_id)
    run_id: str
    suite_version: str


DEFAULT_PROMPT = "default"  # --prompts name of the task's own prompt ([generation] shots)


def prompted_id(model_id: str, setting) -> str:
    """The id a model under a prompt variant competes under (the plain prompt: the model's)."""
    return model_id if setting.is_default else content_hash("prompted", model_id,
                                                            setting.content())


def prompt_settings(task, prompts: Sequence[str] | None) -> list:
    """The PromptSettings named by --prompts ("default": the task's own), checked up front."""
    from loop.evaluation.prompting import resolve_prompt

    return [resolve_prompt(task, None if name == DEFAULT_PROMPT else name)
            for name in (prompts or [DEFAULT_PROMPT])]


def evaluate_entrants(store: Store, task, models: Sequence[str], progress: bool = True,
                      prompts: Sequence[str] | None = None, runs: Sequence = ()) -> list[Entrant]:
    """Evaluate each model under each prompt (default: the task's own) on the test split,
    reusing stored predictions; two names for the same weights and prompt are refused before
    anything is generated. A prompted entrant is stored as a model row (its name
    `MODEL@PROMPT`, parent_id the weights, meta the prompt) so ratings name it. `runs`: test
    `EvalSummary`s under the task's own prompt that the caller already has (a cycle's
    eval_candidate stage); those are not evaluated again."""
    from loop.evaluation.evaluate import evaluate
    from loop.models.loading import fingerprint, parse_model_name

    settings = prompt_settings(task, prompts)
    if len(models) * len(settings) < 2:
        raise ConfigError(f"An arena needs at least two models, or two prompts; got "
                          f"{len(models)} model(s) and {len(settings)} prompt(s).")
    seen: dict[str, str] = {}
    for name in models:
        for setting in settings:
            entrant = prompted_id(fingerprint(parse_model_name(name)), setting)
            label = name + (f"@{setting.name or DEFAULT_PROMPT}" if len(settings) > 1 else "")
            if entrant in seen:
                raise ConfigError(f"'{seen[entrant]}' and '{label}' are the same model and "
                                  f"prompt (fingerprint {entrant}); an arena compares "
                                  "different versions.")
            seen[entrant] = label
    have = {r.model_id: r for r in runs if r.split == "test" and r.task == task.name}
    out = []
    for name in models:
        for setting in settings:
            known = have.get(fingerprint(parse_model_name(name))) if setting.is_default else None
            summary = known or evaluate(store, task, name, "test", progress=progress,
                                        prompt=setting)
            entrant = prompted_id(summary.model_id, setting)
            label = name
            if entrant != summary.model_id:
                label = f"{name}@{setting.name or DEFAULT_PROMPT}"
                store.put_model(entrant, label, parse_model_name(name).base,
                                parent_id=summary.model_id,
                                meta={"prompt": setting.to_json(), "label": setting.label})
            out.append(Entrant(label, entrant, summary.run_id, summary.suite_version))
    return out


def build_pairs(store: Store, task, a: Entrant, b: Entrant, n: int | None,
                embedder) -> list[judges.Pair]:
    """Pairs on the first `n` test items (by id) that both entrants answered."""
    return pairwise.pair_items(
        {e.id: e for e in task.split("test")},
        queries.run_outputs(store, task.name, a.run_id, a.suite_version),
        queries.run_outputs(store, task.name, b.run_id, b.suite_version), n, embedder)


def judge_entrants(store: Store, task, entrants: Sequence[Entrant], judge: str = "reference",
                   n: int | None = None, completer=None, embedder=None,
                   margin: float = 0.02) -> list[judges.Match]:
    """Judge every pair of entrants on their shared test items; pairs that already have a
    stored verdict are skipped. `completer` (llm judge): prompts -> replies."""
    judged_by = pairwise.check_completer(judge, completer)
    if embedder is None:
        from evals.similarity import CachedEmbedder
        from loop.store.embeddings import EmbeddingCache

        embedder = CachedEmbedder(EmbeddingCache(store))
    out: list[judges.Match] = []
    for a, b in itertools.combinations(entrants, 2):
        pairs = build_pairs(store, task, a, b, n, embedder)
        blank = pairwise.pending_matches(task.name, a.model_id, b.model_id, pairs, judge,
                                        judged_by)
        done = queries.judged_match_ids(store, [m.match_id for m in blank])
        todo = [(p, m) for p, m in zip(pairs, blank) if m.match_id not in done]
        out += pairwise.judge_pairs([m for _, m in todo], [p for p, _ in todo], completer,
                                   margin)
    return out


def write_matches(store: Store, matches: Sequence[judges.Match]) -> int:
    """Store matches by content-hash id; returns how many ids were new. A stored verdict is
    never overwritten; a stored error is replaced by the new attempt."""
    keep = queries.judged_match_ids(store, [m.match_id for m in matches])
    return queries.put_matches(store, [MatchRow(**m.row(now())) for m in matches
                                       if m.match_id not in keep])


def run_arena(store: Store, task, models: list[str], judge: str = "reference",
              n: int | None = None, seed: int = 0, plot_dir: Path | None = None,
              completer=None, progress: bool = True,
              prompts: Sequence[str] | None = None, runs: Sequence = ()) -> dict:
    """Evaluate missing test predictions (`runs`: test runs already made, reused), judge every
    pair of entrants (each model under each of `prompts`) on shared items, rate. Returns the
    combined (all judges) leaderboard for the task and the plot path."""
    judges.check_judge(judge)
    entrants = evaluate_entrants(store, task, models, progress, prompts, runs)
    matches = judge_entrants(store, task, entrants, judge, n, completer)
    new = write_matches(store, matches)
    board = compute_leaderboard(store, task.name, judge=None, seed=seed, save=True)
    names = {e.model_id: e.name for e in entrants}
    plot = write_heatmap(store, task.name, plot_dir / "winrates.png") if plot_dir else None
    return {"judged": len(matches), "new_matches": new, "judge": judge,
            "errors": sum(m.error is not None for m in matches),
            "ratings": {names.get(r["model_id"], r["model_id"]): r["rating"] for r in board},
            "leaderboard": board, "plot": str(plot) if plot else None}


def compute_leaderboard(store: Store, task_id: str | None, judge: str | None = None,
                        seed: int = 0, n_boot: int = 200, save: bool = False,
                        anchor: str | None = None) -> list[dict]:
    """The leaderboard (evals.arena.leaderboard) over stored matches; judge None = all judges.
    With save=True the rows go to `rating_snapshots` with n and seed."""
    outcomes = pairwise.match_outcomes(queries.verdicts(store, task_id, judge))
    board = pairwise.leaderboard(outcomes, model_names(store), seed, n_boot, anchor)
    if save and board:
        queries.put_rating_snapshot(store, RatingSnapshotRow(
            snapshot_id=content_hash("ratings", task_id, judge, len(outcomes), seed, board),
            task_id=task_id, judge=judge or "all", n=len(outcomes), seed=seed, ratings=board,
            created_at=now()))
    return board


def judge_agreement(store: Store, task_id: str | None) -> dict[str, dict]:
    """Per automatic judge: agreement with stored human votes (evals.arena.judge_agreement)."""
    return pairwise.judge_agreement(queries.verdicts(store, task_id))


def write_heatmap(store: Store, task_id: str | None, path: Path) -> Path | None:
    """PNG of the win-rate matrix over all judges' stored matches; None if there are none."""
    return pairwise.write_heatmap(pairwise.match_outcomes(queries.verdicts(store, task_id)),
                                 model_names(store), path)
