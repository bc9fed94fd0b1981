"""The building blocks of the task settings' models (loop/core/settings.py): the value types a
TOML holds (paths resolved against the TOML's folder and checked to exist, bf16, target modules,
suite versions, lists of names), the check vocabulary that comes in from evals, and `Section`,
the base of every table: unknown keys are errors, values are never coerced, and a table's
cross-key rules (`_rules`) are reported together with its per-key problems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, StrictStr,
                      ValidationError, ValidationInfo, model_validator)
from pydantic_core import InitErrorDetails

from loop.core.paths import data_problem, dir_problem, file_problem
from loop.core.settings_problems import RULE, rule_error


# ---------------------------------------------------------------------------- value types

def _path_validator(kind: Literal["file", "dir", "data"]) -> BeforeValidator:
    """A TOML path string, resolved against the TOML's folder; it must exist (`data`: a data
    file of a form evalloop reads, or a datasets folder)."""
    def resolve(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be a path string, got {value!r}")
        path = (Path((info.context or {}).get("root", ".")) / value).resolve()
        problem = {"file": file_problem, "dir": dir_problem, "data": data_problem}[kind](path)
        if problem:
            raise ValueError(f"{'directory' if kind == 'dir' else 'file'} {path} {problem}")
        return path

    return BeforeValidator(resolve, json_schema_input_type=str)


TomlFile = Annotated[Path, _path_validator("file")]
TomlDir = Annotated[Path, _path_validator("dir")]
TomlData = Annotated[Path, _path_validator("data")]  # a split: JSONL, CSV, Parquet, datasets
Names = Annotated[tuple[StrictStr, ...], Field(strict=False, min_length=1)]  # TOML lists


def _bf16(value: Any) -> str | bool:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f'must be "auto", true or false, got {value!r}')


def _modules(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ValueError(f'must be "all-linear" or a non-empty list of module names, got {value!r}')


def _version(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Bf16 = Annotated[str | bool, PlainValidator(_bf16, json_schema_input_type=Literal["auto"] | bool)]
TargetModules = Annotated[str | tuple[str, ...], PlainValidator(
    _modules, json_schema_input_type=str | list[str])]
SuiteVersion = Annotated[StrictStr, BeforeValidator(_version, json_schema_input_type=str | int)]


@dataclass(frozen=True)
class CheckVocabulary:
    """The registered checks, from the layer that owns them (evals.suites.CHECKS): a message for
    an unknown check name (None when known), and the problems of a check's params."""

    unknown: Callable[[str], str | None]
    param_problems: Callable[[str, Mapping[str, Any]], list[str]]


# ---------------------------------------------------------------------------- the table base

class Section(BaseModel):
    """A TOML table: unknown keys are errors, values are never coerced (no "3" for 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @classmethod
    def _rules(cls, data: dict, context: Mapping) -> tuple[dict | None, list[tuple[tuple, str]]]:
        """Cross-key rules on the raw table: (the table with derived values, problems as
        (location, message)); reported together with the per-key problems, or alone when the
        table comes back None (nothing else can be checked)."""
        return data, []

    @model_validator(mode="wrap")
    @classmethod
    def _apply_rules(cls, data: Any, handler, info: ValidationInfo):
        problems: list[InitErrorDetails] = []
        if isinstance(data, dict):
            table, found = cls._rules(dict(data), info.context or {})
            problems = [rule_error(loc, m, data.get(loc[0]) if loc else data)
                        for loc, m in found]
            if table is None:
                raise ValidationError.from_exception_data(cls.__name__, problems)
            data = table
        try:
            result = handler(data)
        except ValidationError as exc:
            # a nested section's rule errors come back as plain dicts: rebuild them
            errors = [rule_error(e["loc"], e["ctx"]["m"], e["input"]) if e["type"] == RULE
                      else e for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, [*errors, *problems]) from None
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return result


def positive_int(value: Any) -> bool:
    """A raw TOML value that is a whole number >= 1 (a rule checks it before pydantic does)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
