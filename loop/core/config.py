"""Task configuration: one TOML file per task, validated in full before any model is touched.

A task TOML names its JSONL splits (paths relative to the TOML) and optional sections:

    name = "support"              # default: the file's stem
    train = "train.jsonl"         # optional pool for targeted data
    dev = "dev.jsonl"             # optional: split off train when absent
    test = "test.jsonl"           # required

    [generation]                  # all optional
    max_new_tokens = 64
    batch_size = 16

    [tracking]                    # optional: MLflow runs for training, evaluation, cycles
    enabled = true                # false: log nothing
    uri = "http://mlflow:5000"    # $MLFLOW_TRACKING_URI wins; neither set: WS/mlflow.db (sqlite)

Later stages add their own sections ([suite], [training], [targeted], [gate], [benchmarks]); unknown
top-level keys are reported together with every other error.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loop.core.errors import ConfigError

KNOWN_SECTIONS = {
    "generation", "suite", "similarity", "failures", "training", "targeted", "gate", "benchmarks",
    "cycle", "arena", "tracking",
}
KNOWN_KEYS = {"name", "description", "train", "dev", "test", "dev_fraction", "system_prompt"}


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    batch_size: int = 16

    def as_dict(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size}


@dataclass(frozen=True)
class TrackingConfig:
    """[tracking]: MLflow logging of training, evaluation and cycles (loop/tracking.py)."""

    enabled: bool = True
    uri: str | None = None  # $MLFLOW_TRACKING_URI wins; neither: sqlite under the workspace


@dataclass(frozen=True)
class TaskConfig:
    name: str
    path: Path
    test: Path
    train: Path | None = None
    dev: Path | None = None
    dev_fraction: float = 0.1
    system_prompt: str | None = None
    generation: GenerationConfig = GenerationConfig()
    tracking: TrackingConfig = TrackingConfig()
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """Raw dict of an optional section (validated by the stage that owns it)."""
        return dict(self.sections.get(name, {}))


def _typed(errors: list[str], where: str, table: dict, key: str, kind: type, default):
    value = table.get(key, default)
    if value is default:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        errors.append(f"{where}{key} must be {kind.__name__}, got {type(value).__name__} {value!r}")
        return default
    return value


def load_task_config(path: str | Path) -> TaskConfig:
    """Read and validate a task TOML; raise ConfigError listing every problem at once."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Task file {path} does not exist (expected a task TOML, see README).")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Task file {path} is not valid TOML: {exc}.") from None
    errors: list[str] = []
    root = path.parent
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in KNOWN_SECTIONS:
                errors.append(f"unknown section [{key}] (known: {', '.join(sorted(KNOWN_SECTIONS))})")
        elif key not in KNOWN_KEYS:
            errors.append(f"unknown key '{key}' (known: {', '.join(sorted(KNOWN_KEYS))})")

    def split_path(key: str, required: bool) -> Path | None:
        value = raw.get(key)
        if value is None:
            if required:
                errors.append(f"'{key}' is required: the path of the {key} JSONL file")
            return None
        if not isinstance(value, str):
            errors.append(f"'{key}' must be a path string, got {value!r}")
            return None
        resolved = (root / value).resolve()
        if not resolved.is_file():
            errors.append(f"'{key}' file {resolved} does not exist")
        return resolved

    test = split_path("test", required=True)
    train = split_path("train", required=False)
    dev = split_path("dev", required=False)
    name = _typed(errors, "", raw, "name", str, path.stem)
    dev_fraction = _typed(errors, "", raw, "dev_fraction", float, 0.1)
    if not 0.0 < dev_fraction < 1.0:
        errors.append(f"dev_fraction must be between 0 and 1, got {dev_fraction}")
    system_prompt = _typed(errors, "", raw, "system_prompt", str, None)
    gen_raw = raw.get("generation", {})
    gen = GenerationConfig(
        max_new_tokens=_typed(errors, "generation.", gen_raw, "max_new_tokens", int, 64),
        batch_size=_typed(errors, "generation.", gen_raw, "batch_size", int, 16),
    )
    for key in set(gen_raw) - {"max_new_tokens", "batch_size"}:
        errors.append(f"unknown key generation.{key}")
    if gen.max_new_tokens < 1 or gen.batch_size < 1:
        errors.append("generation.max_new_tokens and generation.batch_size must be positive")
    track_raw = raw.get("tracking", {})
    tracking = TrackingConfig(
        enabled=_typed(errors, "tracking.", track_raw, "enabled", bool, True),
        uri=_typed(errors, "tracking.", track_raw, "uri", str, None) or None)
    for key in set(track_raw) - {"enabled", "uri"}:
        errors.append(f"unknown key tracking.{key} (known: enabled, uri)")
    if errors:
        raise ConfigError(f"Task file {path} has {len(errors)} problem(s): " + "; ".join(errors) + ".")
    sections = {k: v for k, v in raw.items() if isinstance(v, dict)}
    return TaskConfig(
        name=name, path=path.resolve(), test=test, train=train, dev=dev,
        dev_fraction=dev_fraction, system_prompt=system_prompt, generation=gen, tracking=tracking,
        sections=sections,
    )
