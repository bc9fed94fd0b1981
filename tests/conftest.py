"""Shared fixtures: an offline environment, a workspace per test, and a tiny task builder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning idle threads starve the 2 cores
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEMO_TASK = REPO / "datasets" / "demo" / "task.toml"


def write_task(directory: Path, splits: dict[str, list[dict]], extra_toml: str = "",
               name: str = "tiny") -> Path:
    """Write a task TOML and its JSONL files; returns the TOML path."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f'name = "{name}"']
    for split, records in splits.items():
        with (directory / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
        lines.append(f'{split} = "{split}.jsonl"')
    toml = directory / "task.toml"
    toml.write_text("\n".join(lines) + "\n" + extra_toml, encoding="utf-8")
    return toml


def classification_records(n: int, offset: int = 0) -> list[dict]:
    """A small external-style classification task (not the demo)."""
    colours = ["red", "green", "blue", "yellow"]
    return [{"instruction": "Name the colour mentioned in the sentence. One word.",
             "input": f"Item {i + offset} was painted {colours[i % 4]} last spring.",
             "output": colours[i % 4], "category": f"colour_{colours[i % 4]}"}
            for i in range(n)]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def tiny_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "task", {
        "train": classification_records(40, offset=100),
        "dev": classification_records(8, offset=200),
        "test": classification_records(8),
    }, extra_toml="[generation]\nmax_new_tokens = 8\nbatch_size = 4\n")
