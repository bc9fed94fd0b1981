"""Pairwise judges: who answered better, A or B? Registered by name: reference, llm, human.

Verdicts are "A", "B", "tie" or "both_bad". The LLM judge sees every pair in both orders and
combines them, so a judge that always prefers the first answer yields ties; an answer it cannot
parse is an error, never a win.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loop.errors import ConfigError, EvalloopError

VERDICTS = ("A", "B", "tie", "both_bad")


@dataclass(frozen=True)
class Pair:
    example_id: str
    prompt: str
    reference: str
    output_a: str
    output_b: str
    passed_a: bool = False
    passed_b: bool = False
    similarity_a: float = 0.0
    similarity_b: float = 0.0


@dataclass(frozen=True)
class Verdict:
    verdict: str | None  # None when the judge failed (see error)
    error: str | None = None
    detail: dict | None = None


# ---------------------------------------------------------------------------- reference judge

def reference_judge(pairs: Sequence[Pair], margin: float = 0.02) -> list[Verdict]:
    """Suite verdict first; then similarity to the reference, a tie within `margin`."""
    out = []
    for p in pairs:
        if p.passed_a != p.passed_b:
            out.append(Verdict("A" if p.passed_a else "B", detail={"by": "suite"}))
            continue
        diff = p.similarity_a - p.similarity_b
        if abs(diff) <= margin:
            verdict = "tie" if p.passed_a else "both_bad"
        else:
            verdict = "A" if diff > 0 else "B"
        out.append(Verdict(verdict, detail={"by": "similarity", "diff": round(diff, 4)}))
    return out


# ---------------------------------------------------------------------------- LLM judge

JUDGE_PROMPT = """You are comparing two answers to the same request.
[Request]
{prompt}
[Reference answer]
{reference}
[Answer 1]
{first}
[Answer 2]
{second}
Which answer is better (correct, complete, concise)? Reply with exactly one of [[1]], [[2]] or
[[tie]]."""

_VERDICT = re.compile(r"\[\[\s*(1|2|tie)\s*\]\]", re.I)


def parse_verdict(text: str) -> str | None:
    """'1', '2' or 'tie' from a judge reply; None when absent or ambiguous."""
    found = {m.lower() for m in _VERDICT.findall(text)}
    return found.pop() if len(found) == 1 else None


def combine_orders(first: str | None, second: str | None) -> Verdict:
    """`first`: verdict with A shown first; `second`: with B shown first (positions 1/2)."""
    if first is None or second is None:
        return Verdict(None, error="unparseable judge reply",
                       detail={"ab": first, "ba": second})
    as_a = {"1": "A", "2": "B", "tie": "tie"}[first]
    as_b = {"1": "B", "2": "A", "tie": "tie"}[second]
    verdict = as_a if as_a == as_b else "tie"
    return Verdict(verdict, detail={"ab": first, "ba": second})


def llm_judge(pairs: Sequence[Pair], complete: Callable[[list[str]], list[str]]
              ) -> list[Verdict]:
    """Judge each pair in both orders with `complete(prompts) -> replies`."""
    prompts = []
    for p in pairs:
        prompts.append(JUDGE_PROMPT.format(prompt=p.prompt, reference=p.reference,
                                           first=p.output_a, second=p.output_b))
        prompts.append(JUDGE_PROMPT.format(prompt=p.prompt, reference=p.reference,
                                           first=p.output_b, second=p.output_a))
    replies = complete(prompts)
    return [combine_orders(parse_verdict(replies[2 * k]), parse_verdict(replies[2 * k + 1]))
            for k in range(len(pairs))]


def endpoint_completer(base_url: str, model: str, api_key_env: str | None = None,
                       timeout: float = 60.0) -> Callable[[list[str]], list[str]]:
    """An OpenAI-compatible chat-completions client; the key is read from `api_key_env` at
    call time and never stored or logged."""

    def complete(prompts: list[str]) -> list[str]:
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise EvalloopError(f"Environment variable {api_key_env} (the judge's API key) "
                                    "is not set.")
            headers["Authorization"] = f"Bearer {key}"
        replies = []
        for prompt in prompts:
            body = json.dumps({"model": model, "temperature": 0,
                               "messages": [{"role": "user", "content": prompt}]}).encode()
            request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions",
                                             data=body, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    data = json.loads(response.read())
                replies.append(data["choices"][0]["message"]["content"])
            except (urllib.error.URLError, KeyError, IndexError, ValueError, TimeoutError) as exc:
                replies.append(f"<error: {type(exc).__name__}>")  # parses as no verdict
        return replies

    return complete


def local_completer(model_name: str, max_new_tokens: int = 16) -> Callable[[list[str]], list[str]]:
    """A local model (any name `loop.models` accepts) answering the judge prompt greedily."""

    def complete(prompts: list[str]) -> list[str]:
        from loop.generate import generate
        from loop.models import load_model
        from loop.prompts import build_prompt
        from loop.records import Example

        lm = load_model(model_name)
        texts = [build_prompt(lm.tokenizer, Example("judge", p, "")) for p in prompts]
        return [o.text for o in generate(lm, texts, max_new_tokens, 8, progress=False)]

    return complete


# ---------------------------------------------------------------------------- registry

JUDGES = {"reference": reference_judge, "llm": llm_judge, "human": None}


def check_judge(name: str) -> str:
    if name not in JUDGES:
        close = difflib.get_close_matches(name, list(JUDGES), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown judge '{name}'.{hint} Known judges: {', '.join(JUDGES)}.")
    if name == "human":
        raise ConfigError("Human verdicts come from votes in the app (`evalloop app`), not from "
                          "`evalloop arena`.")
    return name
