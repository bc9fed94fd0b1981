"""Pure helpers for the review app's pages: rows in, display rows out (no Streamlit, no I/O).

Kept apart from the widgets so they are tested directly: names, the output-vs-reference diff,
review state, blind-vote records, ratings per judge, judge-human agreement, benchmark deltas.
"""

from __future__ import annotations

import difflib
import html
import json
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import PurePath

from evals import rating

VOTE_CHOICES = {"A": "A is better", "B": "B is better", "tie": "tie", "both_bad": "both bad"}


def short_name(name: str) -> str:
    """'base+/ws/adapters/abc123' -> 'base+abc123' (adapter directories are long paths)."""
    base, plus, adapter = name.partition("+")
    return f"{base}+{PurePath(adapter).name}" if plus and adapter else name


def display_names(names: dict[str, str]) -> dict[str, str]:
    """model id -> a short, unique display name (the id is appended where names collide)."""
    short = {mid: short_name(n) for mid, n in names.items()}
    counts = defaultdict(int)
    for s in short.values():
        counts[s] += 1
    return {mid: s if counts[s] == 1 else f"{s} [{mid[-6:]}]" for mid, s in short.items()}


def name_of(names: dict[str, str], model_id: str | None) -> str:
    return names.get(model_id, model_id or "")


def diff_html(reference: str, output: str) -> str:
    """Word-level diff, every piece HTML-escaped (model outputs are untrusted text)."""
    ref, out = re.split(r"(\s+)", reference or ""), re.split(r"(\s+)", output or "")
    parts = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, ref, out, autojunk=False
                                                      ).get_opcodes():
        if op in ("delete", "replace"):
            parts.append("<del style='background:#fdd'>" + html.escape("".join(ref[a0:a1])) +
                         "</del>")
        if op in ("insert", "replace"):
            parts.append("<ins style='background:#dfd;margin-left:1px'>" +
                         html.escape("".join(out[b0:b1])) + "</ins>")
        if op == "equal":
            parts.append(html.escape("".join(ref[a0:a1])))
    return "<pre style='white-space:pre-wrap'>" + "".join(parts) + "</pre>"


# ------------------------------------------------------------------ reviews

def tagged_ids(reviews: Sequence[dict]) -> dict[str, tuple[str, ...]]:
    """Reviewer-tagged failure category -> prediction ids tagged with it."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in reviews:
        if r.get("action") == "tag" and r.get("category") and r.get("prediction_id"):
            out[r["category"]].add(r["prediction_id"])
    return {c: tuple(sorted(ids)) for c, ids in out.items()}


def review_state(reviews: Sequence[dict], corrections: Sequence[dict]) -> dict[str, str]:
    """prediction id -> what reviewers did to it, e.g. 'reviewed, corrected, tag:date'."""
    marks: dict[str, list[str]] = defaultdict(list)
    for r in reviews:
        if r.get("prediction_id"):
            mark = f"tag:{r.get('category')}" if r.get("action") == "tag" else \
                str(r.get("action", "")).replace("_", " ")
            marks[r["prediction_id"]].append(mark)
    for c in corrections:
        if c.get("prediction_id"):
            marks[c["prediction_id"]].append("corrected")
    return {pid: ", ".join(sorted(set(m))) for pid, m in marks.items()}


def item_history(reviews: Sequence[dict], corrections: Sequence[dict], task_id: str,
                 example_id: str) -> list[dict]:
    """Every review and correction of one item (any model), oldest first."""
    def when(record: dict) -> str:  # stored rows hold timestamps, inbox lines ISO strings
        return str(record.get("created_at") or "").replace("T", " ")

    rows = [{"when": when(r), "who": r.get("reviewer"),
             "what": r.get("action"), "note": r.get("category") or r.get("note") or ""}
            for r in reviews if r.get("task_id") == task_id and r.get("example_id") == example_id]
    rows += [{"when": when(c), "who": c.get("reviewer"),
              "what": "correction", "note": c.get("corrected_output")}
             for c in corrections
             if c.get("task_id") == task_id and c.get("example_id") == example_id]
    return sorted(rows, key=lambda r: r["when"])


# ------------------------------------------------------------------ blind votes

def pick_item(items: Sequence[dict], done: set[str], seed: int, round_: int
              ) -> tuple[dict, bool] | None:
    """A seeded choice of an item not voted yet, and whether to show model 2 first."""
    left = [i for i in items if i["example_id"] not in done]
    if not left:
        return None
    rng = random.Random(f"{seed}:{round_}")
    return left[rng.randrange(len(left))], rng.random() < 0.5


def vote_record(item: dict, model_a: str, model_b: str, flipped: bool, choice: str,
                voter: str, seed: int, round_: int, split: str) -> dict:
    """An inbox vote: the on-screen choice mapped back to (model_a, model_b), order recorded."""
    if choice not in VOTE_CHOICES:
        raise ValueError(f"unknown vote {choice!r}")
    verdict = {"A": "B", "B": "A"}.get(choice, choice) if flipped else choice
    shown = (model_b, model_a) if flipped else (model_a, model_b)
    return {"task_id": item["task_id"], "example_id": item["example_id"], "model_a": model_a,
            "model_b": model_b, "judge": "human", "verdict": verdict, "voter": voter,
            "shown_first": shown[0],
            "detail": {"seed": seed, "round": round_, "split": split, "shown": list(shown),
                       "clicked": choice}}


def voted_items(matches: Sequence[dict], model_a: str, model_b: str, voter: str) -> set[str]:
    """Example ids this voter has already judged for this pair of models (either order)."""
    pair = {model_a, model_b}
    return {m["example_id"] for m in matches if m.get("judge") == "human"
            and m.get("voter") == voter and {m["model_a"], m["model_b"]} == pair}


# ------------------------------------------------------------------ ratings

def _outcomes(matches: Sequence[dict]) -> list[rating.Outcome]:
    return rating.outcomes_from_verdicts([(m["model_a"], m["model_b"], m["verdict"])
                                          for m in matches])


def boards(matches: Sequence[dict], n_boot: int = 100, seed: int = 0
           ) -> dict[str, list[rating.RatingRow]]:
    """Bradley-Terry leaderboard per judge and over all judges ('all')."""
    out = {}
    for judge in sorted({m["judge"] for m in matches}) + ["all"]:
        subset = [m for m in matches if judge == "all" or m["judge"] == judge]
        out[judge] = rating.leaderboard(_outcomes(subset), n_boot=n_boot, seed=seed)
    return out


def board_rows(board: Sequence[rating.RatingRow], names: dict[str, str]) -> list[dict]:
    return [{"rank": r.rank, "model": name_of(names, r.model), "rating": round(r.rating),
             "95% low": round(r.lower), "95% high": round(r.upper), "matches": r.n_matches,
             "W/L/T": f"{r.wins:.0f}/{r.losses:.0f}/{r.ties:.0f}"} for r in board]


def win_rates(matches: Sequence[dict], names: dict[str, str]) -> list[dict]:
    """Long-form win-rate matrix: one row per (row model, column model) that met."""
    models, rates = rating.win_rate_matrix(_outcomes(matches))
    return [{"model": name_of(names, a), "opponent": name_of(names, b),
             "win rate": float(rates[i, j])}
            for i, a in enumerate(models) for j, b in enumerate(models)
            if i != j and rates[i, j] == rates[i, j]]


def judge_agreement(matches: Sequence[dict]) -> dict[str, tuple[float | None, int]]:
    """Per automatic judge: (share agreeing with human votes, shared pairs). Pairs are keyed by
    (example, models in sorted order) so votes cast in either order meet."""
    by_judge: dict[str, dict] = defaultdict(dict)
    for m in matches:
        key, verdict = (m.get("example_id"), m["model_a"], m["model_b"]), m["verdict"]
        if m["model_a"] > m["model_b"]:
            key = (m.get("example_id"), m["model_b"], m["model_a"])
            verdict = {"A": "B", "B": "A"}.get(verdict, verdict)
        by_judge[m["judge"]][key] = verdict
    human = by_judge.get("human", {})
    return {j: rating.agreement(v, human) for j, v in sorted(by_judge.items()) if j != "human"}


# ------------------------------------------------------------------ benchmarks and gate

def benchmark_table(headlines: Sequence[dict], champion: str | None,
                    names: dict[str, str]) -> list[dict]:
    """One row per benchmark metric and setting (version, limit, shots): each model's value,
    champion first, then each other model's difference to the champion ('d <model>').
    'better' says which direction is better for the metric."""
    models = sorted({r["model_id"] for r in headlines}, key=lambda m: (m != champion, m))
    label = {m: name_of(names, m) + (" (champion)" if m == champion else "") for m in models}
    table: dict[tuple, dict] = {}
    for r in headlines:
        key = (r["benchmark"], r["metric"], r["benchmark_version"], r["limit_n"], r["shots"])
        row = table.setdefault(key, {
            "benchmark": r["benchmark"], "metric": r["metric"],
            "better": "lower" if r.get("higher_is_better") is False else "higher",
            "limit": r["limit_n"], "shots": r["shots"], **{label[m]: None for m in models}})
        row[label[r["model_id"]]] = r["value"]
    for row in table.values():
        base = row.get(label.get(champion, ""))
        for m in models:
            if m != champion and champion is not None:
                value = row[label[m]]
                row[f"d {label[m]}"] = None if None in (value, base) else value - base
    return [table[k] for k in sorted(table)]


def gate_reasons(reasons: str | list | None) -> list[dict]:
    """Stored gate reasons (JSON) as rows with a plain-text mark, the check's result ("cannot
    tell" when it had too few items), its difference, interval and minimum detectable effect
    (None in reasons stored before the gate stated them)."""
    items = json.loads(reasons) if isinstance(reasons, str) else (reasons or [])
    return [{"": "pass" if r.get("passed") else "FAIL", "check": r.get("check"),
             "result": r.get("status"), "difference": r.get("delta"),
             "interval": _interval(r.get("lower"), r.get("upper")), "MDE": r.get("mde"),
             "detail": r.get("detail")} for r in items]


def _interval(lower: float | None, upper: float | None) -> str | None:
    return None if lower is None or upper is None else f"[{lower:+.3f}, {upper:+.3f}]"


# ------------------------------------------------------------------ reviewers

HUMAN_VERDICTS = {"answer_ok": True, "answer_wrong": False}  # review action -> answer passes


def human_verdicts(reviews: Sequence[dict]) -> dict[str, dict[str, bool]]:
    """prediction id -> reviewer -> that reviewer's latest pass/fail verdict on the answer."""
    out: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in sorted(reviews, key=lambda r: str(r.get("created_at") or "").replace("T", " ")):
        if r.get("action") in HUMAN_VERDICTS and r.get("prediction_id"):
            out[r["prediction_id"]][r.get("reviewer") or ""] = HUMAN_VERDICTS[r["action"]]
    return dict(out)


def rubric_agreement(rubric_rows: Sequence[dict], reviews: Sequence[dict]
                     ) -> tuple[float | None, int]:
    """(share of items where the rubric's pass/fail matches the reviewers', n items). An item
    counts when reviewers gave it a verdict; reviewers split evenly on it leave it out."""
    graded = {r["prediction_id"]: bool(r["passed"]) for r in rubric_rows}
    agree = n = 0
    for pid, by_reviewer in human_verdicts(reviews).items():
        yes = sum(by_reviewer.values())
        if pid not in graded or 2 * yes == len(by_reviewer):
            continue
        n += 1
        agree += graded[pid] == (2 * yes > len(by_reviewer))
    return (agree / n if n else None), n


def reviewer_counts(reviews: Sequence[dict], corrections: Sequence[dict],
                    votes: Sequence[dict]) -> list[dict]:
    """One row per person: how many reviews, corrections and votes they made."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"reviews": 0, "corrections": 0,
                                                             "votes": 0})
    for kind, rows, who in (("reviews", reviews, "reviewer"),
                            ("corrections", corrections, "reviewer"),
                            ("votes", [v for v in votes if v.get("judge") == "human"], "voter")):
        for row in rows:
            counts[row.get(who) or "(unknown)"][kind] += 1
    return [{"reviewer": name, **c} for name, c in sorted(counts.items())]


def _pairwise(labels: dict[str, dict], what: str) -> list[dict]:
    """labels: reviewer -> item key -> label; one row per pair of reviewers sharing items."""
    rows = []
    names = sorted(labels)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = set(labels[a]) & set(labels[b])
            if shared:
                same = sum(labels[a][k] == labels[b][k] for k in shared)
                rows.append({"reviewers": f"{a} / {b}", "on": what,
                             "agreement": same / len(shared), "items": len(shared)})
    return rows


def reviewer_agreement(reviews: Sequence[dict], votes: Sequence[dict]) -> list[dict]:
    """Agreement between each two reviewers on the items both judged: answer verdicts (right /
    wrong) and blind votes (oriented so votes cast in either order meet)."""
    verdicts: dict[str, dict] = defaultdict(dict)
    for pid, by_reviewer in human_verdicts(reviews).items():
        for reviewer, ok in by_reviewer.items():
            verdicts[reviewer][pid] = ok
    ballots: dict[str, dict] = defaultdict(dict)
    for v in votes:
        if v.get("judge") != "human" or not v.get("verdict"):
            continue
        key, verdict = (v.get("example_id"), v["model_a"], v["model_b"]), v["verdict"]
        if v["model_a"] > v["model_b"]:
            key = (v.get("example_id"), v["model_b"], v["model_a"])
            verdict = {"A": "B", "B": "A"}.get(verdict, verdict)
        ballots[v.get("voter") or ""][key] = verdict
    return _pairwise(verdicts, "answer verdicts") + _pairwise(ballots, "votes")
