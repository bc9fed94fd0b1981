"""Task splits in the forms a team keeps data in: CSV, TSV, JSONL (.gz), Parquet, a datasets
folder; the [columns] table, the task-level instruction, and errors naming file, row, column."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from loop.core.errors import ConfigError, TaskDataError
from loop.data.tasks import load_task

ROWS = [{"text": f"order {i} arrived {'late' if i % 2 else 'on time'}",
         "label": "complaint" if i % 2 else "praise", "topic": f"t{i % 3}"} for i in range(8)]
INSTRUCTION = "Is this message a complaint or praise? Answer with one word."


def write_rows(path: Path, rows: list[dict]) -> Path:
    """`rows` in the form `path`'s ending names (a folder: a datasets folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith((".csv", ".tsv")):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]),
                                    delimiter="\t" if name.endswith(".tsv") else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif name.endswith(".jsonl.gz"):
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    elif name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def task_toml(directory: Path, body: str) -> Path:
    toml = directory / "task.toml"
    toml.write_text('name = "formats"\n' + body, encoding="utf-8")
    return toml


MAPPED = f'instruction = "{INSTRUCTION}"\n[columns]\ninput = "text"\noutput = "label"\n'


@pytest.mark.parametrize("name", ["test.csv", "test.tsv", "test.jsonl.gz", "test.parquet",
                                  "test_ds"])
def test_every_form_loads_with_columns_and_the_task_instruction(name, tmp_path):
    write_rows(tmp_path / name, ROWS)
    task = load_task(task_toml(tmp_path, f'test = "{name}"\n' + MAPPED
                               + 'category = "topic"\n'))
    test = task.split("test")
    assert [(e.instruction, e.input, e.output, e.category) for e in test] == [
        (INSTRUCTION, r["text"], r["label"], r["topic"]) for r in ROWS]
    assert task.answers.kind == "label" and task.answers.labels == {"complaint", "praise"}


def test_rows_with_their_own_instruction_keep_it_and_without_any_the_input_is_the_prompt(
        tmp_path):
    rows = [{"instruction": "Say it twice." if i == 0 else "", "input": f"word {i}",
             "output": f"word {i} word {i}"} for i in range(3)]
    write_rows(tmp_path / "test.csv", rows)
    task = load_task(task_toml(tmp_path, 'test = "test.csv"\ninstruction = "Repeat it."\n'))
    assert [e.instruction for e in task.split("test")] == ["Say it twice.", "Repeat it.",
                                                           "Repeat it."]
    write_rows(tmp_path / "q.csv", [{"question": "What is 2+2?", "answer": "4"}])
    task = load_task(task_toml(tmp_path, 'test = "q.csv"\n[columns]\ninput = "question"\n'
                                         'output = "answer"\n'))
    (row,) = task.split("test")
    assert (row.instruction, row.input, row.output) == ("What is 2+2?", "", "4")


def test_parquet_numbers_and_datasets_class_labels_become_text(tmp_path):
    import datasets

    write_rows(tmp_path / "n.parquet", [{"q": f"{i} + 1", "a": i + 1, "ok": i % 2 == 0}
                                        for i in range(4)])
    task = load_task(task_toml(tmp_path, 'test = "n.parquet"\n[columns]\ninput = "q"\n'
                                         'output = "a"\ncategory = "ok"\n'))
    assert [(e.output, e.category) for e in task.split("test")] == [
        ("1", "true"), ("2", "false"), ("3", "true"), ("4", "false")]
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    splits = {s: datasets.Dataset.from_dict({"text": [f"{s} {i}" for i in range(4)],
                                             "label": [i % 2 for i in range(4)]},
                                            features=features)
              for s in ("train", "validation", "test")}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    task = load_task(task_toml(tmp_path, 'train = "dd"\ndev = "dd"\ntest = "dd"\n'
                                         'instruction = "Sentiment?"\n'
                                         '[columns]\ninput = "text"\noutput = "label"\n'))
    assert [e.input for e in task.split("dev")] == [f"validation {i}" for i in range(4)]
    assert [e.output for e in task.split("test")] == ["neg", "pos", "neg", "pos"]


# ---------------------------------------------------------------------------- errors

FORMS = ["test.csv", "test.jsonl.gz", "test.parquet", "test_ds"]


def _error(tmp_path: Path, name: str, rows: list[dict], body: str = MAPPED) -> str:
    write_rows(tmp_path / name, rows)
    with pytest.raises(TaskDataError) as err:
        load_task(task_toml(tmp_path, f'test = "{name}"\n' + body))
    return str(err.value)


@pytest.mark.parametrize("name", FORMS)
def test_a_missing_column_names_the_file_the_column_and_the_columns_there(name, tmp_path):
    message = _error(tmp_path, name, [{"text": "a", "y": "b"}] * 2)
    assert str(tmp_path / name) in message
    if name.endswith(".jsonl.gz"):  # JSONL rows have their own keys: the first row says it
        assert ":1: missing required field 'label' (the output)" in message, message
    else:
        assert "no column 'label' (the output)" in message and "columns are text, y" in message


@pytest.mark.parametrize("name", FORMS)
def test_a_bad_row_names_the_row_and_the_column(name, tmp_path):
    rows = [{"text": "fine", "label": "ok"}, {"text": "no answer", "label": None}]
    if name.endswith(".csv"):
        rows[1]["label"] = ""
    message = _error(tmp_path, name, rows)
    where = ":2:" if name.endswith(".jsonl.gz") else " row 2"
    assert where in message and "'label' (the output)" in message, message
    assert ("is empty" if where == " row 2" else "must be a string") in message, message


def test_a_csv_row_with_too_many_cells_names_its_line(tmp_path):
    (tmp_path / "test.csv").write_text("text,label\nfine,ok\n"
                                       "one, two,three\n", encoding="utf-8")
    with pytest.raises(TaskDataError) as err:
        load_task(task_toml(tmp_path, 'test = "test.csv"\n' + MAPPED))
    assert f"{tmp_path / 'test.csv'} row 2 (line 3): 3 cells, but the header names 2 " \
           "columns (a comma inside a value needs quotes)" in str(err.value)


@pytest.mark.parametrize("name", ["test.jsonl.gz", "test.parquet", "test_ds"])
def test_a_wrong_type_names_the_row_and_the_column(name, tmp_path):
    message = _error(tmp_path, name, [{"text": ["a", "list"], "label": "ok"}] * 2)
    expected = (":1: field" if name.endswith(".jsonl.gz") else " row 1: column") \
        + " 'text' (the input) must be a string, got list"
    assert expected in message, message


def test_a_csv_messages_cell_that_is_not_json_is_a_type_error(tmp_path):
    (tmp_path / "test.csv").write_text('messages\n"[{""role"": ""user""}"\n', encoding="utf-8")
    with pytest.raises(TaskDataError) as err:
        load_task(task_toml(tmp_path, 'test = "test.csv"\n'))
    assert "row 1 (line 2): column 'messages' is not valid JSON" in str(err.value)


def test_paths_and_columns_are_checked_with_the_settings(tmp_path):
    (tmp_path / "rows.xlsx").write_text("x")
    (tmp_path / "folder").mkdir()
    write_rows(tmp_path / "t.csv", ROWS)
    with pytest.raises(ConfigError) as err:
        load_task(task_toml(tmp_path, 'test = "rows.xlsx"\ndev = "folder"\ntrain = "t.csv"\n'
                                      '[columns]\ninput = "text"\noutput = "text"\n'))
    message = str(err.value)
    assert "test: file" in message and "has no data form evalloop reads" in message
    assert "dev: file" in message and "is a directory, not a file or a datasets folder" in message
    assert "one column cannot hold two parts: 'text' is given for input and output" in message
