"""Reading a task TOML into its settings (loop/core/settings.py's models), once, before any
model or the store is touched:

    settings = load_settings("task.toml")   # ConfigError listing every problem at once
    settings.training.learning_rate, settings.targeted.teacher, settings.path

`parse_settings` validates a TOML already read, `with_overrides` one table again with some keys
replaced (command-line flags), `task_files` what a task's outputs must never replace, and
`json_schema` what `evalloop schema` writes for editors.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loop.core.errors import ConfigError
from loop.core.paths import file_problem
from loop.core.records import content_hash
from loop.core.settings import TaskSettings
from loop.core.settings_problems import problems_message, submodel
from loop.core.settings_values import CheckVocabulary


def json_schema() -> dict:
    """The task TOML's JSON Schema (what `evalloop schema` writes, for editors), in draft-07:
    the newest draft TOML editors (Taplo, Even Better TOML) read; pydantic's `$defs` become
    draft-07's `definitions`."""
    text = json.dumps(TaskSettings.model_json_schema()).replace('"#/$defs/', '"#/definitions/')
    schema = json.loads(text)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "evalloop task",
            **{k: v for k, v in schema.items() if k not in ("$defs", "title")},
            "definitions": schema.get("$defs", {})}


# ---------------------------------------------------------------------------- loading

def task_files(path: str | Path) -> list[Path]:
    """A task TOML and the files it names (splits, suite file), read leniently and never
    validated: what outputs must not replace, even for a task that no longer loads."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return [path]
    suite = raw.get("suite")
    names = [raw.get(k) for k in ("train", "dev", "test")] + [
        suite.get("file") if isinstance(suite, dict) else None]
    return [path] + [(path.parent / n).resolve() for n in names if isinstance(n, str) and n]


def default_task_name(path: Path) -> str:
    """A nameless task's identity: its folder and file name with a hash of the TOML's resolved
    path, so `A/task.toml` and `B/task.toml` never share one, and editing or adding rows keeps
    it (history and the champion carry over). Moving the file changes it: give `name` to keep
    one across moves."""
    path = Path(path).resolve()
    return f"{path.parent.name}-{path.stem}-{content_hash(str(path), length=8)}".lstrip("-")


def load_settings(path: str | Path, checks: CheckVocabulary | None = None) -> TaskSettings:
    """Read and validate a task TOML; raise one ConfigError listing every problem."""
    path = Path(path)
    if problem := file_problem(path):
        raise ConfigError(f"Task file {path} {problem} (expected a task TOML, see README).")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Task file {path} is not valid TOML: {exc}.") from None
    except OSError as exc:
        raise ConfigError(f"Task file {path} cannot be read: {exc.strerror}.") from None
    return parse_settings(raw, path, checks)


def parse_settings(raw: dict, path: str | Path, checks: CheckVocabulary | None = None
                   ) -> TaskSettings:
    """Validate an already-read TOML document as if it were the file at `path`."""
    path = Path(path).resolve()
    context = {"root": path.parent, "stem": default_task_name(path), "checks": checks,
               "path": path, "tables": {k: v for k, v in raw.items() if isinstance(v, dict)}}
    try:
        return TaskSettings.model_validate(raw, context=context)
    except ValidationError as exc:
        suite_file = (raw.get("suite") or {}).get("file")
        files = {"suite": (path.parent / suite_file).resolve()} \
            if isinstance(suite_file, str) else {}
        raise ConfigError(problems_message(exc, TaskSettings, path, files)) from None


def with_overrides(settings: TaskSettings, section: str, **changes: Any) -> Any:
    """One section validated again from its TOML table with some keys replaced (command-line
    flags), e.g. `with_overrides(s, "targeted", n=50)`; problems read as load_settings's do."""
    data = {**settings.tables.get(section, {}), **changes}
    kind = submodel(TaskSettings, section)
    try:
        return kind.model_validate(data, context={"root": settings.path.parent})
    except ValidationError as exc:
        raise ConfigError(problems_message(exc, TaskSettings, settings.path,
                                           prefix=(section,))) from None
