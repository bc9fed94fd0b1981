"""Arena page: blind A/B votes between two model versions on the items both answered.

The item and the side each model is shown on come from a seeded RNG (session seed, round); the
seed, round and shown order are stored with every vote. Keys A, B, T and X vote (S skips).
Votes go to the inbox as human matches and the leaderboard below updates at once."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pandas as pd
import streamlit as st

from loop.store import inbox
from loop.app import views, widgets
from loop.store.app_arena import arena_choices, shared_items
from loop.store.app_queries import all_matches, model_names, snapshot

SHORTCUTS = {"A": "A", "B": "B", "tie": "T", "both_bad": "X"}


def render(ws: Path, voter: str) -> None:
    st.header("Arena: blind A/B votes")
    widgets.flash()
    with snapshot(ws) as store:
        choices = arena_choices(store)
        names = views.display_names(model_names(store))
        picked = _pick_models(choices, names)
        if picked is None:
            return
        task, split, model_a, model_b = picked
        items = shared_items(store, task, split, model_a, model_b)
        matches = all_matches(ws, store)
    if not items:
        st.info("These two models share no evaluated items on this task and split.")
        return
    seed = st.session_state.setdefault("arena_seed", random.SystemRandom().randrange(2**31))
    round_ = st.session_state.setdefault("arena_round", 0)
    done = views.voted_items(matches, model_a, model_b, voter)
    st.caption(f"{len(done)} of {len(items)} shared items judged by {voter}; "
               f"seed {seed}, round {round_}")
    chosen = views.pick_item(items, done, seed, round_)
    if chosen is None:
        st.success("You have judged every shared item of these two models.")
    else:
        _ballot(ws, chosen, (task, split, model_a, model_b), voter, seed, round_, names)
    _live_board([m for m in matches if {m["model_a"], m["model_b"]} == {model_a, model_b}],
                names)


def _pick_models(choices: list[dict], names: dict[str, str]):
    """(task, split, model 1, model 2) chosen by the user, or None after explaining why not."""
    counts = Counter((c["task_id"], c["split"]) for c in choices)
    pairs = sorted(p for p, n in counts.items() if n >= 2)
    if not pairs:
        st.info("Two model versions evaluated on the same task and split are needed "
                "(`evalloop eval` for each, or a cycle).")
        return None
    default = next((k for k, p in enumerate(pairs) if p[1] == "test"), 0)
    task, split = st.selectbox("task and split", pairs, index=default,
                               format_func=lambda p: f"{p[0]} / {p[1]}")
    models = [c["model_id"] for c in choices if (c["task_id"], c["split"]) == (task, split)]
    cols = st.columns(2)
    model_a = cols[0].selectbox("model 1", models, index=0, format_func=lambda m: names.get(m, m))
    model_b = cols[1].selectbox("model 2", models, index=1, format_func=lambda m: names.get(m, m))
    if model_a == model_b:
        st.info("Pick two different models.")
        return None
    return task, split, model_a, model_b


def _vote(ws: Path, record: dict | None, reveal: str, round_: int) -> None:
    if st.session_state.get("arena_round", 0) != round_:
        return  # a second click on a ballot already answered
    if record is not None:
        inbox.append(ws, "votes", record)
    st.session_state["arena_round"] = st.session_state.get("arena_round", 0) + 1
    widgets.set_flash(reveal)


def _ballot(ws: Path, chosen: tuple[dict, bool], picked: tuple, voter: str, seed: int,
            round_: int, names: dict[str, str]) -> None:
    (item, flipped), (_, split, model_a, model_b) = chosen, picked
    shown = (item["output_b"], item["output_a"]) if flipped else (item["output_a"],
                                                                  item["output_b"])
    sides = (model_b, model_a) if flipped else (model_a, model_b)
    reveal = f"A was {names.get(sides[0], sides[0])}, B was {names.get(sides[1], sides[1])}"
    prompt = f"{item['instruction']}\n\n{item['input'] or ''}".strip()
    widgets.text_block("prompt", prompt)
    with st.expander("reference answer"):
        st.code(item["reference"] or "", language=None, wrap_lines=True)
    left, right = st.columns(2)
    widgets.text_block("answer A", shown[0], left)
    widgets.text_block("answer B", shown[1], right)
    cols = st.columns(5)
    for col, (choice, label) in zip(cols, views.VOTE_CHOICES.items()):
        record = views.vote_record(item, model_a, model_b, flipped, choice, voter, seed,
                                   round_, split)
        col.button(label, key=f"vote-{choice}", shortcut=SHORTCUTS[choice], on_click=_vote,
                   args=(ws, record, f"vote recorded ({label}): {reveal}", round_),
                   width="stretch")
    cols[4].button("skip", key="vote-skip", shortcut="S", on_click=_vote,
                   args=(ws, None, f"skipped: {reveal}", round_), width="stretch")


def _live_board(matches: list[dict], names: dict[str, str]) -> None:
    st.subheader("Leaderboard for these two models")
    if not matches:
        st.info("No matches between these two models yet.")
        return
    for judge, board in views.boards(matches).items():
        if judge in ("human", "all"):
            st.markdown(f"**{'human votes' if judge == 'human' else 'all judges'}**")
            st.dataframe(pd.DataFrame(views.board_rows(board, names)), hide_index=True)
