"""pydantic's validation errors as one line each, `<file>: [section] key: message`, in words a
TOML author reads ("must be >= 1, got 0", "unknown key (did you mean 'learning_rate'?)") and
never with a traceback or a secret. Generic over the root model: loop.core.settings uses it.

Tables are the fields whose type is a model (or an optional one): their names become the
`[section]`, the rest of the location the key (`checks[0].name`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

RULE = "settings_rule"  # the error type of a cross-key rule
SECRET_KEYS = ("api_key",)  # never echoed: the message says where a key belongs instead
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false",
              "string": "a string", "tuple": "a list", "list": "a list", "dict": "a table",
              "model": "a table"}
BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
          "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}


def rule_error(loc: tuple, message: str, value: Any) -> InitErrorDetails:
    """A cross-key rule's problem as a pydantic error, reported with the per-key ones."""
    return InitErrorDetails(type=PydanticCustomError(RULE, "{m}", {"m": message}), loc=loc,
                            input=value)


def problems_message(exc: ValidationError, root: type[BaseModel], path: Path,
                     files: Mapping[str, Path] | None = None, prefix: tuple = ()) -> str:
    """Every problem in one paragraph. `files`: tables read from another file (a suite file);
    `prefix`: the location of a table validated on its own."""
    errors = exc.errors()
    # a list whose items all failed is also "too short": the items' own errors say it better
    errors = [e for e in errors if e["type"] != "too_short" or not any(
        len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"] for o in errors)]
    lines = [problem_line(e, root, path, files or {}, prefix) for e in errors]
    return f"{len(lines)} problem(s) in the task settings: " + "; ".join(lines) + "."


def problem_line(error: Mapping, root: type[BaseModel], path: Path,
                 files: Mapping[str, Path], prefix: tuple = ()) -> str:
    """`<file>: [section] key: message` for one pydantic error."""
    loc = [*prefix, *error["loc"]]
    model, section = root, []
    while loc and isinstance(loc[0], str) and (sub := submodel(model, loc[0])) is not None:
        model = sub
        section.append(loc.pop(0))
    message = _message(error, model, loc, root)
    if message.startswith("unknown section"):
        section, loc = [str(loc[0])], []
    file = path
    if section and section[0] in files and loc[:1] != ["file"]:
        file, section = files[section[0]], []  # the table's own file: its keys are top-level
    where = (f"[{'.'.join(section)}]" if section else "") + (" " if section and loc else "") \
        + _key(loc)
    return f"{file}: {where or '(top level)'}: {message}"


def submodel(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The model of table `key` of `model` (None when `key` is a plain key)."""
    field = model.model_fields.get(key)
    if field is None:
        return None
    kinds = get_args(field.annotation) if get_origin(field.annotation) in (Union, UnionType) \
        else (field.annotation,)  # a table, or an optional one; never a list of tables
    return next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)


def _key(parts: list) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _message(error: Mapping, model: type[BaseModel], rest: list, root: type[BaseModel]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        key = str(rest[-1]) if rest else "?"
        if key in SECRET_KEYS:
            return (f"not allowed: put the key in an environment variable and give its name "
                    f"as {key}_env")
        table = isinstance(value, dict) and model is root
        known = [k for k in model.model_fields
                 if model is not root or (submodel(model, k) is not None) == table]
        close = difflib.get_close_matches(key, known, n=1)
        return ("unknown section" if table else "unknown key") + (
            f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})")
    if kind == "missing":
        return "is required"
    if kind in (RULE, "value_error", "assertion_error"):
        return str(ctx.get("error", ctx.get("m", error["msg"])))
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if base in TYPE_WORDS and kind != base:
        return f"must be {TYPE_WORDS[base]}, got {value!r}"
    if kind in BOUNDS:
        sign, name = BOUNDS[kind]
        return f"must be {sign} {ctx[name]}, got {value!r}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), expected, n=1)
        return (f"must be one of {ctx.get('expected')}, got {value!r}"
                + (f" (did you mean '{close[0]}'?)" if close else ""))
    return error["msg"][:1].lower() + error["msg"][1:]
