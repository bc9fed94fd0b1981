"""How idle OpenMP threads wait, set once for every evalloop process before torch loads.

    from loop.core.openmp import wait_briefly
    wait_briefly()                          # this process: call before anything imports torch
    env = wait_briefly(dict(os.environ))    # a child process's environment

torch's CPU kernels run on libgomp threads that busy-wait between parallel regions before they
sleep: 300,000 spins by default, none under `OMP_WAIT_POLICY=PASSIVE`. Spinning is fastest on
an idle machine and ruinous when more threads than cores share it (a descheduled spinner holds
every parallel op up). Measured by bench/omp_wait.py on the 2-core machine (2026-12-03: 64
rentalcars rows of training, example tokens/s; shared = three runs at once, summed):

    setting              alone   shared   (ratio to PASSIVE)
    PASSIVE              1,144    1,624
    spin 1,000           1,267    1,610   1.11x  0.99x
    spin 3,000           1,455    1,473   1.27x  0.91x
    spin 10,000          1,687    1,228   1.47x  0.76x
    default (300,000)    1,797      313   1.57x  0.19x

evalloop used PASSIVE before; a cycle usually runs alone (cron), where 10,000 spins train 1.47x
faster, and three jobs on two cores still run at three quarters of PASSIVE's speed, not a fifth.
libgomp reads the variable when torch loads, so later calls change nothing in a running process.
A user's own `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` is kept; other OpenMP runtimes ignore it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SPIN_COUNT = "10000"


def wait_briefly(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set `GOMP_SPINCOUNT` in `env` (default: this process's environment) unless the user chose
    how OpenMP threads wait; return `env`."""
    env = os.environ if env is None else env
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = SPIN_COUNT
    return env
