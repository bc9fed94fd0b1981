"""Pairwise judges: which of two answers is better? Registered by name: reference, llm, human.

    verdicts = reference_judge(pairs, margin=0.02)
    verdicts = llm_judge(pairs, endpoint_completer("http://127.0.0.1:8000/v1", "qwen", "KEY_VAR"))
    matches = human_matches(votes)

Verdicts are "A", "B", "tie" or "both_bad". The LLM judge sees every pair in both orders and
combines them, so a judge that always prefers the first answer yields ties; a reply it cannot
parse is an error (verdict None), never a win. The judging logic is pure; model and network I/O
live in the two completers at the bottom, which turn prompts into reply texts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from loop.core.endpoint import DEFAULT_CONCURRENCY, ChatRequest, Endpoint, complete_all
from loop.core.errors import ConfigError
from loop.core.records import content_hash

VERDICTS = ("A", "B", "tie", "both_bad")


@dataclass(frozen=True)
class Pair:
    """One item answered by two models; pass/fail and similarity come from stored scores."""
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


@dataclass(frozen=True)
class Match:
    """One judged pair, as stored in the `matches` table. `shown_first` is the model whose answer
    was shown first (human votes); None when both orders were judged or order does not matter."""
    task_id: str | None
    example_id: str
    model_a: str
    model_b: str
    judge: str
    verdict: str | None
    error: str | None = None
    shown_first: str | None = None
    voter: str | None = None
    judged_by: str | None = None  # the concrete LLM judge, e.g. "qwen@http://host/v1"
    detail: dict = field(default_factory=dict)

    @property
    def match_id(self) -> str:
        """Content hash of what was compared and by whom (not of the verdict), so judging the
        same pair again is a no-op; the two models are unordered."""
        extra = [x for x in (self.judged_by, self.voter) if x is not None]
        return content_hash("match", self.task_id, self.example_id,
                            sorted([self.model_a, self.model_b]), self.judge, *extra)

    def row(self, created_at: datetime) -> dict:
        detail = {**self.detail, **({"judged_by": self.judged_by} if self.judged_by else {})}
        return {"match_id": self.match_id, "task_id": self.task_id,
                "example_id": self.example_id, "model_a": self.model_a, "model_b": self.model_b,
                "judge": self.judge, "shown_first": self.shown_first, "verdict": self.verdict,
                "error": self.error, "voter": self.voter, "detail": detail,
                "created_at": created_at}


# ---------------------------------------------------------------------------- reference judge

def reference_judge(pairs: Sequence[Pair], margin: float = 0.02) -> list[Verdict]:
    """Suite verdict first; then similarity to the reference, a tie within `margin` ("both_bad"
    when neither answer passed its suite)."""
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

_VERDICT = re.compile(r"\[\[\s*(1|2|tie)\s*\]\]", re.IGNORECASE)
REPLY_KEPT = 300  # characters of an unparseable reply kept in the match detail


def judge_prompts(pair: Pair) -> tuple[str, str]:
    """The prompt with A shown first, and with B shown first."""
    ab = JUDGE_PROMPT.format(prompt=pair.prompt, reference=pair.reference,
                             first=pair.output_a, second=pair.output_b)
    ba = JUDGE_PROMPT.format(prompt=pair.prompt, reference=pair.reference,
                             first=pair.output_b, second=pair.output_a)
    return ab, ba


def parse_verdict(text: str) -> str | None:
    """'1', '2' or 'tie' from a judge reply; None when absent or contradictory."""
    found = {m.lower() for m in _VERDICT.findall(text)}
    return found.pop() if len(found) == 1 else None


def combine_orders(first: str | None, second: str | None) -> Verdict:
    """`first`: parsed verdict with A shown first; `second`: with B shown first. The same
    winner in both orders wins; a disagreement (position bias) is a tie; a missing verdict
    in either order is an error."""
    if first is None or second is None:
        orders = " and ".join(o for o, v in (("AB", first), ("BA", second)) if v is None)
        return Verdict(None, error=f"unparseable judge reply (order {orders})",
                       detail={"ab": first, "ba": second})
    as_a = {"1": "A", "2": "B", "tie": "tie"}[first]
    as_b = {"1": "B", "2": "A", "tie": "tie"}[second]
    verdict = as_a if as_a == as_b else "tie"
    return Verdict(verdict, detail={"ab": first, "ba": second})


def llm_judge(pairs: Sequence[Pair], complete: Callable[[list[str]], list[str]]
              ) -> list[Verdict]:
    """Judge each pair in both orders with `complete(prompts) -> replies` (one per prompt)."""
    prompts = [prompt for p in pairs for prompt in judge_prompts(p)]
    replies = complete(prompts)
    if len(replies) != len(prompts):
        raise ValueError(f"completer gave {len(replies)} replies for {len(prompts)} prompts")
    out = []
    for k in range(len(pairs)):
        ab, ba = replies[2 * k], replies[2 * k + 1]
        verdict = combine_orders(parse_verdict(ab), parse_verdict(ba))
        if verdict.error:
            detail = {**verdict.detail, "replies": [ab[:REPLY_KEPT], ba[:REPLY_KEPT]]}
            verdict = Verdict(None, verdict.error, detail)
        out.append(verdict)
    return out


# ---------------------------------------------------------------------------- human judge

def human_matches(votes: Sequence[Mapping]) -> list[Match]:
    """Votes as data -> matches with the voter. Each vote needs task_id, example_id, model_a,
    model_b, verdict (one of VERDICTS, relative to model_a/model_b) and voter; shown_first and
    detail are optional. One vote per voter, item and model pair counts (ids ignore the verdict).
    All bad votes are reported in one error."""
    errors, out = [], []
    for k, vote in enumerate(votes):
        missing = [f for f in ("task_id", "example_id", "model_a", "model_b", "verdict", "voter")
                   if not vote.get(f)]
        if missing:
            errors.append(f"vote {k}: missing {', '.join(missing)}")
        elif vote["verdict"] not in VERDICTS:
            errors.append(f"vote {k}: verdict {vote['verdict']!r} is not one of "
                          f"{', '.join(VERDICTS)}")
        else:
            out.append(Match(vote["task_id"], vote["example_id"], vote["model_a"],
                             vote["model_b"], "human", vote["verdict"],
                             shown_first=vote.get("shown_first"), voter=vote["voter"],
                             detail=dict(vote.get("detail") or {})))
    if errors:
        raise ConfigError("Invalid votes: " + "; ".join(errors) + ".")
    return out


# ---------------------------------------------------------------------------- registry

JUDGES: dict[str, Callable] = {"reference": reference_judge, "llm": llm_judge,
                               "human": human_matches}
AUTOMATIC = ("reference", "llm")


def check_judge(name: str, automatic: bool = True) -> str:
    """`name` if it is a registered judge (an automatic one unless automatic=False)."""
    if name not in JUDGES:
        close = difflib.get_close_matches(name, list(JUDGES), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown judge '{name}'.{hint} Known judges: {', '.join(JUDGES)}.")
    if automatic and name not in AUTOMATIC:
        raise ConfigError("Human verdicts come from votes in the app (`evalloop app`), not from "
                          "`evalloop arena`.")
    return name


# ---------------------------------------------------------------------------- completers (I/O)

@dataclass(frozen=True)
class EndpointCompleter:
    """An OpenAI-compatible chat-completions judge (`loop.core.endpoint`: retries, backoff,
    `concurrency` requests in flight). A reply that is not a chat completion parses as no
    verdict; a rate limit or server error that outlasts the retries raises `EndpointError`, so
    no half-judged batch is stored. The key never leaves the environment."""
    endpoint: Endpoint

    @property
    def label(self) -> str:
        return self.endpoint.label

    def __call__(self, prompts: list[str]) -> list[str]:
        replies = complete_all(self.endpoint, [ChatRequest.user(p, temperature=0, max_tokens=256)
                                               for p in prompts])
        return [r.text if r.text is not None else f"<no reply: {r.failure}>" for r in replies]


class LocalCompleter:
    """A local model (any name `loop.models` accepts) answering the judge prompt greedily;
    loaded on first use and kept for later calls."""

    def __init__(self, model_name: str, max_new_tokens: int = 16, batch_size: int = 8):
        self.label, self.max_new_tokens, self.batch_size = model_name, max_new_tokens, batch_size
        self._lm = None

    def __call__(self, prompts: list[str]) -> list[str]:
        from loop.models.decode import generate
        from loop.models.loading import load_model
        from loop.core.prompts import build_prompt
        from loop.core.records import Example

        self._lm = self._lm or load_model(self.label)
        texts = [build_prompt(self._lm.tokenizer, Example("judge", p, "")) for p in prompts]
        outputs = generate(self._lm, texts, self.max_new_tokens, self.batch_size, progress=False)
        return [o.text for o in outputs]


def endpoint_completer(base_url: str | None, model: str, api_key_env: str | None = None,
                       timeout: float = 60.0, concurrency: int = DEFAULT_CONCURRENCY
                       ) -> EndpointCompleter:
    """`base_url` None: $OPENAI_BASE_URL; `api_key_env` None: $OPENAI_API_KEY when set."""
    return EndpointCompleter(Endpoint(
        base_url, model, api_key_env, timeout_s=timeout, concurrency=concurrency,
        hint="check --judge-url, --judge-model and the API key variable"))


def local_completer(model_name: str, max_new_tokens: int = 16) -> LocalCompleter:
    return LocalCompleter(model_name, max_new_tokens)
