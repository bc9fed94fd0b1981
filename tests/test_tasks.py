"""Task TOML validation, JSONL parsing with located errors, dev split, prompt formatting."""

from __future__ import annotations

import json

import pytest

from conftest import DEMO_TASK, classification_records, write_task
from loop.config import load_task_config
from loop.errors import ConfigError, TaskDataError
from loop.prompts import ALPACA_STOP, build_prompt, stop_strings
from loop.records import Example
from loop.tasks import load_task, split_off_dev


def test_demo_task_loads_with_required_sizes():
    task = load_task(DEMO_TASK)
    assert len(task.split("train")) >= 3000
    assert len(task.split("dev")) >= 200 and len(task.split("test")) >= 200
    assert len({e.category for e in task.split("test")}) >= 5
    pool = {(e.instruction, e.input) for e in task.split("train")}
    assert not [e for e in task.split("test") if (e.instruction, e.input) in pool]


def test_missing_dev_is_split_off_train_deterministically(tmp_path):
    toml = write_task(tmp_path, {"train": classification_records(50), "test":
                                 classification_records(5, 500)})
    a, b = load_task(toml), load_task(toml)
    assert [e.id for e in a.split("dev")] == [e.id for e in b.split("dev")]
    assert len(a.split("dev")) == 5 and len(a.split("train")) == 45
    assert not {e.id for e in a.split("dev")} & {e.id for e in a.split("train")}
    assert all(e.split == "dev" for e in a.split("dev"))


def test_ids_default_to_content_hash_and_category_to_default(tmp_path):
    toml = write_task(tmp_path, {"test": [{"instruction": "Say hi", "output": "hi"}]})
    (example,) = load_task(toml).split("test")
    assert example.id == Example.make_id("Say hi", "", "hi")
    assert example.category == "default"


@pytest.mark.parametrize("line, fragment", [
    ('{"instruction": "x", "output": "y"', "not valid JSON"),
    ('{"instruction": "x"}', "missing required field 'output'"),
    ('{"output": "y"}', "missing required field 'instruction'"),
    ('{"instruction": "x", "output": 3}', "field 'output' must be a string"),
    ('["instruction", "output"]', "expected a JSON object"),
    ('{"instruction": "  ", "output": "y"}', "field 'instruction' is empty"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, fragment):
    (tmp_path / "test.jsonl").write_text('{"instruction": "ok", "output": "ok"}\n' + line + "\n")
    (tmp_path / "t.toml").write_text('test = "test.jsonl"\n')
    with pytest.raises(TaskDataError) as err:
        load_task(tmp_path / "t.toml")
    assert f"test.jsonl:2" in str(err.value) and fragment in str(err.value)


def test_invalid_utf8_and_duplicate_ids(tmp_path):
    (tmp_path / "test.jsonl").write_bytes(b'{"instruction": "\xff", "output": "y"}\n')
    (tmp_path / "t.toml").write_text('test = "test.jsonl"\n')
    with pytest.raises(TaskDataError, match="not valid UTF-8"):
        load_task(tmp_path / "t.toml")
    rec = {"id": "same", "instruction": "a", "output": "b"}
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(TaskDataError, match="duplicate id 'same'"):
        load_task(tmp_path / "t.toml")


def test_empty_test_split_is_a_clear_error(tmp_path):
    (tmp_path / "test.jsonl").write_text("\n")
    (tmp_path / "t.toml").write_text('test = "test.jsonl"\n')
    with pytest.raises(TaskDataError, match="empty"):
        load_task(tmp_path / "t.toml")


def test_config_reports_every_problem_at_once(tmp_path):
    (tmp_path / "t.toml").write_text(
        'dev = "nope.jsonl"\ncolour = 1\n[generation]\nmax_new_tokens = "x"\n[wat]\n')
    with pytest.raises(ConfigError) as err:
        load_task_config(tmp_path / "t.toml")
    message = str(err.value)
    for fragment in ("'test' is required", "nope.jsonl", "unknown key 'colour'",
                     "max_new_tokens must be int", "unknown section [wat]"):
        assert fragment in message


def test_toml_syntax_error(tmp_path):
    (tmp_path / "t.toml").write_text('test = "a.jsonl\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_task_config(tmp_path / "t.toml")


def test_split_off_dev_keeps_small_pools():
    one = [Example("a", "i", "o", split="train")]
    assert split_off_dev(one, 0.1) == (one, [])


class _NoTemplate:
    chat_template = None


class _Template:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def test_prompt_uses_alpaca_without_chat_template():
    ex = Example("a", "Translate", "Bonjour", input="Hello")
    prompt = build_prompt(_NoTemplate(), ex)
    assert prompt == "### Instruction:\nTranslate\n\n### Input:\nHello\n\n### Response:\n"
    assert build_prompt(_NoTemplate(), Example("b", "Say hi", "hi")).endswith(
        "Say hi\n\n### Response:\n")
    assert stop_strings(_NoTemplate()) == [ALPACA_STOP]


def test_prompt_uses_chat_template_with_optional_system():
    ex = Example("a", "Translate", "Bonjour", input="Hello")
    assert build_prompt(_Template(), ex) == "user:Translate\n\nHello|assistant:"
    assert build_prompt(_Template(), ex, "Be brief").startswith("system:Be brief|user:")
    assert stop_strings(_Template()) == []
