"""Small frozen records passed between stages. Ids are content hashes, so re-runs are idempotent."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

def content_hash(*parts: object, length: int = 16) -> str:
    """A short, stable hex id of the JSON form of `parts`."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Example:
    """One task record: the user-facing data contract (see README, "Task format")."""

    id: str
    instruction: str
    output: str
    input: str = ""
    category: str = "default"
    split: str = "test"

    @staticmethod
    def make_id(instruction: str, input: str, output: str) -> str:
        return content_hash(instruction, input, output)


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict on one prediction. `value` is the raw score, `passed` the verdict."""

    check: str
    version: str
    passed: bool
    value: float
    detail: dict = field(default_factory=dict)
