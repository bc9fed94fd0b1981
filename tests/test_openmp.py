"""How idle OpenMP threads wait: a short spin unless the user chose, set before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

from loop.core.launch import rank_environment
from loop.core.openmp import SPIN_COUNT, wait_briefly


def test_a_short_spin_is_set_when_the_user_chose_nothing():
    assert wait_briefly({"PATH": "/bin"}) == {"PATH": "/bin", "GOMP_SPINCOUNT": SPIN_COUNT}


def test_the_users_own_wait_setting_is_kept():
    assert wait_briefly({"OMP_WAIT_POLICY": "PASSIVE"}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert wait_briefly({"GOMP_SPINCOUNT": "0"}) == {"GOMP_SPINCOUNT": "0"}


def test_launched_ranks_get_the_same_setting(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert rank_environment(2)["GOMP_SPINCOUNT"] == SPIN_COUNT
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    env = rank_environment(2)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in env


# Records the variable at the moment anything first imports torch (libgomp reads it then).
AT_TORCH_IMPORT = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("GOMP_SPINCOUNT"))
sys.meta_path.insert(0, Watch())
import loop.cli
import torch
print(seen[0])
"""


def test_the_cli_sets_it_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", AT_TORCH_IMPORT], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == SPIN_COUNT
