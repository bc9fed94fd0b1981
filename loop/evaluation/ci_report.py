"""CI use of `evalloop eval`: pass-rate thresholds and a JUnit XML report.

    evalloop eval --task task.toml --min-pass-rate 0.8 --min-category-pass-rate refund=0.9 \
        --junit reports/evalloop.xml

Thresholds missed -> exit code 1 (EXIT_BELOW_THRESHOLD; 2 and up stay user/store errors, as for
ruff and mypy). The JUnit report has one <testsuite> per category of the evaluated split and
one <testcase> per item (name = example id, classname = task.category); a failed item carries
its failed checks, failure signatures and a short diff of reference vs prediction, in the
attributes and elements GitHub, GitLab and Jenkins read.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evals.answers import parse_json
from loop.core.cache import write_atomic
from loop.core.errors import ConfigError

EXIT_BELOW_THRESHOLD = 1
MAX_DIFF_LINES = 40
MAX_TEXT = 2000  # characters of a diff or output shown per failure
# Characters XML 1.0 forbids; a random or broken model emits them, and one makes the file unreadable
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Thresholds:
    """Minimum pass rates (0..1): overall and per category."""

    overall: float | None = None
    per_category: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.overall is not None or bool(self.per_category)

    def to_json(self) -> dict:
        return {"min_pass_rate": self.overall, "min_category_pass_rate": self.per_category}


def parse_thresholds(overall: float | None, category_args: Sequence[str],
                     known_categories: Collection[str]) -> Thresholds:
    """Validate `--min-pass-rate` and each `--min-category-pass-rate CAT=X`; every problem in
    one ConfigError. Categories must occur in the evaluated items (a typo would always pass)."""
    errors = []
    if overall is not None and not _is_rate(overall):
        errors.append(f"--min-pass-rate must be between 0 and 1, got {overall:g}"
                      + (f" (did you mean {overall / 100:g}?)" if 1 < overall <= 100 else ""))
    per_category: dict[str, float] = {}
    for arg in category_args:
        name, sep, value = arg.rpartition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = None
        if not sep or not name or rate is None or not _is_rate(rate):
            errors.append(f"--min-category-pass-rate needs CATEGORY=RATE with RATE between 0 "
                          f"and 1, got '{arg}'")
        elif name not in known_categories:
            close = difflib.get_close_matches(name, list(known_categories), 3)
            errors.append(f"--min-category-pass-rate: no category '{name}' in the evaluated "
                          "items" + (f" (did you mean {', '.join(close)}?)" if close else
                                     f" (categories: {', '.join(sorted(known_categories))})"))
        else:
            per_category[name] = rate
    if errors:
        raise ConfigError("Invalid thresholds: " + "; ".join(errors) + ".")
    return Thresholds(overall, per_category)


def _is_rate(value: float) -> bool:
    return not math.isnan(value) and 0.0 <= value <= 1.0


def missed(thresholds: Thresholds, pass_rate: float, n: int,
           per_category: dict[str, dict[str, float]]) -> list[str]:
    """One line per threshold missed, with the figures (an empty list: all met)."""
    lines = []
    if thresholds.overall is not None and pass_rate < thresholds.overall:
        lines.append(f"overall pass rate {pass_rate:.1%} ({round(pass_rate * n)}/{n}) is below "
                     f"--min-pass-rate {thresholds.overall:.1%}")
    for cat, minimum in thresholds.per_category.items():
        row = per_category.get(cat, {"n": 0, "pass_rate": 0.0})
        if row["pass_rate"] < minimum:
            k = int(row["n"])
            lines.append(f"category '{cat}' pass rate {row['pass_rate']:.1%} "
                         f"({round(row['pass_rate'] * k)}/{k}) is below its minimum "
                         f"{minimum:.1%} (--min-category-pass-rate {cat}={minimum:g})")
    return lines


# ---------------------------------------------------------------------------- JUnit XML

def short_diff(reference: str, prediction: str) -> str:
    """A unified diff of reference vs prediction; JSON values are pretty-printed first, so a
    wrong field shows as its own line."""
    ref, pred = _lines(reference), _lines(prediction)
    diff = list(difflib.unified_diff(ref, pred, "reference", "prediction", lineterm="", n=1))
    if len(diff) > MAX_DIFF_LINES:
        diff = diff[:MAX_DIFF_LINES] + [f"... {len(diff) - MAX_DIFF_LINES} more lines"]
    return _clip("\n".join(diff))


def _lines(text: str) -> list[str]:
    value = parse_json(text or "", strict=True)
    if value is not None:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return (text or "").splitlines() or [""]


def _clip(text: str) -> str:
    """Bounded and XML-safe (forbidden characters shown as U+FFFD)."""
    text = _NOT_XML.sub("\ufffd", text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " ... (clipped)"


def junit_xml(rows: Sequence[dict], task: str, split: str, properties: dict[str, object]) -> str:
    """The JUnit document for one eval run's item rows (`loop.exports.run_item_rows`)."""
    by_category: dict[str, list[dict]] = {}
    for row in rows:
        by_category.setdefault(row["category"] or "default", []).append(row)
    root = ET.Element("testsuites", name=f"evalloop {task} {split}")
    for category, items in sorted(by_category.items()):
        suite = ET.SubElement(root, "testsuite", name=f"{task}.{split}.{category}")
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=key, value=_clip(str(value)))
        for row in items:
            case = ET.SubElement(suite, "testcase", name=_clip(row["example_id"]),
                                 classname=f"{task}.{category}",
                                 time=_time(row.get("latency_s")))
            if not row["passed"]:
                _failure(case, row)
        _count(suite, items)
    _count(root, rows)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _failure(case: ET.Element, row: dict) -> None:
    checks = ", ".join(row["failed_checks"]) or "unknown"
    signatures = ", ".join(row["signatures"] or row["failure_categories"])
    message = f"failed checks: {checks}" + (f"; signatures: {signatures}" if signatures else "")
    failure = ET.SubElement(case, "failure", message=_clip(message),
                            type="evalloop.failed_checks")
    failure.text = _clip("\n".join([
        message, f"similarity to reference: {row['similarity']:.3f}"
        if row.get("similarity") is not None else "", "",
        short_diff(row["reference"], row["prediction"])]).strip()) + "\n"
    ET.SubElement(case, "system-out").text = _clip(f"input: {row['input'] or ''}\n"
                                                  f"prediction: {row['prediction']}")


def _count(element: ET.Element, rows: Sequence[dict]) -> None:
    element.set("tests", str(len(rows)))
    element.set("failures", str(sum(not r["passed"] for r in rows)))
    element.set("errors", "0")
    if element.tag == "testsuite":
        element.set("skipped", "0")
    element.set("time", _time(sum(r.get("latency_s") or 0.0 for r in rows)))


def _time(seconds: float | None) -> str:
    return f"{seconds or 0.0:.3f}"  # Surefire/Jenkins accept plain decimals only


def write_junit(rows: Sequence[dict], task: str, split: str, properties: dict[str, object],
                out: Path) -> Path:
    return write_atomic(out, junit_xml(rows, task, split, properties))
