"""`evalloop init`: a task from a CSV, a Parquet file or a datasets folder that `evalloop eval`
and the cycle's loader accept; the answer kind from the shared answer model; right figures."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from loop.cli import main
from loop.core.errors import TaskDataError
from loop.data.init_task import draw_splits, plan_task
from loop.data.tasks import load_task
from test_task_formats import write_rows

LABELS = ("billing", "shipping", "refund")
INSTRUCTION = "Which team handles this ticket? Answer with one word."  # 9 words


def label_rows(n: int = 60) -> list[dict]:
    """Label-heavy rows; every input starts with its own word, so only the instruction is
    shared by all prompts. Rows 0-3 repeat as rows n..n+3 (4 exact duplicates)."""
    rows = [{"text": f"w{i} about order {i}", "label": LABELS[i % 3]}
            for i in range(n)]
    return rows + rows[:4]


def text_rows(n: int = 30) -> list[dict]:
    return [{"question": f"q{i} Describe item {i} in a sentence.",
             "answer": f"Item {i} is a small thing that people use for task number {i * 7}."}
            for i in range(n)]


def run_init(capsys, *args: str) -> tuple[int, str]:
    code = main(["init", *args, "--no-smoke"])
    return code, capsys.readouterr().out


def test_a_label_csv_becomes_a_task_eval_and_the_cycle_loader_accept(tmp_path, capsys):
    data = write_rows(tmp_path / "tickets.csv", label_rows())
    code, out = run_init(capsys, str(data), "--instruction", INSTRUCTION, "--out",
                         str(tmp_path / "task"), "--model", "tiny-random")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"{data}: 64 rows, 4 exact duplicates"
    assert lines[1].startswith("answers: label (one label each, 3 labels; inferred from 64")
    assert lines[2] == "labels: billing 22, refund 21, shipping 21"  # ties by name
    # 9 instruction words shared, 4 input words each sharing no 4-gram: 9 / 13 of every prompt
    assert lines[3] == "prompt text shared by all rows: 69%"
    toml = tmp_path / "task" / "task.toml"
    text = toml.read_text()
    assert text.startswith("#:schema ./task.schema.json\n")
    assert 'answer = "label"' in text and 'labels = ["billing", "refund", "shipping"]' in text
    assert (tmp_path / "task" / "task.schema.json").is_file()
    task = load_task(toml)  # what the cycle loads
    written = {s: sum(1 for _ in (tmp_path / "task" / f"{s}.jsonl").open())
               for s in ("train", "dev", "test")}
    assert sum(written.values()) == 64 and written["test"] == 13 and written["dev"] == 6
    assert lines[4].startswith(f"splits: train {written['train']}, dev 6, test 13 (dev, test "
                               "drawn with seed 0, stratified by label; rows with the same "
                               "prompt kept on one side)")
    assert len(task.split("train")) == written["train"] - task.report.get("train").dropped
    assert (len(task.split("dev")), len(task.split("test"))) == (6, 13)
    assert task.answers.kind == "label" and task.settings.instruction == INSTRUCTION
    assert main(["eval", "--task", str(toml), "--model", "tiny-random", "--workspace",
                 str(tmp_path / "ws"), "--limit", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_a_free_text_csv_is_inferred_as_text(tmp_path, capsys):
    data = write_rows(tmp_path / "items.csv", text_rows())
    code, out = run_init(capsys, str(data), "--out", str(tmp_path / "t"))
    assert code == 0 and "answers: text (free text" in out and "labels:" not in out
    assert "note: the prompts share no text" in out  # no --instruction, no shared 4-gram
    task = load_task(tmp_path / "t" / "task.toml")
    assert task.answers.kind == "text"
    assert task.split("test")[0].instruction.startswith("q")  # the input alone is the prompt


def test_a_parquet_file_and_a_datasets_folder_become_tasks_eval_accepts(tmp_path, capsys):
    import datasets

    parquet = write_rows(tmp_path / "p.parquet", label_rows(40))
    assert run_init(capsys, str(parquet), "--instruction", INSTRUCTION, "--out",
                    str(tmp_path / "pt"))[0] == 0
    rows = label_rows(40)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:30]),
                          "test": datasets.Dataset.from_list(rows[30:])}
                         ).save_to_disk(str(tmp_path / "dd"))
    code, out = run_init(capsys, str(tmp_path / "dd"), "--instruction", INSTRUCTION, "--out",
                         str(tmp_path / "dt"))
    assert code == 0 and "splits: train 27, dev 3, test 14 (dev drawn with seed 0" in out, out
    text = (tmp_path / "dt" / "task.toml").read_text()
    assert 'test = "../dd"  # 14 rows, read where it lies' in text  # the test split in place
    assert not (tmp_path / "dt" / "test.jsonl").exists()
    for folder in ("pt", "dt"):
        assert main(["eval", "--task", str(tmp_path / folder / "task.toml"), "--model",
                     "tiny-random", "--workspace", str(tmp_path / "ws"), "--limit", "2"]) == 0
        assert load_task(tmp_path / folder / "task.toml").split("train")


def test_drawn_splits_are_seeded_stratified_and_keep_duplicates_on_one_side(tmp_path):
    rows = label_rows(90) + label_rows(90)[:10]  # 14 exact duplicates in all
    data = write_rows(tmp_path / "d.csv", rows)
    plan = plan_task(data, instruction=INSTRUCTION)
    again = plan_task(data, instruction=INSTRUCTION)
    assert [[e.id for e in s.examples] for s in plan.splits] == \
        [[e.id for e in s.examples] for s in again.splits]
    splits = {s.name: s.examples for s in plan.splits}
    prompts = {name: {e.input for e in es} for name, es in splits.items()}
    assert not (prompts["train"] & prompts["test"] or prompts["train"] & prompts["dev"]
                or prompts["dev"] & prompts["test"])
    for name, share in (("test", 0.2), ("dev", 0.1)):
        counts = Counter(e.output for e in splits[name])
        assert set(counts) == set(LABELS), counts
        assert abs(len(splits[name]) - share * len(rows)) <= 3, len(splits[name])
    other = draw_splits(next(s for s in plan.splits if s.name == "train"), ["test"], "", 1)
    assert len(other["test"].examples) + len(other["train"].examples) == len(splits["train"])


def test_init_refuses_to_overwrite_without_force_and_never_touches_the_data(tmp_path, capsys):
    data = write_rows(tmp_path / "tickets.csv", label_rows(20))
    args = [str(data), "--out", str(tmp_path / "t"), "--instruction", INSTRUCTION]
    assert run_init(capsys, *args)[0] == 0
    before = (tmp_path / "t" / "task.toml").read_text()
    code = main(["init", *args, "--no-smoke"])
    assert code == 2 and "already exist" in capsys.readouterr().err
    assert run_init(capsys, *args, "--force")[0] == 0
    assert (tmp_path / "t" / "task.toml").read_text() == before
    jsonl = write_rows(tmp_path / "t" / "train.jsonl.gz", label_rows(20))
    code = main(["init", str(jsonl), "--out", str(tmp_path / "t"), "--force", "--no-smoke"])
    assert code == 0  # .gz is not train.jsonl: nothing of the data is replaced
    with pytest.raises(TaskDataError, match="No column 'body'"):
        plan_task(data, input_col="body")


def test_the_smoke_evaluation_runs_the_base_model_on_ten_dev_items(tmp_path, capsys):
    data = write_rows(tmp_path / "tickets.csv", label_rows(120))
    assert main(["init", str(data), "--out", str(tmp_path / "t"), "--instruction",
                 INSTRUCTION, "--model", "tiny-random", "--workspace", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    assert "smoke evaluation: tiny-random on 10 dev items" in out and "pass rate" in out
    assert "signatures: " in out or "overall                     10     100.0%" in out


def test_a_csv_with_unnamed_columns_asks_for_the_flags(tmp_path, capsys):
    with (tmp_path / "x.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["a", "b"], ["1", "2"]])
    code = main(["init", str(tmp_path / "x.csv"), "--out", str(tmp_path / "t"), "--no-smoke"])
    assert code == 2 and "give --input-col and --output-col" in capsys.readouterr().err
