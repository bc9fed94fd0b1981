"""Arena I/O: judge pairs of stored predictions, store matches, compute and plot the leaderboard.

    run_arena(store, task, ["smollm2-135m-instruct", "smollm2-135m-instruct+ws/adapter"])

Both models' test predictions come from `evaluate` (generated only where missing) through the
`run_items`, `predictions` and `scores` tables. Match ids are content hashes of (task, example,
the two model ids, judge), so running the arena again judges and adds nothing twice; only pairs
whose earlier verdict was an error are judged again. Model ids are fingerprints; names come from
the `models` table. The rating math is in evals/rating.py, the judges in evals/judges.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from evals import judges, rating
from evals.similarity import CachedEmbedder, cosine_pairs
from loop.core.errors import ConfigError
from loop.core.records import content_hash
from loop.store.db import Store, now


@dataclass(frozen=True)
class Entrant:
    """A model version with an evaluation run on the task's test split."""
    name: str
    model_id: str
    run_id: str
    suite_version: str


def evaluate_entrants(store: Store, task, models: Sequence[str], progress: bool = True
                      ) -> list[Entrant]:
    """Evaluate each model on the test split (reusing stored predictions); two names for the
    same weights are refused before anything is generated."""
    from loop.evaluation.evaluate import evaluate
    from loop.models.loading import fingerprint, parse_model_name

    if len(models) < 2:
        raise ConfigError(f"An arena needs at least two models; got {len(models)}.")
    seen: dict[str, str] = {}
    for name in models:
        model_id = fingerprint(parse_model_name(name))
        if model_id in seen:
            raise ConfigError(f"'{seen[model_id]}' and '{name}' are the same model (fingerprint "
                              f"{model_id}); an arena compares different versions.")
        seen[model_id] = name
    out = []
    for name in models:
        summary = evaluate(store, task, name, "test", progress=progress)
        out.append(Entrant(name, summary.model_id, summary.run_id, summary.suite_version))
    return out


def _predictions(store: Store, task_id: str, entrant: Entrant) -> dict[str, dict]:
    """example id -> {output, passed} for one run; passed = no required check of the run's
    suite version failed (the rule evals/suites.py applies)."""
    rows = store.query("""
        SELECT ri.example_id, p.output,
               count(s.check_name) > 0
               AND NOT coalesce(bool_or(s.required AND NOT s.passed), false) AS passed
        FROM run_items ri JOIN predictions p USING (prediction_id)
        LEFT JOIN scores s ON s.prediction_id = ri.prediction_id
             AND s.example_id = ri.example_id AND s.task_id = ? AND s.suite_version = ?
        WHERE ri.run_id = ? GROUP BY ri.example_id, p.output""",
                       [task_id, entrant.suite_version, entrant.run_id])
    return {r["example_id"]: r for r in rows}


def build_pairs(store: Store, task, a: Entrant, b: Entrant, n: int | None,
                embedder) -> list[judges.Pair]:
    """Pairs on the first `n` test items (by id) that both entrants answered."""
    pa, pb = _predictions(store, task.name, a), _predictions(store, task.name, b)
    examples = {e.id: e for e in task.split("test")}
    shared = sorted(set(pa) & set(pb) & set(examples))[:n]
    refs = [examples[i].output for i in shared]
    sim_a = cosine_pairs(embedder, [pa[i]["output"] for i in shared], refs)
    sim_b = cosine_pairs(embedder, [pb[i]["output"] for i in shared], refs)
    return [judges.Pair(i, f"{examples[i].instruction}\n{examples[i].input}".strip(),
                        examples[i].output, pa[i]["output"], pb[i]["output"],
                        bool(pa[i]["passed"]), bool(pb[i]["passed"]), sa, sb)
            for i, sa, sb in zip(shared, sim_a, sim_b)]


def _judged_ids(store: Store, ids: list[str]) -> set[str]:
    """Those of `ids` already stored with a verdict (errors are judged again)."""
    if not ids:
        return set()
    rows = store.query("SELECT match_id FROM matches WHERE verdict IS NOT NULL AND "
                       "list_contains(?, match_id)", [ids])
    return {r["match_id"] for r in rows}


def judge_entrants(store: Store, task, entrants: Sequence[Entrant], judge: str = "reference",
                   n: int | None = None, completer=None, embedder=None,
                   margin: float = 0.02) -> list[judges.Match]:
    """Judge every pair of entrants on their shared test items; pairs that already have a
    stored verdict are skipped. `completer` (llm judge): prompts -> replies."""
    judges.check_judge(judge)
    if judge == "llm" and completer is None:
        raise ConfigError("The llm judge needs a judge model (a local model or an endpoint).")
    embedder = embedder or CachedEmbedder(store)
    judged_by = getattr(completer, "label", None) if judge == "llm" else None
    out: list[judges.Match] = []
    for a, b in itertools.combinations(entrants, 2):
        pairs = build_pairs(store, task, a, b, n, embedder)
        blank = [judges.Match(task.name, p.example_id, a.model_id, b.model_id, judge, None,
                              judged_by=judged_by) for p in pairs]
        done = _judged_ids(store, [m.match_id for m in blank])
        todo = [(p, m) for p, m in zip(pairs, blank) if m.match_id not in done]
        if not todo:
            continue
        todo_pairs = [p for p, _ in todo]
        verdicts = (judges.reference_judge(todo_pairs, margin) if judge == "reference"
                    else judges.llm_judge(todo_pairs, completer))
        out += [judges.Match(m.task_id, m.example_id, m.model_a, m.model_b, judge, v.verdict,
                             v.error, judged_by=judged_by, detail=v.detail or {})
                for (_, m), v in zip(todo, verdicts)]
    return out


def write_matches(store: Store, matches: Sequence[judges.Match]) -> int:
    """Store matches by content-hash id; returns how many ids were new. A stored verdict is
    never overwritten; a stored error is replaced by the new attempt."""
    keep = _judged_ids(store, [m.match_id for m in matches])
    rows = [m.row(now()) for m in matches if m.match_id not in keep]
    before = store.count("matches")
    store.insert("matches", rows, on_conflict="replace")
    return store.count("matches") - before


def run_arena(store: Store, task, models: list[str], judge: str = "reference",
              n: int | None = None, seed: int = 0, plot_dir: Path | None = None,
              completer=None, progress: bool = True) -> dict:
    """Evaluate missing test predictions, judge every model pair on shared items, rate.
    Returns the combined (all judges) leaderboard for the task and the plot path."""
    judges.check_judge(judge)
    entrants = evaluate_entrants(store, task, models, progress)
    matches = judge_entrants(store, task, entrants, judge, n, completer)
    new = write_matches(store, matches)
    board = compute_leaderboard(store, task.name, judge=None, seed=seed, save=True)
    names = {e.model_id: e.name for e in entrants}
    plot = write_heatmap(store, task.name, plot_dir / "winrates.png") if plot_dir else None
    return {"judged": len(matches), "new_matches": new, "judge": judge,
            "errors": sum(m.error is not None for m in matches),
            "ratings": {names.get(r["model_id"], r["model_id"]): r["rating"] for r in board},
            "leaderboard": board, "plot": str(plot) if plot else None}


# ---------------------------------------------------------------------------- leaderboard

def _outcomes(store: Store, task_id: str | None, judge: str | None) -> list[rating.Outcome]:
    sql = "SELECT model_a, model_b, verdict FROM matches WHERE verdict IS NOT NULL"
    params: list = []
    if task_id:
        sql += " AND task_id = ?"
        params.append(task_id)
    if judge:
        sql += " AND judge = ?"
        params.append(judge)
    rows = store.query(sql + " ORDER BY created_at, match_id", params)  # Elo needs an order
    return rating.outcomes_from_verdicts([(r["model_a"], r["model_b"], r["verdict"])
                                          for r in rows])


def model_names(store: Store) -> dict[str, str]:
    return {r["model_id"]: r["name"] for r in store.query("SELECT model_id, name FROM models")}


def compute_leaderboard(store: Store, task_id: str | None, judge: str | None = None,
                        seed: int = 0, n_boot: int = 200, save: bool = False,
                        anchor: str | None = None) -> list[dict]:
    """Bradley-Terry rows (with names, win rate, online Elo) over stored matches, best first;
    judge None = all judges. `anchor` (a model name or id) is pinned at 1000, else the mean.
    With save=True the rows go to `rating_snapshots` with n and seed."""
    outcomes = _outcomes(store, task_id, judge)
    names, elo = model_names(store), rating.online_elo(outcomes)
    ids = {name: model_id for model_id, name in names.items()}
    rows = rating.leaderboard(outcomes, n_boot=n_boot, seed=seed,
                              anchor=ids.get(anchor, anchor) if anchor else None)
    board = [{"model_id": r.model, "model": names.get(r.model, r.model), "rating": r.rating,
              "lower": r.lower, "upper": r.upper, "rank": r.rank, "n_matches": r.n_matches,
              "wins": r.wins, "losses": r.losses, "ties": r.ties, "win_rate": r.win_rate,
              "elo": elo.get(r.model)} for r in rows]
    if save and board:
        store.insert("rating_snapshots", [{
            "snapshot_id": content_hash("ratings", task_id, judge, len(outcomes), seed, board),
            "task_id": task_id, "judge": judge or "all", "n": len(outcomes), "seed": seed,
            "ratings": board, "created_at": now()}])
    return board


def judge_agreement(store: Store, task_id: str | None) -> dict[str, dict]:
    """Per automatic judge: agreement with human votes on the same (example, model pair)."""
    rows = store.query("SELECT judge, example_id, model_a, model_b, verdict FROM matches "
                       "WHERE verdict IS NOT NULL" + (" AND task_id = ?" if task_id else "")
                       + " ORDER BY created_at, match_id", [task_id] if task_id else [])
    by_judge: dict[str, dict] = {}
    for r in rows:
        key, verdict = (r["example_id"], r["model_a"], r["model_b"]), r["verdict"]
        if r["model_a"] > r["model_b"]:  # orient every pair the same way
            key = (r["example_id"], r["model_b"], r["model_a"])
            verdict = {"A": "B", "B": "A"}.get(verdict, verdict)
        by_judge.setdefault(r["judge"], {})[key] = verdict  # several human votes: the latest
    human = by_judge.get("human", {})
    out = {}
    for judge, verdicts in by_judge.items():
        if judge != "human":
            rate, n = rating.agreement(verdicts, human)
            out[judge] = {"agreement": rate, "shared": n}
    return out


def short_name(name: str) -> str:
    """'base+/ws/adapters/abc123' -> 'base+abc123' (adapter directories are long paths)."""
    base, plus, adapter = name.partition("+")
    return f"{base}+{PurePath(adapter).name}" if plus and adapter else name


def write_heatmap(store: Store, task_id: str | None, path: Path) -> Path | None:
    """PNG of the win-rate matrix (row vs column, ties half) over all judges; None if empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcomes = _outcomes(store, task_id, None)
    if not outcomes:
        return None
    models, rates = rating.win_rate_matrix(outcomes)
    names = model_names(store)
    labels = [short_name(names.get(m, m))[-40:] for m in models]
    fig, ax = plt.subplots(figsize=(2.2 + 1.2 * len(models), 1.6 + 1.0 * len(models)))
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="RdYlGn")
    ax.set_xticks(range(len(models)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(models)), labels, fontsize=7)
    for i in range(len(models)):
        for j in range(len(models)):
            if i != j and rates[i, j] == rates[i, j]:  # skip the diagonal and NaN
                ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"win rate of row vs column\n{len(outcomes)} matches, ties count half",
                 fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long model names stay readable
    plt.close(fig)
    return path


def format_leaderboard(board: list[dict]) -> str:
    lines = [(f"{'rank':>4}  {'model':<44}{'rating':>7}{'95% interval':>14}{'win%':>7}"
              f"{'matches':>9}{'W/L/T':>13}{'Elo':>7}")]
    for r in board:
        interval = f"{r['lower']:.0f}-{r['upper']:.0f}"
        record = f"{r['wins']:.0f}/{r['losses']:.0f}/{r['ties']:.0f}"
        elo = f"{r['elo']:.0f}" if r.get("elo") is not None else "-"
        win_rate = (r["wins"] + r["ties"] / 2) / max(r["n_matches"], 1)
        lines.append(f"{r['rank']:>4}  {short_name(r['model'])[-43:]:<44}{r['rating']:>7.0f}"
                     f"{interval:>14}{win_rate:>7.0%}{r['n_matches']:>9}{record:>13}"
                     f"{elo:>7}")
    return "\n".join(lines)
