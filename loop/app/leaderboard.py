"""Leaderboard page: Bradley-Terry ratings with 95% bootstrap intervals per judge and over all
judges (evals/rating.py), the win-rate heatmap, and how often each automatic judge agrees with
human votes. Stored matches and inbox votes both count, so a vote shows at once."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from loop.app import views
from loop.store.app_queries import all_matches, model_names, snapshot

N_BOOT, SEED = 200, 0


def render(ws: Path) -> None:
    st.header("Leaderboard (Bradley-Terry, 95% bootstrap intervals)")
    with snapshot(ws) as store:
        matches = all_matches(ws, store)
        names = views.display_names(model_names(store))
    if not matches:
        st.info("No matches yet: run `evalloop arena --task T --models A B` or vote in the "
                "Arena page.")
        return
    tasks = sorted({m.get("task_id") or "" for m in matches})
    if len(tasks) > 1:
        task = st.selectbox("task", [None] + tasks, format_func=lambda t: "all tasks"
                            if t is None else t)
        matches = [m for m in matches if task is None or (m.get("task_id") or "") == task]
    st.caption(f"{len(matches)} matches; ties and 'both bad' count half a win; {N_BOOT} "
               f"bootstrap resamples, seed {SEED}")
    per_judge = views.boards(matches, n_boot=N_BOOT, seed=SEED)
    st.subheader("judge: all (combined)")
    _interval_chart(per_judge["all"], names)
    st.dataframe(pd.DataFrame(views.board_rows(per_judge["all"], names)), hide_index=True)
    for judge, board in per_judge.items():
        if judge != "all":
            st.subheader(f"judge: {judge}")
            st.dataframe(pd.DataFrame(views.board_rows(board, names)), hide_index=True)
    _heatmap(views.win_rates(matches, names))
    _agreement(views.judge_agreement(matches))


def _interval_chart(board, names: dict[str, str]) -> None:
    frame = pd.DataFrame(views.board_rows(board, names))
    if frame.empty:
        return
    base = alt.Chart(frame).encode(y=alt.Y("model:N", sort=None, title=None,
                                           axis=alt.Axis(labelLimit=400)))
    chart = base.mark_rule(strokeWidth=3).encode(
        x=alt.X("95% low:Q", scale=alt.Scale(zero=False), title="rating (95% interval)"),
        x2="95% high:Q") + base.mark_point(filled=True, size=80).encode(x="rating:Q")
    st.altair_chart(chart, width="stretch", height=40 * len(frame) + 60)


def _heatmap(rows: list[dict]) -> None:
    st.subheader("Win rate (row model vs column model)")
    if not rows:
        st.info("No decided matches between two models yet.")
        return
    frame = pd.DataFrame(rows)
    side = 70 * frame["model"].nunique()
    base = alt.Chart(frame).encode(
        x=alt.X("opponent:N", title="against", axis=alt.Axis(labelAngle=-30, labelLimit=400)),
        y=alt.Y("model:N", title=None, axis=alt.Axis(labelLimit=400)))
    chart = base.mark_rect().encode(
        color=alt.Color("win rate:Q", scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1])))
    chart += base.mark_text().encode(text=alt.Text("win rate:Q", format=".2f"))
    st.altair_chart(chart, width=side + 420, height=side + 220)


def _agreement(agreement: dict) -> None:
    st.subheader("Judge agreement with human votes")
    if not agreement:
        st.info("Only human votes so far: no automatic judge to compare.")
        return
    st.dataframe(pd.DataFrame([{"judge": judge, "shared pairs": n,
                                "agreement": "no shared pairs yet" if not n else f"{rate:.0%}"}
                               for judge, (rate, n) in agreement.items()]), hide_index=True)
