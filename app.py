"""evalloop review app (Streamlit): overview, failures, arena, leaderboard, benchmarks & training.

    evalloop app --workspace W          (binds 127.0.0.1; or: streamlit run app.py -- --workspace W)

Reads the snapshot a writer publishes; writes reviews, corrections and votes to the inbox, so it
keeps working while a nightly cycle holds the database.
"""

from __future__ import annotations

import argparse
import difflib
import html
import json
import os
import random
from pathlib import Path

import pandas as pd
import streamlit as st

from loop import inbox
from loop.app_queries import (all_matches, check_results, filter_failures, has, options,
                              ratings_by_judge, shared_items, snapshot)

PAGES = ("Overview", "Failures", "Arena", "Leaderboard", "Benchmarks & training")


def workspace() -> Path:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default=os.environ.get("EVALLOOP_WORKSPACE",
                                                              "evalloop-workspace"))
    args, _ = parser.parse_known_args()
    return Path(args.workspace)


def overview(ws: Path) -> None:
    st.header("Overview")
    with snapshot(ws) as store:
        if not has(store, "cycles") or not store.count("cycles"):
            st.info("No cycle has run yet: `evalloop cycle --task T` or `make demo`.")
            return
        cycles = store.query("SELECT c.cycle_id, c.task_id, c.status, c.started_at, "
                             "c.finished_at, g.promote, g.champion_pass_rate, "
                             "g.candidate_pass_rate, g.p_value, g.reasons FROM cycles c LEFT "
                             "JOIN gate_decisions g USING (cycle_id) ORDER BY c.started_at")
        champions = store.query("SELECT task_id, model_name, since, reason FROM champions "
                                "ORDER BY since")
    frame = pd.DataFrame(cycles)
    st.subheader("Cycles")
    st.dataframe(frame.drop(columns=["reasons"]), hide_index=True)
    trend = frame.dropna(subset=["champion_pass_rate"]).set_index("started_at")
    if not trend.empty:
        st.subheader("Test pass rate per cycle")
        st.line_chart(trend[["champion_pass_rate", "candidate_pass_rate"]])
    st.subheader("Champion history")
    st.dataframe(pd.DataFrame(champions) if champions else pd.DataFrame(
        [{"model_name": "base model (no promotion yet)"}]), hide_index=True)
    last = cycles[-1]
    if last["reasons"]:
        st.subheader(f"Latest gate decision: {'PROMOTED' if last['promote'] else 'kept'}")
        for reason in json.loads(last["reasons"]):
            st.write(f"{'[ok]' if reason['passed'] else '[NO]'} **{reason['check']}**: "
                     f"{reason['detail']}")


def _diff_html(reference: str, output: str) -> str:
    parts = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, reference, output).get_opcodes():
        if op in ("delete", "replace"):
            parts.append(f"<del style='background:#fdd'>{html.escape(reference[a0:a1])}</del>")
        if op in ("insert", "replace"):
            parts.append(f"<ins style='background:#dfd'>{html.escape(output[b0:b1])}</ins>")
        if op == "equal":
            parts.append(html.escape(reference[a0:a1]))
    return "<pre style='white-space:pre-wrap'>" + "".join(parts) + "</pre>"


def failures(ws: Path) -> None:
    st.header("Failures")
    with snapshot(ws) as store:
        if not has(store, "failures") or not store.count("failures"):
            st.info("No failures stored yet: run `evalloop eval`.")
            return
        cols = st.columns(3)
        task = cols[0].selectbox("task", [None] + options(
            store, "SELECT DISTINCT task_id AS v FROM failures ORDER BY v"))
        model = cols[1].selectbox("model", [None] + options(
            store, "SELECT DISTINCT model_id AS v FROM failures ORDER BY v"))
        cycle = cols[2].selectbox("cycle", [None] + options(
            store, "SELECT cycle_id AS v FROM cycles ORDER BY started_at DESC"))
        cols = st.columns(4)
        category = cols[0].selectbox("failure category", [None] + options(
            store, "SELECT DISTINCT unnest(categories) AS v FROM failures ORDER BY v"))
        cluster = cols[1].selectbox("cluster", [None] + options(
            store, "SELECT DISTINCT cluster_id AS v FROM failures ORDER BY v"))
        check = cols[2].selectbox("failed check", [None] + options(
            store, "SELECT DISTINCT unnest(failed_checks) AS v FROM failures ORDER BY v"))
        search = cols[3].text_input("search text")
        rows = filter_failures(store, task, model, cycle, category, cluster, check, search)
        st.caption(f"{len(rows)} failures shown (at most 200)")
        if not rows:
            return
        st.dataframe(pd.DataFrame(rows)[["example_id", "example_category", "categories",
                                         "similarity", "output", "reference"]], hide_index=True)
        choice = st.selectbox("detail", [r["example_id"] for r in rows])
        row = next(r for r in rows if r["example_id"] == choice)
        checks = check_results(store, row["prediction_id"], row["example_id"])
    st.subheader(f"Example {row['example_id']} ({row['example_category']})")
    st.text_area("prompt", row["prompt"], height=120, disabled=True)
    left, right = st.columns(2)
    left.text_area("reference", row["reference"], disabled=True)
    right.text_area("output", row["output"], disabled=True)
    st.markdown("**diff (reference → output)**", unsafe_allow_html=False)
    st.markdown(_diff_html(row["reference"], row["output"]), unsafe_allow_html=True)
    st.write(f"similarity to reference: {row['similarity']:.3f}")
    st.dataframe(pd.DataFrame(checks), hide_index=True)
    _review_actions(ws, row)


def _review_actions(ws: Path, row: dict) -> None:
    reviewer = st.text_input("reviewer", value=os.environ.get("USER", "reviewer"))
    base = {"task_id": row["task_id"], "example_id": row["example_id"],
            "prediction_id": row["prediction_id"], "reviewer": reviewer}
    cols = st.columns(2)
    if cols[0].button("mark reviewed"):
        inbox.append(ws, "reviews", {**base, "action": "reviewed"})
        st.success("marked reviewed")
    if cols[1].button("mark the reference wrong"):
        inbox.append(ws, "reviews", {**base, "action": "reference_wrong"})
        st.success("reference flagged")
    with st.form("correction"):
        corrected = st.text_area("corrected answer", value=row["reference"])
        if st.form_submit_button("save correction") and corrected.strip():
            inbox.append(ws, "corrections", {**base, "corrected_output": corrected})
            st.success("correction saved: the next targeted-data stage trains on it")
    with st.form("tag"):
        tag = st.text_input("new failure category")
        if st.form_submit_button("tag") and tag.strip():
            inbox.append(ws, "reviews", {**base, "action": "tag", "category": tag.strip()})
            st.success(f"tagged {tag.strip()}")


def arena(ws: Path) -> None:
    st.header("Arena: blind A/B votes")
    with snapshot(ws) as store:
        models = options(store, "SELECT DISTINCT model_id AS v FROM runs WHERE kind = 'eval' "
                                "AND split = 'test' ORDER BY v") if has(store, "runs") else []
        if len(models) < 2:
            st.info("Two model versions with test predictions are needed "
                    "(`evalloop eval --split test` for each, or a cycle).")
            return
        cols = st.columns(2)
        model_a = cols[0].selectbox("model 1", models, index=0)
        model_b = cols[1].selectbox("model 2", models, index=1)
        items = shared_items(store, model_a, model_b) if model_a != model_b else []
    if not items:
        st.info("These two models share no test items.")
        return
    rng = random.Random(st.session_state.get("arena_round", 0))
    item = items[rng.randrange(len(items))]
    flipped = rng.random() < 0.5  # order randomised, recorded with the vote
    shown = (item["output_b"], item["output_a"]) if flipped else (item["output_a"],
                                                                  item["output_b"])
    st.text_area("prompt", f"{item['instruction']}\n{item['input']}".strip(), disabled=True)
    left, right = st.columns(2)
    left.text_area("answer A", shown[0], disabled=True)
    right.text_area("answer B", shown[1], disabled=True)
    voter = st.text_input("voter", value=os.environ.get("USER", "reviewer"), key="voter")
    buttons = st.columns(4)
    labels = {"A is better": "A", "B is better": "B", "tie": "tie", "both bad": "both_bad"}
    for col, (label, choice) in zip(buttons, labels.items()):
        if col.button(label, key=f"vote-{choice}"):
            verdict = choice
            if flipped and choice in ("A", "B"):
                verdict = "B" if choice == "A" else "A"
            inbox.append(ws, "votes", {"task_id": item["task_id"],
                                       "example_id": item["example_id"], "model_a": model_a,
                                       "model_b": model_b, "judge": "human", "verdict": verdict,
                                       "voter": voter, "shown_first": model_b if flipped
                                       else model_a})
            st.session_state["arena_round"] = st.session_state.get("arena_round", 0) + 1
            st.success("vote recorded")
    _leaderboard_table(ws, "all")


def _leaderboard_table(ws: Path, judge: str) -> None:
    with snapshot(ws) as store:
        matches = all_matches(ws, store)
        names = {r["model_id"]: r["name"] for r in store.query(
            "SELECT model_id, name FROM models")} if has(store, "models") else {}
    board = ratings_by_judge(matches).get(judge, []) if matches else []
    if not board:
        st.info("No matches yet.")
        return
    st.dataframe(pd.DataFrame([{"rank": r.rank, "model": names.get(r.model, r.model),
                                "rating": round(r.rating), "95% low": round(r.lower),
                                "95% high": round(r.upper), "matches": r.n_matches}
                               for r in board]), hide_index=True)


def leaderboard(ws: Path) -> None:
    st.header("Leaderboard (Bradley-Terry, 95% bootstrap intervals)")
    with snapshot(ws) as store:
        matches = all_matches(ws, store)
    if not matches:
        st.info("No matches yet: `evalloop arena` or vote in the Arena page.")
        return
    for judge in sorted({m["judge"] for m in matches}) + ["all"]:
        st.subheader(f"judge: {judge}")
        _leaderboard_table(ws, judge)
    from evals.rating import agreement, outcomes_from_verdicts, win_rate_matrix

    models, rates = win_rate_matrix(outcomes_from_verdicts(
        [(m["model_a"], m["model_b"], m["verdict"]) for m in matches]))
    st.subheader("Win rate (row vs column)")
    st.dataframe(pd.DataFrame(rates, index=models, columns=models).style.format("{:.2f}"))
    human = {(m["example_id"], m["model_a"], m["model_b"]): m["verdict"]
             for m in matches if m["judge"] == "human"}
    for judge in sorted({m["judge"] for m in matches} - {"human"}):
        auto = {(m["example_id"], m["model_a"], m["model_b"]): m["verdict"]
                for m in matches if m["judge"] == judge}
        rate, n = agreement(auto, human)
        st.write(f"{judge} vs human agreement: " +
                 (f"{rate:.0%} on {n} shared pairs" if n else "no shared pairs yet"))


def benchmarks_training(ws: Path) -> None:
    st.header("Benchmarks & training")
    with snapshot(ws) as store:
        if has(store, "benchmark_results") and store.count("benchmark_results"):
            st.subheader("Benchmarks")
            st.dataframe(pd.DataFrame(store.query(
                "SELECT model_name, benchmark, metric, value, stderr, n, limit_n, backend "
                "FROM benchmark_results WHERE task = benchmark ORDER BY benchmark, metric, "
                "model_name")), hide_index=True)
        else:
            st.info("No benchmark results yet.")
        if has(store, "train_logs") and store.count("train_logs"):
            st.subheader("Training loss and throughput")
            logs = pd.DataFrame(store.query("SELECT train_id, step, loss, eval_loss, "
                                            "tokens_per_s FROM train_logs ORDER BY step"))
            st.line_chart(logs.pivot_table(index="step", columns="train_id", values="loss"))
            st.dataframe(logs, hide_index=True)
        if has(store, "generated_examples") and store.count("generated_examples"):
            st.subheader("Generated data: provenance and rejections")
            st.dataframe(pd.DataFrame(store.query(
                "SELECT strategy, status, reason, count(*) AS n FROM generated_examples "
                "GROUP BY ALL ORDER BY n DESC")), hide_index=True)


def main() -> None:
    st.set_page_config(page_title="evalloop", layout="wide")
    ws = workspace()
    page = st.sidebar.radio("page", PAGES)
    st.sidebar.caption(f"workspace: {ws}")
    {"Overview": overview, "Failures": failures, "Arena": arena, "Leaderboard": leaderboard,
     "Benchmarks & training": benchmarks_training}[page](ws)


main()
