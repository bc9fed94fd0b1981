"""Arena I/O: judge pairs of stored predictions, store matches, compute and plot the leaderboard.

    run_arena(store, task, ["smollm2-135m-instruct", "smollm2-135m-instruct+ws/adapter"])

Matches are keyed by a content hash of (task, example, the two model ids, judge), so running the
arena again adds nothing twice. Model ids are fingerprints; names come from the `models` table.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from evals import judges, rating
from evals.similarity import CachedEmbedder, cosine_pairs
from loop.records import content_hash
from loop.store import Store, now


def _predictions(store: Store, run_id: str) -> dict[str, dict]:
    """example id -> {output, passed} for one evaluation run."""
    rows = store.query("""
        SELECT ri.example_id, p.output,
               coalesce(bool_and(s.passed) FILTER (WHERE s.required), false) AS passed
        FROM run_items ri JOIN predictions p USING (prediction_id)
        LEFT JOIN scores s ON s.prediction_id = ri.prediction_id
             AND s.example_id = ri.example_id
        WHERE ri.run_id = ? GROUP BY ri.example_id, p.output""", [run_id])
    return {r["example_id"]: r for r in rows}


def build_pairs(store: Store, task, run_a: str, run_b: str, n: int | None,
                embedder: CachedEmbedder) -> list[judges.Pair]:
    a, b = _predictions(store, run_a), _predictions(store, run_b)
    examples = {e.id: e for e in task.split("test")}
    shared = sorted(set(a) & set(b) & set(examples))[:n]
    refs = [examples[i].output for i in shared]
    sim_a = cosine_pairs(embedder, [a[i]["output"] for i in shared], refs)
    sim_b = cosine_pairs(embedder, [b[i]["output"] for i in shared], refs)
    return [judges.Pair(i, f"{examples[i].instruction}\n{examples[i].input}".strip(),
                        examples[i].output, a[i]["output"], b[i]["output"], a[i]["passed"],
                        b[i]["passed"], sa, sb)
            for i, sa, sb in zip(shared, sim_a, sim_b)]


def judge_pairs(pairs, judge: str, completer=None) -> list[judges.Verdict]:
    if judge == "reference":
        return judges.reference_judge(pairs)
    return judges.llm_judge(pairs, completer)


def run_arena(store: Store, task, models: list[str], judge: str = "reference",
              n: int | None = None, seed: int = 0, plot_dir: Path | None = None,
              completer=None, progress: bool = True) -> dict:
    """Evaluate missing test predictions, judge every model pair on shared items, rate."""
    from loop.evaluate import evaluate

    judges.check_judge(judge)
    runs = {m: evaluate(store, task, m, "test", progress=progress) for m in models}
    embedder = CachedEmbedder(store)
    rng = random.Random(seed)
    rows = []
    for m_a, m_b in itertools.combinations(models, 2):
        id_a, id_b = runs[m_a].model_id, runs[m_b].model_id
        pairs = build_pairs(store, task, runs[m_a].run_id, runs[m_b].run_id, n, embedder)
        for pair, verdict in zip(pairs, judge_pairs(pairs, judge, completer)):
            rows.append({
                "match_id": content_hash("match", task.name, pair.example_id,
                                         sorted([id_a, id_b]), judge),
                "task_id": task.name, "example_id": pair.example_id, "model_a": id_a,
                "model_b": id_b, "judge": judge,
                "shown_first": rng.choice([id_a, id_b]) if judge == "llm" else None,
                "verdict": verdict.verdict, "error": verdict.error, "voter": None,
                "detail": verdict.detail or {}, "created_at": now()})
    store.insert("matches", rows)
    board = compute_leaderboard(store, task.name, judge=None, seed=seed, save=True)
    names = {runs[m].model_id: m for m in models}
    plot = write_heatmap(store, task.name, plot_dir / "winrates.png") if plot_dir else None
    return {"n_matches": len(rows), "judge": judge,
            "ratings": {names.get(r["model_id"], r["model_id"]): r["rating"] for r in board},
            "leaderboard": board, "plot": str(plot) if plot else None}


def _outcomes(store: Store, task_id: str | None, judge: str | None) -> list[rating.Outcome]:
    sql = "SELECT model_a, model_b, verdict FROM matches WHERE verdict IS NOT NULL"
    params: list = []
    if task_id:
        sql += " AND task_id = ?"
        params.append(task_id)
    if judge:
        sql += " AND judge = ?"
        params.append(judge)
    rows = store.query(sql + " ORDER BY created_at, match_id", params)
    return rating.outcomes_from_verdicts([(r["model_a"], r["model_b"], r["verdict"])
                                          for r in rows])


def model_names(store: Store) -> dict[str, str]:
    return {r["model_id"]: r["name"] for r in store.query("SELECT model_id, name FROM models")}


def compute_leaderboard(store: Store, task_id: str | None, judge: str | None = None,
                        seed: int = 0, n_boot: int = 200, save: bool = False) -> list[dict]:
    """Bradley-Terry rows (with names, online Elo) over stored matches; judge None = all."""
    outcomes = _outcomes(store, task_id, judge)
    names, elo = model_names(store), rating.online_elo(outcomes)
    board = [{"model_id": r.model, "model": names.get(r.model, r.model), "rating": r.rating,
              "lower": r.lower, "upper": r.upper, "rank": r.rank, "n_matches": r.n_matches,
              "wins": r.wins, "losses": r.losses, "ties": r.ties, "elo": elo.get(r.model)}
             for r in rating.leaderboard(outcomes, n_boot=n_boot, seed=seed)]
    if save and board:
        store.insert("rating_snapshots", [{
            "snapshot_id": content_hash("ratings", task_id, judge, len(outcomes), seed, board),
            "task_id": task_id, "judge": judge or "all", "n": len(outcomes), "seed": seed,
            "ratings": board, "created_at": now()}])
    return board


def judge_agreement(store: Store, task_id: str | None) -> dict[str, dict]:
    """Per automatic judge: agreement with human votes on the same (example, model pair)."""
    rows = store.query("SELECT judge, example_id, model_a, model_b, verdict FROM matches "
                       "WHERE verdict IS NOT NULL" + (" AND task_id = ?" if task_id else ""),
                       [task_id] if task_id else [])
    by_judge: dict[str, dict] = {}
    for r in rows:
        key, verdict = (r["example_id"], r["model_a"], r["model_b"]), r["verdict"]
        if r["model_a"] > r["model_b"]:  # orient every pair the same way
            key = (r["example_id"], r["model_b"], r["model_a"])
            verdict = {"A": "B", "B": "A"}.get(verdict, verdict)
        by_judge.setdefault(r["judge"], {})[key] = verdict
    human = by_judge.get("human", {})
    out = {}
    for judge, verdicts in by_judge.items():
        if judge != "human":
            rate, n = rating.agreement(verdicts, human)
            out[judge] = {"agreement": rate, "shared": n}
    return out


def write_heatmap(store: Store, task_id: str | None, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcomes = _outcomes(store, task_id, None)
    if not outcomes:
        return None
    models, rates = rating.win_rate_matrix(outcomes)
    names = model_names(store)
    labels = [names.get(m, m)[-40:] for m in models]
    fig, ax = plt.subplots(figsize=(2.2 + 1.2 * len(models), 1.6 + 1.0 * len(models)))
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="RdYlGn")
    ax.set_xticks(range(len(models)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(models)), labels, fontsize=7)
    for i in range(len(models)):
        for j in range(len(models)):
            if i != j and rates[i, j] == rates[i, j]:
                ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title("win rate of row vs column (ties count half)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_leaderboard(board: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'model':<60}{'rating':>8}{'95% interval':>16}{'matches':>9}"
             f"{'W/L/T':>14}"]
    for r in board:
        interval = f"{r['lower']:.0f}-{r['upper']:.0f}"
        record = f"{r['wins']:.0f}/{r['losses']:.0f}/{r['ties']:.0f}"
        lines.append(f"{r['rank']:>4}  {r['model'][-58:]:<60}{r['rating']:>8.0f}{interval:>16}"
                     f"{r['n_matches']:>9}{record:>14}")
    return "\n".join(lines)
