"""Task TOML validation, JSONL parsing with located errors, dev split, prompt formatting."""

from __future__ import annotations

import json

import pytest

from conftest import DEMO_TASK, classification_records, write_task
from loop.core.settings_load import load_settings
from loop.core.errors import ConfigError, TaskDataError
from loop.core.prompts import ALPACA_INPUT_STOP, ALPACA_STOP, build_prompt, stop_strings
from loop.core.records import Example
from loop.data.tasks import load_task, split_off_dev


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
    assert "test.jsonl:2" in str(err.value) and fragment in str(err.value)


def test_invalid_utf8_and_duplicate_ids(tmp_path):
    (tmp_path / "test.jsonl").write_bytes(b'{"instruction": "\xff", "output": "y"}\n')
    (tmp_path / "t.toml").write_text('test = "test.jsonl"\n')
    with pytest.raises(TaskDataError, match="not valid UTF-8"):
        load_task(tmp_path / "t.toml")
    rec = {"id": "same", "instruction": "a", "output": "b"}
    other = {**rec, "output": "c"}
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(other) + "\n")
    with pytest.raises(TaskDataError) as err:
        load_task(tmp_path / "t.toml")
    assert "test.jsonl:2: duplicate id 'same' with different content (first seen on line 1)" \
        in str(err.value)


def test_empty_test_split_is_a_clear_error(tmp_path):
    (tmp_path / "test.jsonl").write_text("\n")
    (tmp_path / "t.toml").write_text('test = "test.jsonl"\n')
    with pytest.raises(TaskDataError, match="empty"):
        load_task(tmp_path / "t.toml")


def test_config_reports_every_problem_at_once(tmp_path):
    (tmp_path / "t.toml").write_text(
        'dev = "nope.jsonl"\ncolour = 1\n[generation]\nmax_new_tokens = "x"\n[wat]\n')
    with pytest.raises(ConfigError) as err:
        load_task(tmp_path / "t.toml")
    message = str(err.value)
    toml = tmp_path / "t.toml"
    assert message.startswith("5 problem(s)")
    for fragment in (f"{toml}: test: is required",
                     f"{toml}: dev: file {tmp_path / 'nope.jsonl'} does not exist",
                     f"{toml}: colour: unknown key", f"{toml}: [wat]: unknown section",
                     f"{toml}: [generation] max_new_tokens: must be an integer, got 'x'"):
        assert fragment in message


def test_toml_syntax_error(tmp_path):
    (tmp_path / "t.toml").write_text('test = "a.jsonl\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path / "t.toml")


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
    assert stop_strings(_NoTemplate()) == [ALPACA_STOP, ALPACA_INPUT_STOP]


def test_prompt_uses_chat_template_with_optional_system():
    ex = Example("a", "Translate", "Bonjour", input="Hello")
    assert build_prompt(_Template(), ex) == "user:Translate\n\nHello|assistant:"
    assert build_prompt(_Template(), ex, "Be brief").startswith("system:Be brief|user:")
    assert stop_strings(_Template()) == []


# ---------------------------------------------------------------------------- data as users have it

def _rows(*pairs: tuple[str, str], instruction: str = "Classify the reply.") -> list[dict]:
    return [{"instruction": instruction, "input": i, "output": o} for i, o in pairs]


def test_exact_duplicates_kept_in_test_dropped_from_train_before_dev(tmp_path):
    train = (_rows(*[(f"reply {i}", "other") for i in range(20)])
             + _rows(("yes", "affirm")) * 4 + _rows(("13", "number")) * 2)
    test = _rows(("yes", "affirm")) * 3 + _rows(("no", "deny"))
    task = load_task(write_task(tmp_path, {"train": train, "test": test}))
    # every test row stays its own item; the first copy keeps the plain content-hash id
    yes = Example.make_id("Classify the reply.", "yes", "affirm")
    assert [e.id for e in task.split("test")][:3] == [yes, f"{yes}.2", f"{yes}.3"]
    assert len(task.split("test")) == 4
    # the pool keeps one of each: 22 distinct rows, split into dev and train without overlap
    pool, dev = task.split("train"), task.split("dev")
    assert len(pool) + len(dev) == 22
    content = lambda es: {(e.instruction, e.input, e.output, e.category) for e in es}  # noqa: E731
    assert len(content(pool)) == len(pool) and not content(pool) & content(dev)
    assert task.report.get("train").dropped == 4 and task.report.get("train").rows == 26
    assert task.report.get("test").repeated == 2 and task.report.get("test").dropped == 0
    assert task.report.line() == ("tiny: train 26 rows, 4 exact duplicates dropped; dev 2 rows "
                                  "drawn from train; test 4 rows (2 repeated, kept as separate "
                                  "items); answers: label (one label each, 4 labels; inferred "
                                  "from 26 references)")
    assert load_task(tmp_path / "task.toml").data_hash == task.data_hash  # stable ids


def test_same_content_other_category_is_not_an_exact_duplicate(tmp_path):
    rows = [{"instruction": "Say", "output": "x", "category": c} for c in ("a", "b", "a")]
    task = load_task(write_task(tmp_path, {"train": rows, "dev": rows, "test": rows[:1]}))
    assert sorted(e.category for e in task.split("train")) == ["a", "b"]
    assert len({e.id for e in task.split("dev")}) == 3
    assert task.report.get("dev").repeated == 1 and task.report.get("dev").text() == (
        "dev 3 rows (1 repeated, kept as separate items)")


def test_explicit_ids_repeated_with_identical_content_are_exact_duplicates(tmp_path):
    rec = {"id": "q1", "instruction": "a", "output": "b"}
    task = load_task(write_task(tmp_path, {"train": [rec, rec, {**rec, "id": "q2"}],
                                           "test": [rec, rec]}))
    assert [e.id for e in task.split("test")] == ["q1", "q1.2"]
    assert [e.id for e in task.split("train")] == ["q1"] and not task.splits["dev"]
    assert task.report.get("train").dropped == 2


def test_occurrence_ids_never_take_an_explicit_id(tmp_path):
    plain = {"instruction": "a", "output": "b"}
    taken = {"id": f"{Example.make_id('a', '', 'b')}.2", "instruction": "c", "output": "d"}
    task = load_task(write_task(tmp_path, {"test": [plain, plain, taken]}))
    ids = [e.id for e in task.split("test")]
    assert ids[2] == taken["id"] and ids[1].endswith(".3") and len(set(ids)) == 3


# ---------------------------------------------------------------------------- chat JSONL

def _chat(*turns: tuple[str, str], **extra) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


def test_chat_rows_load_mixed_with_plain_rows(tmp_path):
    test = [
        _chat(("system", "You extract slots."), ("user", "Book a car"), ("assistant", "{}")),
        _chat(("user", "Hi"), ("assistant", "hello"), id="c2", category="greet"),
        _chat(("user", "Bye"), ("assistant", "bye"), metadata={"id": "c3", "category": "end"}),
        {"instruction": "plain", "output": "row"},
    ]
    task = load_task(write_task(tmp_path, {"test": test}))
    a, b, c, d = task.split("test")
    assert (a.instruction, a.input, a.output) == ("You extract slots.\n\nBook a car", "", "{}")
    assert a.id == Example.make_id(a.instruction, "", "{}") and a.category == "default"
    assert (b.id, b.category, b.instruction) == ("c2", "greet", "Hi")
    assert (c.id, c.category) == ("c3", "end")
    assert (d.instruction, d.output) == ("plain", "row")


def test_chat_system_message_equal_to_the_task_system_prompt_is_not_repeated(tmp_path):
    rows = [_chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "hello")),
            _chat(("system", "Other rules."), ("user", "Hi"), ("assistant", "hello"))]
    toml = write_task(tmp_path, {"test": rows}, extra_toml='system_prompt = "Be brief."\n')
    assert [e.instruction for e in load_task(toml).split("test")] == ["Hi", "Other rules.\n\nHi"]


@pytest.mark.parametrize("row, fragment", [
    ({"messages": []}, "field 'messages' must be a non-empty list"),
    ({"messages": "hi"}, "field 'messages' must be a non-empty list"),
    ({"messages": ["hi"]}, "field 'messages[0]' must be an object"),
    (_chat(("bot", "x"), ("assistant", "y")), "field 'messages[0].role' must be one of"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]},
     "field 'messages[0].content' must be a string, got int"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
     "field 'messages[0].content' must be a string, got NoneType"),
    (_chat(("user", "x")), "field 'messages[0]' must be the assistant's reply"),
    (_chat(("user", "x"), ("assistant", "y"), ("user", "z")), "field 'messages[2]' must be the "
     "assistant's reply"),
    (_chat(("assistant", "y")), "field 'messages[-1]' must be the user turn"),
    (_chat(("system", "s"), ("assistant", "y")), "field 'messages[0]' must be the user turn"),
    (_chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")),
     "field 'messages[0]' is an earlier user turn: multi-turn history is not supported"),
    (_chat(("user", " "), ("assistant", "y")), "field 'messages[0].content' is empty"),
    ({**_chat(("user", "x"), ("assistant", "y")), "output": "y"}, "field 'output' next to "
     "'messages'"),
    (_chat(("user", "x"), ("assistant", "y"), metadata=[1]), "field 'metadata' must be an object"),
    (_chat(("user", "x"), ("assistant", "y"), metadata={"id": 7}),
     "field 'metadata.id' must be a string"),
    (_chat(("user", "x"), ("assistant", "y"), category=["a"]), "field 'category' must be a string"),
])
def test_bad_chat_rows_name_file_line_and_field(tmp_path, row, fragment):
    lines = [_chat(("user", "ok"), ("assistant", "ok")), row]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "t.toml").write_text('test = "test.jsonl"\n')
    with pytest.raises(TaskDataError) as err:
        load_task(tmp_path / "t.toml")
    assert "test.jsonl:2: " in str(err.value) and fragment in str(err.value), str(err.value)


def test_cli_prints_the_load_note_before_other_work(tmp_path, capsys):
    from loop.cli import main

    toml = write_task(tmp_path, {"train": _rows(("yes", "a")) * 3 + _rows(("no", "b")),
                                 "test": _rows(("yes", "a")) * 2})
    assert main(["eval", "--task", str(toml), "--model", "no-such-model", "--workspace",
                 str(tmp_path / "ws")]) == 2
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("tiny: train 4 rows, 2 exact duplicates dropped; dev 1 rows "
                                   "drawn from train; test 2 rows (1 repeated, kept as separate "
                                   "items); answers: label (one label each, 2 labels; inferred "
                                   "from 4 references)")  # what was inferred, in the first line


def test_the_task_template_is_fitted_once_on_every_split(tmp_path):
    """Failures, targeting and curation read one template from the Task (not refitted from the
    store per run): the shared instruction is template in every split, the message varies."""
    task = load_task(write_task(tmp_path, {
        "train": classification_records(12, offset=100), "dev": classification_records(4, 200),
        "test": classification_records(4)}))
    assert task.template is task.template
    vary = task.varying_part()
    question = "Name the colour mentioned in the sentence. One word.\n\nItem 7 was painted red."
    assert "Name the colour" not in vary(question) and "7 was painted red" in vary(question)
