"""Versioned test suites: which checks a task runs, which are required, with what parameters.

Declared in the task TOML (or in a file it names, relative to the TOML), validated with the task's
settings (loop.core.settings, against `CHECKS`):

    [suite]
    version = "2"
    checks = [
      { name = "exact_match", required = true },
      { name = "too_long", params = { max_words = 20 } },
      { name = "similarity", required = true, params = { threshold = 0.8 } },
    ]
    # or: file = "suite.toml"   (same keys at its top level)

`rubric` (evals/rubric.py) asks a judge model to grade open answers against criteria; it is never
in the default suite, so a task that does not name it loads no judge.

A prediction passes when every required check that applies to it passes. `applies` restricts a
check to items whose reference is JSON ("json") or is not ("text"). Without a [suite], the task's
answer model (evals/answers.py) picks the default (`default_suite`): JSON references are scored
with `json_equal`, the rest with `exact_match`, with `number_equal` on a number task and, on a
free-text task, with `similarity` against a threshold calibrated on the task's references.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evals import rubric
from evals.answers import AnswerModel, shape
from evals.rules import REGISTRY, CheckInput, get_check
from loop.core.errors import EvalloopError
from loop.core.records import CheckResult
from loop.core.settings import TaskSettings
from loop.core.settings_values import CheckVocabulary

SIMILARITY = "similarity"  # pseudo-check: cosine similarity to the reference >= threshold
SIMILARITY_VERSION = "1"
RUBRIC = rubric.RUBRIC  # pseudo-check: a judge model's score against the criteria >= threshold
JudgeFactory = Callable[[Mapping[str, Any]], rubric.Completer]  # rubric params -> completer


@dataclass(frozen=True)
class SuiteCheck:
    name: str
    required: bool = False
    params: dict = field(default_factory=dict)
    applies: str = "all"


@dataclass(frozen=True)
class Suite:
    version: str
    checks: tuple[SuiteCheck, ...]

    @property
    def required(self) -> set[str]:
        return {c.name for c in self.checks if c.required}

    @property
    def needs_similarity(self) -> bool:
        return any(c.name == SIMILARITY for c in self.checks)

    @property
    def needs_judge(self) -> bool:
        return any(c.name == RUBRIC for c in self.checks)

    def without_judge(self) -> Suite:
        """The suite minus its rubric checks (scoring that must not call a judge model)."""
        return Suite(self.version, tuple(c for c in self.checks if c.name != RUBRIC))

    def check_versions(self) -> dict[str, str]:
        return {c.name: _version(c.name) for c in self.checks}


def _version(name: str) -> str:
    if name == SIMILARITY:
        return SIMILARITY_VERSION
    return rubric.RUBRIC_VERSION if name == RUBRIC else REGISTRY[name].version


_RECORDED = (SuiteCheck("not_contains"), SuiteCheck("too_long"), SuiteCheck("repetition"),
             SuiteCheck("hallucination"))  # failure categories, never required
DEFAULT_SUITE = Suite(version="default-1", checks=(
    SuiteCheck("exact_match", required=True, applies="text"),
    SuiteCheck("json_equal", required=True, applies="json"),
    *_RECORDED,
))


def default_suite(answers: AnswerModel, threshold: float | None = None) -> Suite:
    """The suite of a task without [suite], by its answer kind: DEFAULT_SUITE (exact match, JSON
    as JSON) for json, label and exact; for labels the same with lists compared as sets (as
    their signatures and answer classes see them); `number_equal` for number; for free text
    `similarity` >= `threshold` (`evals.answers.similarity_threshold`; the version names it, so
    scores against another threshold are never compared). A free-text suite without a threshold
    is for self-referenced answers only (every similarity is 1)."""
    if answers.kind == "labels":  # a label list is a set: order and repeats do not count
        return Suite("default-labels-1", (DEFAULT_SUITE.checks[0],
                                          SuiteCheck("json_equal", True, {"unordered": True},
                                                     applies="json"), *_RECORDED))
    if answers.kind == "number":
        return Suite("default-number-1", (SuiteCheck("number_equal", True, applies="text"),
                                          *DEFAULT_SUITE.checks[1:]))
    if answers.kind == "text":
        params = {} if threshold is None else {"threshold": threshold}
        version = "default-text-1" + ("" if threshold is None else f"@{threshold:.2f}")
        return Suite(version, (SuiteCheck(SIMILARITY, True, params, applies="text"),
                               *DEFAULT_SUITE.checks[1:]))
    return DEFAULT_SUITE


@dataclass(frozen=True)
class ItemScore:
    checks: tuple[CheckResult, ...]
    passed: bool
    categories: tuple[str, ...]  # failure categories of the failed checks (required or not)
    failed_required: tuple[str, ...]


class ScoreVersionError(EvalloopError):
    """Scores made with different suite or check versions were about to be compared."""


def load_suite(settings: TaskSettings, answers: AnswerModel | None = None,
               threshold: float | None = None) -> Suite:
    """The task's suite: its [suite] table (validated when the task loaded), else the default
    for its answers (`default_suite`)."""
    if settings.suite is None:
        return default_suite(answers or AnswerModel(), threshold)
    return Suite(version=settings.suite.version,
                 checks=tuple(SuiteCheck(c.name, c.required, dict(c.params), c.applies)
                              for c in settings.suite.checks))


def unknown_check(name: str) -> str | None:
    """Why `name` is not a check a suite can list (None when it is)."""
    if name in (SIMILARITY, RUBRIC) or name in REGISTRY:
        return None
    close = difflib.get_close_matches(name, [*REGISTRY, SIMILARITY, RUBRIC], n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (f"unknown check '{name}' ({hint}known: {', '.join(sorted(REGISTRY))}, {SIMILARITY}, "
            f"{RUBRIC})")


def param_problems(name: str, params: Mapping[str, Any]) -> list[str]:
    """Params a known check does not accept (its function's keyword arguments)."""
    if name == SIMILARITY:
        return [f"unknown param '{p}' for similarity (accepts: threshold)"
                for p in params if p != "threshold"]
    if name == RUBRIC:
        return rubric.rubric_problems(params)
    accepted = set(inspect.signature(REGISTRY[name].fn).parameters) - {"items"}
    return [f"unknown param '{p}' for {name} (accepts: {', '.join(sorted(accepted))})"
            for p in params if p not in accepted]


# what task settings validate [suite] checks against (loop.core cannot import this layer)
CHECKS = CheckVocabulary(unknown=unknown_check, param_problems=param_problems)


def _applies(check: SuiteCheck, item: CheckInput) -> bool:
    if check.applies == "all":
        return True
    is_json = shape(item.reference) != "other"
    return is_json if check.applies == "json" else not is_json


def score_suite(suite: Suite, items: Sequence[CheckInput],
                similarities: Sequence[float] | None = None,
                judge: JudgeFactory | None = None) -> list[ItemScore]:
    """Run every check on the items it applies to; combine into per-item verdicts.
    `judge` builds the completer a rubric check grades with (from the check's params)."""
    per_item: list[list[CheckResult]] = [[] for _ in items]
    for check in suite.checks:
        idx = [k for k, item in enumerate(items) if _applies(check, item)]
        if not idx:
            continue
        if check.name == SIMILARITY:
            if similarities is None:
                raise ValueError("suite has a similarity check: pass similarities")
            threshold = float(check.params.get("threshold", 0.8))
            results = [CheckResult(SIMILARITY, SIMILARITY_VERSION, similarities[k] >= threshold,
                                   float(similarities[k]), {"threshold": threshold}) for k in idx]
        elif check.name == RUBRIC:
            if judge is None:
                raise ValueError("suite has a rubric check: pass a judge")
            complete = judge(check.params)
            results = rubric.grade([items[k] for k in idx], rubric.Rubric.from_params(
                check.params), complete, judge=getattr(complete, "label", ""))
        else:
            results = get_check(check.name).fn([items[k] for k in idx], **check.params)
        for k, result in zip(idx, results):
            per_item[k].append(result)
    return [_combine(suite, results) for results in per_item]


def _combine(suite: Suite, results: list[CheckResult]) -> ItemScore:
    required = suite.required
    failed_required = tuple(r.check for r in results if r.check in required and not r.passed)
    categories = []
    for r in results:
        if r.passed:
            continue
        category = "wrong_answer" if r.check in (SIMILARITY, RUBRIC) \
            else REGISTRY[r.check].category
        if category not in categories:
            categories.append(category)
    return ItemScore(tuple(results), not failed_required, tuple(categories), failed_required)


def assert_comparable(versions_a: dict[str, str], versions_b: dict[str, str]) -> set[str]:
    """Checks whose stored versions match in both score sets; raise if none do.

    `versions_*` map check name -> check version (the suite version under key "__suite__").
    """
    if versions_a.get("__suite__") != versions_b.get("__suite__"):
        raise ScoreVersionError(
            f"Scores come from different suite versions ({versions_a.get('__suite__')} vs "
            f"{versions_b.get('__suite__')}); re-score both with the same suite to compare.")
    shared = {name for name, v in versions_a.items()
              if name != "__suite__" and versions_b.get(name) == v}
    changed = {name for name, v in versions_a.items()
               if name in versions_b and versions_b[name] != v}
    if changed:
        raise ScoreVersionError(f"Check version changed for {', '.join(sorted(changed))}; "
                                "old and new scores are not comparable.")
    return shared
