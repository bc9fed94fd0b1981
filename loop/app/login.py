"""Who is using the app: the password gate a remote bind requires, and the reviewer's name.

`evalloop app --allow-remote` serves with `--login`: every session must first enter the password
in $EVALLOOP_APP_PASSWORD (compared in constant time; the typed text is cleared from the session
at once, and the password is never stored or logged) and then give a reviewer name. On loopback
the app stays open and the name defaults to $EVALLOOP_REVIEWER or the OS user.
"""

from __future__ import annotations

import getpass
import hmac
import os

import streamlit as st

from loop.app.serve import PASSWORD_ENV

REVIEWER_ENV = "EVALLOOP_REVIEWER"
_TYPED, _OK, _FAILED = "login_password", "login_ok", "login_failed"


def password_matches(typed: str, expected: str) -> bool:
    return hmac.compare_digest(typed.encode("utf-8"), expected.encode("utf-8"))


def default_reviewer() -> str:
    """$EVALLOOP_REVIEWER, else the OS user ("" when neither is known)."""
    if name := os.environ.get(REVIEWER_ENV) or os.environ.get("USER"):
        return name
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def _check() -> None:
    """Widget callback: compare, remember only the outcome, drop what was typed."""
    expected = os.environ.get(PASSWORD_ENV, "")
    typed = st.session_state.get(_TYPED, "")
    st.session_state[_OK] = bool(expected) and password_matches(typed, expected)
    st.session_state[_FAILED] = not st.session_state[_OK]
    st.session_state[_TYPED] = ""


def require_password() -> None:
    """Stop the run (showing only the password box) until this session has logged in."""
    if st.session_state.get(_OK):
        return
    st.title("evalloop")
    if not os.environ.get(PASSWORD_ENV):
        st.error(f"This app was started with a login but {PASSWORD_ENV} is not set on the "
                 "server: nobody can log in.")
        st.stop()
    st.text_input("password", type="password", key=_TYPED, on_change=_check)
    if st.session_state.get(_FAILED):
        st.error("wrong password")
    st.stop()


def reviewer_name(required: bool) -> str:
    """The sidebar name every review, correction and vote records (kept in session state)."""
    name = st.sidebar.text_input("your name (reviews and votes)", key="reviewer",
                                 value="" if required else default_reviewer()).strip()
    if required and not name:
        st.info("Enter your name in the sidebar: every review, correction and vote records who "
                "made it.")
        st.stop()
    return name or "reviewer"
