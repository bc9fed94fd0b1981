"""The cache folder, atomic writes and memos (loop.core.cache)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from loop.core.cache import atomic_path, cache_dir, memoised, write_atomic, write_json_atomic


def test_cache_dir_is_evalloop_home_else_the_platform_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    monkeypatch.delenv("EVALLOOP_HOME")
    if sys.platform.startswith("linux"):  # where existing caches live: unchanged
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        assert cache_dir() == Path.home() / ".cache" / "evalloop"
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir() == tmp_path / "xdg" / "evalloop"


def test_atomic_writes_leave_the_old_file_or_the_new_one_and_no_temp(tmp_path):
    target = tmp_path / "deep" / "out.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    write_atomic(target, "ünïcode")
    assert target.read_text(encoding="utf-8") == "ünïcode"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text(encoding="utf-8") == "ünïcode"  # untouched
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp file left


def test_memoised_computes_once_per_key_and_survives_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path))
    calls = []
    compute = lambda: calls.append(1) or {"v": len(calls)}  # noqa: E731
    assert memoised("probe", "k1", compute) == {"v": 1}
    assert memoised("probe", "k1", compute) == {"v": 1} and len(calls) == 1
    assert memoised("probe", "k2", compute) == {"v": 2}
    assert json.loads((tmp_path / "probe.json").read_text()) == {"k1": {"v": 1}, "k2": {"v": 2}}
    (tmp_path / "probe.json").write_text("{not json")
    assert memoised("probe", "k1", compute) == {"v": 3}  # recomputed, file rewritten
    assert json.loads((tmp_path / "probe.json").read_text()) == {"k1": {"v": 3}}
