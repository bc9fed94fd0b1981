"""Fault injection for the reliability suite: SIGKILL this process at a chosen point of a stage.

Inert unless `EVALLOOP_KILL_AT="STAGE:SECONDS"` is set: when cycle stage STAGE starts, a timer
sends SIGKILL to this process SECONDS later (no handler runs, nothing is flushed, as with the
OOM killer or a power cut). Killing from inside lands precisely even in stages that last a few
milliseconds, which an outside poller would miss.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "EVALLOOP_KILL_AT"


def arm(stage: str) -> None:
    """Start the kill timer if the environment asks for a kill in `stage`."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, seconds = spec.rpartition(":")
    if target != stage:
        return
    timer = threading.Timer(float(seconds), os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
