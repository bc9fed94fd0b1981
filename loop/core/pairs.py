"""Preference pairs, the records `evalloop pairs` builds (loop/targeted/pairs.py) and DPO trains
on (loop/train/dpo.py): an item, a chosen and a rejected answer, and where they came from.

    pairs = read_pairs("ws/data/task/pairs/<hash>.jsonl")
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from loop.core.prompts import user_message
from loop.core.records import Example, content_hash


@dataclass(frozen=True)
class PreferencePair:
    source: str  # one of loop.targeted.pairs.SOURCES
    task_id: str
    example_id: str
    instruction: str
    input: str
    chosen: str
    rejected: str
    chosen_by: str  # model id, "reference" or "reviewer:<name>"
    rejected_by: str  # model id
    origin: str  # the match, correction or failing run it came from
    judge: str | None = None  # matches only: "human", "reference", "llm"
    voter: str | None = None

    @property
    def prompt(self) -> str:
        return user_message(self.example())

    @property
    def pair_id(self) -> str:
        return content_hash("pair", self.source, self.task_id, self.instruction, self.input,
                            self.chosen, self.rejected)

    def example(self) -> Example:
        return Example(self.example_id, self.instruction, self.chosen, self.input)

    def row(self) -> dict:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected,
                "pair_id": self.pair_id, **asdict(self)}


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Pairs back from an exported JSONL (the provenance fields round-trip)."""
    names = {f for f in PreferencePair.__dataclass_fields__}
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            out.append(PreferencePair(**{k: v for k, v in record.items() if k in names}))
    return out
