"""Benchmarks & training page: per-model headline benchmarks with deltas vs the champion, loss
curves and throughput of training runs, generated data with provenance and rejection reasons."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from loop.app import views
from loop.store.app_queries import benchmark_headlines, model_names, snapshot
from loop.store.app_training import (
    current_champion,
    generated_examples,
    generated_summary,
    train_logs,
    training_runs,
)


def render(ws: Path) -> None:
    st.header("Benchmarks & training")
    with snapshot(ws) as store:
        if store is None:
            st.info("Nothing published yet: run `evalloop eval --task T` or `make demo`.")
            return
        names = views.display_names(model_names(store))
        bench, champion = benchmark_headlines(store), current_champion(store)
        runs, logs = training_runs(store), train_logs(store)
        summary = generated_summary(store)
    _benchmarks(bench, champion, names)
    _training(runs, logs, names)
    _generated(ws, summary)


def _benchmarks(bench: list[dict], champion: str | None, names: dict[str, str]) -> None:
    st.subheader("Benchmarks")
    if not bench:
        st.info("No benchmark results yet (the cycle's benchmarks stage or `evalloop bench`).")
        return
    st.caption(f"values per model; d = difference to the current champion, "
               f"{views.name_of(names, champion)}" if champion else
               "no champion recorded yet: no differences")
    rows = views.benchmark_table(bench, champion, names)
    st.dataframe(pd.DataFrame(rows), hide_index=True, height=35 * (min(len(rows), 25) + 1) + 3,
                 column_config={c: st.column_config.NumberColumn(
                     format="%+.3f" if c.startswith("d ") else "%.3f")
                     for c in rows[0] if c not in ("benchmark", "metric", "better", "limit",
                                                   "shots")})


def _training(runs: list[dict], logs: list[dict], names: dict[str, str]) -> None:
    st.subheader("Training loss and throughput")
    if not runs and not logs:
        st.info("No training runs yet (the cycle's train stage or `evalloop train`).")
        return
    if runs:
        st.dataframe(pd.DataFrame([{**r, "model_id": views.name_of(names, r["model_id"])}
                                   for r in runs]), hide_index=True)
    if not logs:
        return
    frame = pd.DataFrame(logs)
    left, right = st.columns(2)
    with left:
        st.markdown("**loss by step** (eval loss where logged)")
        long = frame.melt(id_vars=["train_id", "step"], value_vars=["loss", "eval_loss"],
                          var_name="kind").dropna(subset=["value"])
        long["series"] = long["train_id"] + " " + long["kind"]
        st.line_chart(long, x="step", y="value", color="series")
    with right:
        st.markdown("**throughput** (tokens/s by step)")
        st.line_chart(frame.dropna(subset=["tokens_per_s"]), x="step", y="tokens_per_s",
                      color="train_id")


def _generated(ws: Path, summary: list[dict]) -> None:
    st.subheader("Generated data: provenance and rejections")
    if not summary:
        st.info("No generated data yet (the cycle's targeted stage or `evalloop generate`).")
        return
    st.dataframe(pd.DataFrame(summary), hide_index=True)
    cols = st.columns(2)
    status = cols[0].selectbox("generated items: status", [None, "accepted", "rejected"],
                               format_func=lambda s: "any" if s is None else s)
    strategy = cols[1].selectbox("strategy", [None] + sorted({s["strategy"] for s in summary}),
                                 format_func=lambda s: "any" if s is None else s)
    with snapshot(ws) as store:
        items = generated_examples(store, status, strategy)
    st.markdown(f"**items** (newest {len(items)}; `source` says where each came from)")
    st.dataframe(pd.DataFrame(items), hide_index=True)
