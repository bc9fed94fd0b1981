"""Rubric check: a judge model grades an open answer against written criteria on a scale.

    [suite]
    checks = [{ name = "rubric", required = true, params = {
        criteria = "Names the capital and nothing else.", scale = [1, 5], threshold = 4,
        model = "qwen", base_url = "http://127.0.0.1:8000/v1", api_key_env = "JUDGE_KEY" } }]

The judge sees the request, the reference and the answer, reasons, and ends with `SCORE: n`; the
answer passes when n >= threshold. A reply without a score in the scale fails with the reason
"judge reply unparseable" (never a pass). The reasoning and the score are kept in the check's
detail, so they are stored with the item's scores. The grading is pure over a completer
(`prompts -> replies`); `judge_completer` builds the real one (evals.judges: a local model, or an
OpenAI-compatible endpoint when `base_url` or $OPENAI_BASE_URL is set).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.rules import CheckInput
from loop.core.records import CheckResult

RUBRIC = "rubric"
RUBRIC_VERSION = "1"
UNPARSEABLE = "judge reply unparseable"
REPLY_KEPT = 2000  # characters of the judge's reasoning stored with the score
JUDGE_PARAMS = ("model", "base_url", "api_key_env", "max_new_tokens")
PARAMS = ("criteria", "scale", "threshold", *JUDGE_PARAMS)

Completer = Callable[[list[str]], list[str]]

PROMPT = """You are grading an answer against a rubric.
[Request]
{prompt}
[Reference answer]
{reference}
[Answer to grade]
{output}
[Rubric]
{criteria}
Explain briefly how well the answer meets the rubric, then give a score from {low} (worst) to
{high} (best) on the last line, exactly in the form: SCORE: <number>"""

_SCORE = re.compile(r"^[\W_]*score[\W_]*?[:=][\W_]*?(\d+)\b", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Rubric:
    criteria: str
    low: int = 1
    high: int = 5
    threshold: int = 4

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Rubric:
        """The rubric a suite check's params describe (validated: see `rubric_problems`)."""
        low, high = _scale(params.get("scale", (1, 5)))
        return cls(params["criteria"], low, high, int(params.get("threshold", high - 1)))


def _scale(value: Any) -> tuple[int, int]:
    """[1, 5] or "1-5" -> (1, 5); ValueError otherwise."""
    if isinstance(value, str):
        parts = value.split("-")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = []
    if len(parts) != 2:
        raise ValueError(f"scale must be [low, high] or \"low-high\", got {value!r}")
    try:
        low, high = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"scale must hold two whole numbers, got {value!r}") from None
    if low >= high:
        raise ValueError(f"scale low must be below high, got {value!r}")
    return low, high


def rubric_problems(params: Mapping[str, Any]) -> list[str]:
    """What is wrong with a rubric check's params (empty when they are usable)."""
    problems = [f"unknown param '{p}' for rubric (accepts: {', '.join(PARAMS)})"
                for p in params if p not in PARAMS]
    criteria = params.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        problems.append("rubric needs criteria = \"...\" (the text the judge grades against)")
    if not isinstance(params.get("model"), str) or not params.get("model"):
        problems.append("rubric needs model = \"...\" (a local judge model, or the endpoint's "
                        "model name with base_url)")
    try:
        low, high = _scale(params.get("scale", (1, 5)))
    except ValueError as exc:
        return [*problems, str(exc)]
    threshold = params.get("threshold", high - 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int) \
            or not low <= threshold <= high:
        problems.append(f"rubric threshold must be a whole number in {low}..{high}, "
                        f"got {threshold!r}")
    return problems


def rubric_prompt(item: CheckInput, rubric: Rubric) -> str:
    prompt = f"{item.instruction}\n\n{item.input}".strip()
    return PROMPT.format(prompt=prompt, reference=item.reference, output=item.output,
                         criteria=rubric.criteria, low=rubric.low, high=rubric.high)


def parse_score(reply: str, low: int, high: int) -> int | None:
    """The last `SCORE: n` in a reply when n is on the scale; None otherwise."""
    found = _SCORE.findall(reply or "")
    if not found:
        return None
    score = int(found[-1])
    return score if low <= score <= high else None


def grade(items: Sequence[CheckInput], rubric: Rubric, complete: Completer,
          judge: str = "") -> list[CheckResult]:
    """One judge reply per item -> a check result with the score, threshold and reasoning."""
    replies = complete([rubric_prompt(item, rubric) for item in items])
    if len(replies) != len(items):
        raise ValueError(f"judge gave {len(replies)} replies for {len(items)} prompts")
    out = []
    for reply in replies:
        score = parse_score(reply, rubric.low, rubric.high)
        detail = {"reasoning": (reply or "")[:REPLY_KEPT], "threshold": rubric.threshold,
                  "scale": [rubric.low, rubric.high], "judge": judge}
        if score is None:
            out.append(CheckResult(RUBRIC, RUBRIC_VERSION, False, 0.0,
                                   {**detail, "reason": UNPARSEABLE}))
        else:
            out.append(CheckResult(RUBRIC, RUBRIC_VERSION, score >= rubric.threshold,
                                   float(score), {**detail, "score": score}))
    return out


def judge_completer(params: Mapping[str, Any]) -> Completer:
    """The judge a rubric check names: an endpoint when base_url (or $OPENAI_BASE_URL) is set,
    else a local model. Built lazily: a task without a rubric check never loads a judge."""
    from evals.judges import endpoint_completer, local_completer

    max_new_tokens = int(params.get("max_new_tokens", 256))
    if params.get("base_url") or os.environ.get("OPENAI_BASE_URL"):
        return endpoint_completer(params.get("base_url"), params["model"],
                                  params.get("api_key_env"))
    return local_completer(params["model"], max_new_tokens)
