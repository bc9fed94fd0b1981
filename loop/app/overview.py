"""Overview page: cycles over time, champion history, pass-rate and benchmark trends, the latest
gate decision with its reasons and the prompt arm beside it."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from loop.app import views
from loop.store.app_overview import (
    champion_history,
    cycles,
    pass_rate_trend,
    latest_prompt_arm,
    stage_times,
)
from loop.store.app_queries import (
    benchmark_headlines,
    all_matches,
    model_names,
    snapshot,
    with_inbox,
)


def render(ws: Path) -> None:
    st.header("Overview")
    with snapshot(ws) as store:
        if store is None:
            st.info("Nothing published yet: run `evalloop eval --task T` or `make demo`.")
            return
        names = views.display_names(model_names(store))
        cycle_rows, champs = cycles(store), champion_history(store)
        stages = stage_times(store, cycle_rows[-1]["cycle_id"]) if cycle_rows else []
        arm = latest_prompt_arm(store)
        trend, bench = pass_rate_trend(store), benchmark_headlines(store)
        reviews, corrections = with_inbox(ws, store, "reviews"), with_inbox(ws, store,
                                                                            "corrections")
        votes = all_matches(ws, store)
    if not (cycle_rows or trend or bench):
        st.info("Nothing evaluated yet: run `evalloop eval --task T` or `make demo`.")
        return
    _latest_gate(cycle_rows)
    _prompt_arm(arm)
    _cycles(cycle_rows)
    _stage_times(stages, cycle_rows)
    _champions(champs, cycle_rows)
    _pass_rates(trend, names)
    _benchmarks(bench, names)
    _reviewers(reviews, corrections, votes)


def _latest_gate(cycle_rows: list[dict]) -> None:
    decided = [c for c in cycle_rows if c["promote"] is not None]
    if not decided:
        if cycle_rows:
            st.info("No gate decision yet: the latest cycle has not reached its gate.")
        return
    last = decided[-1]
    verdict = "PROMOTED the candidate" if last["promote"] else "kept the champion"
    st.subheader(f"Latest gate decision: {verdict}")
    cols = st.columns(3)
    champ, cand = last["champion_pass_rate"], last["candidate_pass_rate"]
    cols[0].metric("champion test pass rate", f"{champ:.1%}" if champ is not None else "-")
    cols[1].metric("candidate test pass rate", f"{cand:.1%}" if cand is not None else "-",
                   delta=f"{cand - champ:+.1%}" if None not in (champ, cand) else None)
    cols[2].metric("p-value (paired)", f"{last['p_value']:.3g}"
                   if last["p_value"] is not None else "-")
    st.caption(f"cycle {last['cycle_id']} on task {last['task_id']}")
    reasons = views.gate_reasons(last["reasons"])
    st.dataframe(pd.DataFrame(reasons), hide_index=True, height=35 * (len(reasons) + 1) + 3)


def _prompt_arm(arm: dict | None) -> None:
    """The latest cycle's champion prompted zero- and k-shot on dev, beside the candidate."""
    if not arm or arm.get("skipped"):
        return
    k = arm["shots"]
    st.subheader(f"Prompt arm: the champion {k}-shot beside the candidate (dev)")
    st.write(arm["note"])
    st.caption(f"cycle {arm['cycle_id']}: would prompting the champion do, without a fine-tune?")
    rows = [{"category": c, "n": r["n"], "champion zero-shot": r["zero_shot"],
             f"champion {k}-shot": r["k_shot"], "candidate": r["candidate"]}
            for c, r in arm["per_category"].items()]
    rows.append({"category": "overall", "n": arm["zero_shot"]["n"],
                 "champion zero-shot": arm["zero_shot"]["pass_rate"],
                 f"champion {k}-shot": arm["k_shot"]["pass_rate"],
                 "candidate": arm["candidate_pass_rate"]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="percent")
        for c in ("champion zero-shot", f"champion {k}-shot", "candidate")})


def _cycles(cycle_rows: list[dict]) -> None:
    if not cycle_rows:
        st.info("No cycle has run yet: `evalloop cycle --task T` or `make demo`.")
        return
    st.subheader("Cycles over time")
    frame = pd.DataFrame(cycle_rows).drop(columns=["reasons"])
    frame["outcome"] = [f"{c['status']}: {c['current_stage'] or ''}" if c["status"] != "done"
                        else "promoted" if c["promote"] else "kept" for c in cycle_rows]
    for column in ("champion_name", "candidate_name"):
        frame[column] = frame[column].map(lambda n: views.short_name(n) if isinstance(n, str)
                                          else n)
    # stored times are naive UTC; a running cycle's bar ends now
    timeline = frame.assign(end=frame["finished_at"].fillna(
        pd.Timestamp.now(tz="UTC").tz_localize(None)))
    st.altair_chart(alt.Chart(timeline).mark_bar(size=14).encode(
        x=alt.X("started_at:T", title="time", axis=alt.Axis(format="%m-%d %H:%M")),
        x2="end:T",
        y=alt.Y("cycle_id:N", sort=None, title=None), color="outcome:N",
        tooltip=["cycle_id", "task_id", "outcome", "started_at", "finished_at"]),
        width="stretch", height=28 * len(frame) + 80)
    st.dataframe(frame[["cycle_id", "task_id", "outcome", "stages_done", "started_at",
                        "finished_at", "champion_name", "candidate_name",
                        "champion_pass_rate", "candidate_pass_rate", "p_value"]],
                 hide_index=True)


def _stage_times(stages: list[dict], cycle_rows: list[dict]) -> None:
    """Where the latest cycle's time went, stage by stage."""
    if not stages:
        return
    st.subheader("Where the time went (latest cycle)")
    frame = pd.DataFrame(stages)
    frame["seconds"] = frame["seconds"].astype(float).round(1)
    st.altair_chart(alt.Chart(frame).mark_bar().encode(
        x=alt.X("seconds:Q", title="wall seconds"), y=alt.Y("stage:N", sort=None, title=None),
        color="status:N", tooltip=["stage", "status", "seconds"]), width="stretch")
    st.caption(f"cycle {cycle_rows[-1]['cycle_id']}: {frame['seconds'].sum():.0f} s in "
               f"{len(frame)} stages")


def _champions(champs: list[dict], cycle_rows: list[dict]) -> None:
    st.subheader("Champion history")
    if not champs:
        first = cycle_rows[0]["champion_name"] if cycle_rows else None
        st.write(f"No promotion yet: the champion is the base model"
                 f"{f' ({first})' if first else ''}.")
        return
    st.dataframe(pd.DataFrame([{"since": c["since"], "task": c["task_id"],
                                "champion": views.short_name(c["model_name"]),
                                "cycle": c["cycle_id"], "reason": c["reason"]}
                               for c in champs]), hide_index=True)


def _pass_rates(trend: list[dict], names: dict[str, str]) -> None:
    if not trend:
        return
    st.subheader("Pass rate per evaluation run")
    frame = pd.DataFrame([{"finished": t["finished_at"], "pass rate": t["pass_rate"],
                           "series": f"{views.name_of(names, t['model_id'])} / "
                                     f"{t['task_id']} {t['split']}"} for t in trend])
    st.altair_chart(alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("finished:T", title="run finished", axis=alt.Axis(format="%m-%d %H:%M")),
        y=alt.Y("pass rate:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=alt.Color("series:N", legend=alt.Legend(orient="bottom", columns=1,
                                                      labelLimit=600)),
        tooltip=["series", "finished", alt.Tooltip("pass rate:Q", format=".1%")]),
        width="stretch")


def _benchmarks(bench: list[dict], names: dict[str, str]) -> None:
    if not bench:
        st.info("No benchmark results yet (a cycle's benchmarks stage or `evalloop bench`).")
        return
    st.subheader("Benchmark trend (headline metric per model, oldest model first)")
    frame = pd.DataFrame([{"measured": b["created_at"], "value": b["value"],
                           "benchmark": f"{b['benchmark']} {b['metric']}",
                           "model": views.name_of(names, b["model_id"])} for b in bench])
    order = list(frame.sort_values("measured")["model"].drop_duplicates())
    chart = alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("model:N", sort=order, title=None,
                axis=alt.Axis(labelAngle=-20, labelLimit=220)),
        y=alt.Y("value:Q", scale=alt.Scale(zero=False), title=None),
        tooltip=["model", "benchmark", "measured", "value"]).properties(width=240, height=150)
    st.altair_chart(chart.facet(facet=alt.Facet("benchmark:N", title=None), columns=3)
                    .resolve_scale(y="independent"), width="content")


def _reviewers(reviews: list[dict], corrections: list[dict], votes: list[dict]) -> None:
    """Who reviewed what, and how often two reviewers agree on the items both judged."""
    counts = views.reviewer_counts(reviews, corrections, votes)
    if not counts:
        return
    st.subheader("Reviewers")
    st.dataframe(pd.DataFrame(counts), hide_index=True)
    agreement = views.reviewer_agreement(reviews, votes)
    if agreement:
        st.markdown("**Agreement between reviewers** (items both of them judged)")
        st.dataframe(pd.DataFrame(agreement), hide_index=True)
    else:
        st.caption("No item judged by two reviewers yet, so no agreement between reviewers.")
