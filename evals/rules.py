"""Rule checks: pure batch functions `(items, **params) -> list[CheckResult]`.

Each check is registered with its name, version, direction and the failure category a failed
check signals. Bump a check's version whenever its verdicts can change: scores of different
versions are never compared (see `evals.suites.assert_comparable`). Answers are read with
`evals.answers` (normalising, JSON, numbers), the one reader every scorer shares.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from evals.answers import canonical, normalize, parse_json, parse_number
from loop.core.errors import ConfigError
from loop.core.records import CheckResult


@dataclass(frozen=True)
class CheckInput:
    instruction: str
    input: str
    reference: str
    output: str
    samples: tuple[str, ...] = ()  # extra sampled answers, for `consistency`


@dataclass(frozen=True)
class Check:
    name: str
    version: str
    higher_is_better: bool
    category: str  # failure category when the check fails
    fn: Callable[..., list[CheckResult]]
    description: str


REGISTRY: dict[str, Check] = {}


def register(name: str, version: str, category: str, higher_is_better: bool = True):
    def wrap(fn):
        REGISTRY[name] = Check(name, version, higher_is_better, category, fn,
                               (fn.__doc__ or "").strip().splitlines()[0])
        return fn
    return wrap


def get_check(name: str) -> Check:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown check '{name}'.{hint} Known checks: "
                          f"{', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name]


def _result(name: str, passed: bool, value: float, **detail) -> CheckResult:
    return CheckResult(check=name, version=REGISTRY[name].version, passed=bool(passed),
                       value=float(value), detail=detail)


# ---------------------------------------------------------------------------- text helpers

def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


# ---------------------------------------------------------------------------- correctness

@register("exact_match", "1", "wrong_answer")
def exact_match(items: Sequence[CheckInput]) -> list[CheckResult]:
    """Output equals the reference after normalising case, whitespace and end punctuation."""
    return [_result("exact_match", normalize(i.output) == normalize(i.reference),
                    float(normalize(i.output) == normalize(i.reference))) for i in items]


def _key_scores(expected, got) -> tuple[float, float]:
    if not isinstance(expected, dict) or not isinstance(got, dict):
        return float(expected == got), float(expected == got)
    right = sum(1 for k, v in got.items() if k in expected and expected[k] == v)
    return (right / len(got) if got else 0.0), (right / len(expected) if expected else 1.0)


def _as_set(value):
    return frozenset(canonical(x) for x in value) if isinstance(value, list) else value


@register("json_equal", "1", "wrong_answer")
def json_equal(items: Sequence[CheckInput], unordered: bool = False) -> list[CheckResult]:
    """Output holds JSON equal to the reference; detail has per-key precision/recall.
    `unordered`: lists compare as sets of their elements (label lists)."""
    out = []
    for item in items:
        expected = parse_json(item.reference, strict=True)
        if expected is None:
            out.append(_result("json_equal", False, 0.0, error="reference is not JSON"))
            continue
        got = parse_json(item.output)
        if got is None:
            out.append(_result("json_equal", False, 0.0, error="output has no JSON",
                               precision=0.0, recall=0.0))
            continue
        precision, recall = _key_scores(expected, got)
        same = _as_set(got) == _as_set(expected) if unordered else got == expected
        out.append(_result("json_equal", same, recall, precision=precision, recall=recall))
    return out


@register("number_equal", "1", "wrong_answer")
def number_equal(items: Sequence[CheckInput], tolerance: float = 0.0) -> list[CheckResult]:
    """Output is (or holds exactly one) number within `tolerance` of the reference's number."""
    out = []
    for item in items:
        expected, got = parse_number(item.reference, strict=True), parse_number(item.output)
        if expected is None or got is None:
            out.append(_result("number_equal", False, 0.0,
                               error="reference is not a number" if expected is None
                               else "output holds no single number"))
            continue
        ok = abs(got - expected) <= tolerance
        out.append(_result("number_equal", ok, float(ok), expected=expected, got=got))
    return out


@register("contains", "1", "wrong_answer")
def contains(items: Sequence[CheckInput], text: str | None = None,
             case_sensitive: bool = False) -> list[CheckResult]:
    """Output contains `text` (default: the reference)."""
    out = []
    for item in items:
        needle, hay = text if text is not None else item.reference, item.output
        if not case_sensitive:
            needle, hay = needle.lower(), hay.lower()
        out.append(_result("contains", needle.strip() in hay, float(needle.strip() in hay)))
    return out


STOP_PHRASES = ("as an ai", "as a language model", "<|im_start|>", "<|im_end|>",
                "### instruction", "### response", "<|endoftext|>")


@register("not_contains", "1", "format")
def not_contains(items: Sequence[CheckInput], phrases: Sequence[str] = STOP_PHRASES
                 ) -> list[CheckResult]:
    """Output contains none of the stop phrases (assistant boilerplate, template leakage)."""
    out = []
    for item in items:
        found = [p for p in phrases if p.lower() in item.output.lower()]
        out.append(_result("not_contains", not found, float(not found), found=found))
    return out


@register("regex", "1", "format")
def regex(items: Sequence[CheckInput], pattern: str = ".*", full: bool = True
          ) -> list[CheckResult]:
    """Output (stripped) matches `pattern` (fully by default)."""
    compiled = re.compile(pattern, re.S)
    match = compiled.fullmatch if full else compiled.search
    return [_result("regex", match(i.output.strip()) is not None,
                    float(match(i.output.strip()) is not None)) for i in items]


@register("json_valid", "1", "format")
def json_valid(items: Sequence[CheckInput], required_keys: Sequence[str] = ()
               ) -> list[CheckResult]:
    """Output contains a JSON value; with `required_keys`, an object holding all of them."""
    out = []
    for item in items:
        value = parse_json(item.output)
        if value is None:
            out.append(_result("json_valid", False, 0.0, error="no JSON"))
            continue
        missing = [k for k in required_keys if not isinstance(value, dict) or k not in value]
        out.append(_result("json_valid", not missing, float(not missing), missing=missing))
    return out


# ---------------------------------------------------------------------------- style and form

@register("too_long", "1", "too_long", higher_is_better=False)
def too_long(items: Sequence[CheckInput], max_words: int = 200, max_ratio: float = 3.0,
             slack_words: int = 5) -> list[CheckResult]:
    """Passes unless the output has over `max_words` words or over ratio x reference + slack."""
    out = []
    for item in items:
        n, ref = len(words(item.output)), len(words(item.reference))
        cap = min(max_words, max_ratio * ref + slack_words) if ref else max_words
        out.append(_result("too_long", n <= cap, n, words=n, cap=cap))
    return out


@register("repetition", "1", "repetition", higher_is_better=False)
def repetition(items: Sequence[CheckInput], n: int = 3, max_ratio: float = 0.3,
               min_ngrams: int = 4) -> list[CheckResult]:
    """Share of repeated word n-grams stays under `max_ratio`."""
    out = []
    for item in items:
        ratio = repeated_share(item.output, n, min_ngrams)
        out.append(_result("repetition", ratio <= max_ratio, ratio))
    return out


def repeated_share(text: str, n: int = 3, min_ngrams: int = 4) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0 for short texts)."""
    toks = [w.lower() for w in words(text)]
    grams = [tuple(toks[k:k + n]) for k in range(len(toks) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if len(grams) >= min_ngrams else 0.0


@lru_cache(maxsize=1)
def _spellchecker():
    from spellchecker import SpellChecker  # offline: ships its word frequency lists

    return SpellChecker()


@register("misspelling", "1", "misspelling", higher_is_better=False)
def misspelling(items: Sequence[CheckInput], max_misspelled: int = 0) -> list[CheckResult]:
    """Lower-case words unknown to the dictionary, ignoring words in the input or reference."""
    checker = _spellchecker()
    out = []
    for item in items:
        known = {w.lower() for w in words(f"{item.instruction} {item.input} {item.reference}")}
        candidates = [w for w in re.findall(r"\b[a-z][a-z']{3,}\b", item.output)
                      if w not in known]
        bad = sorted(checker.unknown(candidates)) if candidates else []
        out.append(_result("misspelling", len(bad) <= max_misspelled, len(bad), words=bad))
    return out


_ENTITY = re.compile(r"\b(?:\d+(?:[.,]\d+)*|[A-Z][a-z]+(?:\s[A-Z][a-z]+)*)\b")


@register("hallucination", "1", "hallucination", higher_is_better=False)
def hallucination(items: Sequence[CheckInput], max_unsupported: int = 0) -> list[CheckResult]:
    """Numbers and capitalised entities in the output that appear in no input or reference."""
    out = []
    for item in items:
        unsupported = unsupported_entities(item.output,
                                           f"{item.instruction} {item.input} {item.reference}")
        out.append(_result("hallucination", len(unsupported) <= max_unsupported,
                           len(unsupported), unsupported=unsupported))
    return out


def entities(text: str) -> list[str]:
    """Numbers and capitalised names in `text`, in order (a word opening a sentence is
    capitalised by grammar, not as a name, and is left out)."""
    sentence_starts = {m.group(1) for m in re.finditer(r"(?:^|[.!?]\s+)([A-Z][a-z]+)", text)}
    return [m.group(0) for m in _ENTITY.finditer(text) if m.group(0) not in sentence_starts]


def unsupported_entities(text: str, source: str) -> list[str]:
    """The entities of `text` (numbers, names) that `source` does not contain, whole or word
    by word."""
    source = source.lower()
    return [token for token in entities(text) if token.lower() not in source
            and not all(part.lower() in source for part in token.split())]


@register("consistency", "1", "inconsistency")
def consistency(items: Sequence[CheckInput], min_agreement: float = 0.6) -> list[CheckResult]:
    """Share of sampled answers (or answers to paraphrases) that agree with the main output."""
    out = []
    for item in items:
        if not item.samples:
            out.append(_result("consistency", True, 1.0, samples=0))
            continue
        agree = sum(normalize(s) == normalize(item.output) for s in item.samples)
        rate = agree / len(item.samples)
        out.append(_result("consistency", rate >= min_agreement, rate,
                           samples=len(item.samples)))
    return out
