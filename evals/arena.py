"""The arena's scoring: pair two models' answers, judge the pairs, rank models from verdicts.

    pairs = pair_items(examples, outputs_a, outputs_b, n, embedder)
    matches = judge_pairs(pending_matches(task_id, model_a, model_b, pairs, "reference"), pairs)
    board = leaderboard(match_outcomes(verdicts), names)

Pure apart from the judges' completers and the heatmap file: predictions, references and a
judge in; match records, leaderboards and plots out. Running the evaluation for the entrants and
reading or writing matches is the arena stage's job (`loop/evaluation/arena.py`). Match ids are
content hashes of (task, example, the two model ids, judge), so judging a pair again is a no-op.
The rating math is in evals/rating.py, the judges in evals/judges.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath

from evals import judges, rating
from evals.similarity import cosine_pairs
from loop.core.errors import ConfigError
from loop.core.records import Example


def pair_items(examples: Mapping[str, Example], outputs_a: Mapping[str, Mapping],
               outputs_b: Mapping[str, Mapping], n: int | None, embedder) -> list[judges.Pair]:
    """Pairs on the first `n` items (by id) that both models answered. `outputs_*`: example id
    -> {"output": text, "passed": bool} (passed = no required check of the run failed)."""
    shared = sorted(set(outputs_a) & set(outputs_b) & set(examples))[:n]
    refs = [examples[i].output for i in shared]
    sim_a = cosine_pairs(embedder, [outputs_a[i]["output"] for i in shared], refs)
    sim_b = cosine_pairs(embedder, [outputs_b[i]["output"] for i in shared], refs)
    return [judges.Pair(i, f"{examples[i].instruction}\n{examples[i].input}".strip(),
                        examples[i].output, outputs_a[i]["output"], outputs_b[i]["output"],
                        bool(outputs_a[i]["passed"]), bool(outputs_b[i]["passed"]), sa, sb)
            for i, sa, sb in zip(shared, sim_a, sim_b)]


def check_completer(judge: str, completer) -> str | None:
    """The judge's name checked, and the label of the concrete LLM judge (None otherwise)."""
    judges.check_judge(judge)
    if judge == "llm" and completer is None:
        raise ConfigError("The llm judge needs a judge model (a local model or an endpoint).")
    return getattr(completer, "label", None) if judge == "llm" else None


def pending_matches(task_id: str, model_a: str, model_b: str, pairs: Sequence[judges.Pair],
                    judge: str, judged_by: str | None = None) -> list[judges.Match]:
    """One unjudged match per pair (verdict None): their ids say which are already stored."""
    return [judges.Match(task_id, p.example_id, model_a, model_b, judge, None,
                         judged_by=judged_by) for p in pairs]


def judge_pairs(blank: Sequence[judges.Match], pairs: Sequence[judges.Pair],
                completer: Callable[[list[str]], list[str]] | None = None,
                margin: float = 0.02) -> list[judges.Match]:
    """Judge `pairs` with the judge named in their `blank` matches; the matches with verdicts.
    `completer` (llm judge): prompts -> replies."""
    if not pairs:
        return []
    judge = blank[0].judge
    verdicts = (judges.reference_judge(pairs, margin) if judge == "reference"
                else judges.llm_judge(pairs, completer))
    return [judges.Match(m.task_id, m.example_id, m.model_a, m.model_b, judge, v.verdict,
                         v.error, judged_by=m.judged_by, detail=v.detail or {})
            for m, v in zip(blank, verdicts)]


# ---------------------------------------------------------------------------- leaderboard

def match_outcomes(verdicts: Sequence[Mapping]) -> list[rating.Outcome]:
    """Match rows with a verdict (model_a, model_b, verdict), in the order they happened."""
    return rating.outcomes_from_verdicts([(r["model_a"], r["model_b"], r["verdict"])
                                          for r in verdicts])


def leaderboard(outcomes: Sequence[rating.Outcome], names: Mapping[str, str], seed: int = 0,
                n_boot: int = 200, anchor: str | None = None) -> list[dict]:
    """Bradley-Terry rows (with names, win rate, online Elo), best first. `anchor` (a model name
    or id) is pinned at 1000, else the mean."""
    elo = rating.online_elo(outcomes)
    ids = {name: model_id for model_id, name in names.items()}
    rows = rating.leaderboard(outcomes, n_boot=n_boot, seed=seed,
                              anchor=ids.get(anchor, anchor) if anchor else None)
    return [{"model_id": r.model, "model": names.get(r.model, r.model), "rating": r.rating,
             "lower": r.lower, "upper": r.upper, "rank": r.rank, "n_matches": r.n_matches,
             "wins": r.wins, "losses": r.losses, "ties": r.ties, "win_rate": r.win_rate,
             "elo": elo.get(r.model)} for r in rows]


def judge_agreement(verdicts: Sequence[Mapping]) -> dict[str, dict]:
    """Per automatic judge: agreement with human votes on the same (example, model pair).
    `verdicts`: match rows with a verdict (judge, example_id, model_a, model_b, verdict), in the
    order they happened."""
    by_judge: dict[str, dict] = {}
    for r in verdicts:
        key, verdict = (r["example_id"], r["model_a"], r["model_b"]), r["verdict"]
        if r["model_a"] > r["model_b"]:  # orient every pair the same way
            key = (r["example_id"], r["model_b"], r["model_a"])
            verdict = {"A": "B", "B": "A"}.get(verdict, verdict)
        by_judge.setdefault(r["judge"], {})[key] = verdict  # several human votes: the latest
    human = by_judge.get("human", {})
    out = {}
    for judge, given in by_judge.items():
        if judge != "human":
            rate, n = rating.agreement(given, human)
            out[judge] = {"agreement": rate, "shared": n}
    return out


def short_name(name: str) -> str:
    """'base+/ws/adapters/abc123' -> 'base+abc123' (adapter directories are long paths)."""
    base, plus, adapter = name.partition("+")
    return f"{base}+{PurePath(adapter).name}" if plus and adapter else name


def write_heatmap(outcomes: Sequence[rating.Outcome], names: Mapping[str, str],
                  path: Path) -> Path | None:
    """PNG of the win-rate matrix (row vs column, ties half); None if there are no outcomes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not outcomes:
        return None
    models, rates = rating.win_rate_matrix(outcomes)
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
