"""Failures page: filter failures, open one (prompt, reference, output, diff, every check,
similarity, review history) and act on it: mark reviewed, flag the reference as wrong, write a
corrected answer (used by the next targeted-data stage), tag a new failure category.

Actions go to the review inbox through widget callbacks, which run before the page renders
again, so the item's history shows them at once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from loop.store import inbox
from loop.app import views, widgets
from loop.store.app_failures import (
    FailureFilter,
    check_results,
    failure_options,
    filter_failures,
    rubric_results,
)
from loop.store.app_queries import has, model_names, snapshot, with_inbox

PAGE_SIZE = 200


def render(ws: Path, reviewer: str) -> None:
    st.header("Failures")
    widgets.flash()
    with snapshot(ws) as store:
        if not has(store, "failures"):
            st.info("No failures stored yet: run `evalloop eval --task T` (or a cycle).")
            return
        names = views.display_names(model_names(store))
        reviews = with_inbox(ws, store, "reviews")
        corrections = with_inbox(ws, store, "corrections")
        state = views.review_state(reviews, corrections)
        _rubric_agreement(rubric_results(store), reviews)
        flt = _filters(failure_options(store), names, views.tagged_ids(reviews), state)
        page = filter_failures(store, flt, limit=PAGE_SIZE)
        st.caption(f"{page.total:,} failures match; {len(page.rows)} failures shown "
                   f"(the first {PAGE_SIZE} by run and item)")
        if not page.rows:
            return
        row = _table_and_choice(page.rows, names, state)
        checks = check_results(store, row["prediction_id"], row["example_id"])
    _detail(row, names, checks, views.item_history(reviews, corrections, row["task_id"],
                                                   row["example_id"]))
    _actions(ws, row, reviewer)


def _rubric_agreement(rubric_rows: list[dict], reviews: list[dict]) -> None:
    """How often the rubric judge's pass/fail matches reviewers' 'answer is right/wrong'."""
    if not rubric_rows:
        return
    share, n = views.rubric_agreement(rubric_rows, reviews)
    st.caption("rubric judge agrees with reviewers on "
               + (f"{share:.0%} of {n} reviewed items" if n else
                  "- (no item with a rubric score has a reviewer verdict yet: 'answer is "
                  "right' / 'answer is wrong' below)"))


def _any(value) -> str:
    return "any" if value is None else str(value)


def _filters(opts: dict, names: dict[str, str], tags: dict[str, tuple[str, ...]],
             state: dict[str, str]) -> FailureFilter:
    cols = st.columns(4)
    task = cols[0].selectbox("task", [None] + opts["task"], format_func=_any)
    model = cols[1].selectbox("model", [None] + opts["model"],
                              format_func=lambda m: _any(m) if m is None else names.get(m, m))
    cycle = cols[2].selectbox("cycle", [None] + opts["cycle"], format_func=_any)
    check = cols[3].selectbox("failed check", [None] + opts["check"], format_func=_any)
    cols = st.columns(5)
    category = cols[0].selectbox("failure category",
                                 [None] + sorted(set(opts["category"]) | set(tags)),
                                 format_func=_any)
    labels = dict(opts["cluster"])
    cluster = cols[1].selectbox("cluster", [None] + list(labels),
                                format_func=lambda c: _any(c) if c is None else labels[c])
    signature = cols[2].selectbox("signature", [None] + opts.get("signature", []),
                                  format_func=_any, help="what went wrong: missing_key:..., "
                                  "label:gold->predicted, invalid_json, ...")
    search = cols[3].text_input("search text", help="instruction, input, reference or output; "
                                "case-insensitive, taken literally")
    hide = cols[4].checkbox("hide reviewed", help="leave out failures a reviewer acted on")
    return FailureFilter(task, model, cycle, category, cluster, check, search.strip(),
                         tagged=tags.get(category, ()) if category else (),
                         hide=tuple(sorted(state)) if hide else (), signature=signature)


def _table_and_choice(rows: list[dict], names: dict[str, str], state: dict[str, str]) -> dict:
    def clip(text: str | None) -> str:
        text = (text or "").replace("\n", " ")
        return text if len(text) <= 80 else text[:77] + "..."

    st.dataframe(pd.DataFrame([{
        "item": r["example_id"], "model": names.get(r["model_id"], r["model_id"]),
        "categories": ", ".join(r["categories"] or []),
        "signatures": ", ".join(r.get("signatures") or []),
        "failed checks": ", ".join(r["failed_checks"] or []),
        "similarity": r["similarity"], "review": state.get(r["prediction_id"], ""),
        "output": clip(r["output"]), "reference": clip(r["reference"])} for r in rows]),
        hide_index=True, height=280)
    keys = list(range(len(rows)))
    choice = st.selectbox("open failure", keys, format_func=lambda k: (
        f"{rows[k]['example_id']} - {names.get(rows[k]['model_id'], rows[k]['model_id'])} - "
        f"{', '.join(rows[k]['categories'] or [])}"))
    return rows[choice]


def _detail(row: dict, names: dict[str, str], checks: list[dict], history: list[dict]) -> None:
    st.subheader(f"Item {row['example_id']} ({row['example_category'] or 'no category'})")
    similarity = row["similarity"]
    st.caption(f"task {row['task_id']} - model {names.get(row['model_id'], row['model_id'])} - "
               f"run {row['run_id']} - cluster {row['cluster_label'] or row['cluster_id']} - "
               f"categories {', '.join(row['categories'] or [])} - signatures "
               f"{', '.join(row.get('signatures') or []) or 'n/a'} - similarity to reference "
               f"{'n/a' if similarity is None else f'{similarity:.3f}'}")
    widgets.text_block("prompt", row["prompt"])
    left, right = st.columns(2)
    widgets.text_block("reference", row["reference"], left)
    widgets.text_block("output", row["output"], right)
    st.markdown("**diff: reference to output** (red: only in the reference, green: only in "
                "the output)")
    st.markdown(views.diff_html(row["reference"], row["output"]), unsafe_allow_html=True)
    st.markdown("**check results**")
    st.dataframe(pd.DataFrame(checks) if checks else pd.DataFrame(
        [{"check": "no stored check results for this prediction"}]), hide_index=True)
    if history:
        st.markdown("**review history of this item**")
        st.dataframe(pd.DataFrame(history), hide_index=True)


def _append(ws: Path, kind: str, record: dict, message: str) -> None:
    inbox.append(ws, kind, record)
    widgets.set_flash(message)


def _correct(ws: Path, base: dict, field: str) -> None:
    text = st.session_state.get(field, "")
    if text.strip():
        _append(ws, "corrections", {**base, "corrected_output": text},
                "correction saved: the next targeted-data stage trains on it")
    else:
        widgets.set_flash("an empty correction was not saved")


def _tag(ws: Path, base: dict, field: str) -> None:
    tag = st.session_state.get(field, "").strip()
    if tag:
        _append(ws, "reviews", {**base, "action": "tag", "category": tag}, f"tagged {tag}")


def _actions(ws: Path, row: dict, reviewer: str) -> None:
    key = f"{row['run_id']}-{row['example_id']}"
    base = {"task_id": row["task_id"], "example_id": row["example_id"],
            "prediction_id": row["prediction_id"], "reviewer": reviewer}
    st.markdown("**review**")
    cols = st.columns(4)
    cols[0].button("mark reviewed", key=f"reviewed-{key}", on_click=_append, args=(
        ws, "reviews", {**base, "action": "reviewed"}, "marked reviewed"))
    cols[1].button("mark the reference wrong", key=f"refwrong-{key}", on_click=_append, args=(
        ws, "reviews", {**base, "action": "reference_wrong"}, "reference flagged as wrong"))
    # explicit pass/fail verdicts: what rubric judges and reviewers are compared on
    cols[2].button("answer is right", key=f"ok-{key}", on_click=_append, args=(
        ws, "reviews", {**base, "action": "answer_ok"}, "verdict saved: answer is right"))
    cols[3].button("answer is wrong", key=f"wrong-{key}", on_click=_append, args=(
        ws, "reviews", {**base, "action": "answer_wrong"}, "verdict saved: answer is wrong"))
    with st.form(f"correction-{key}"):
        st.text_area("corrected answer", value=row["reference"], key=f"fix-{key}")
        st.form_submit_button("save correction", on_click=_correct,
                              args=(ws, base, f"fix-{key}"))
    with st.form(f"tagform-{key}"):
        st.text_input("new failure category", key=f"tag-{key}")
        st.form_submit_button("tag", on_click=_tag, args=(ws, base, f"tag-{key}"))
