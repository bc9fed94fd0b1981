"""Small Streamlit pieces the pages share: one-shot messages set by callbacks, read-only text."""

from __future__ import annotations

import streamlit as st

FLASH = "flash"


def flash() -> None:
    """Show (once) the message an action callback left for this run."""
    if message := st.session_state.pop(FLASH, None):
        st.success(message)


def set_flash(message: str) -> None:
    st.session_state[FLASH] = message


def text_block(label: str, text: str | None, where=st) -> None:
    """Untrusted text shown verbatim (never as Markdown), wrapped, under a bold label."""
    where.markdown(f"**{label}**")
    where.code(text or "", language=None, wrap_lines=True)
