"""Stopping on a signal the way Ctrl-C stops: SIGINT, SIGTERM and SIGHUP raise `Interrupted`
(a KeyboardInterrupt) in the main thread, so finished work is kept and unfinished runs are
marked; the exit code is 128 + the signal's number.

    restore = stopping.install()    # the CLI, around one command
    ...
    stopping.received()             # the Interrupted of the first signal, or None

A signal that lands inside a library call (DuckDB, torch) may surface as that library's own
exception instead; `received()` still says a signal came, so callers report it as one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from loop.core.errors import Interrupted

SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_received: list[Interrupted] = []


def install() -> Callable[[], None]:
    """Handle SIGNALS until the returned function puts the previous handlers back (main
    thread only; elsewhere nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _received.clear()

    def stop(signum, frame):
        exc = Interrupted(signal.Signals(signum).name, 128 + signum)
        _received.append(exc)
        raise exc

    old = {sig: signal.signal(sig, stop) for sig in (getattr(signal, n) for n in SIGNALS)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        _received.clear()

    return restore


def received() -> Interrupted | None:
    """The first signal since `install()`, as its Interrupted; None when none came."""
    return _received[0] if _received else None
