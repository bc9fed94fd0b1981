"""Several processes through accelerate's launcher, on CPU with gloo (2 ranks, tiny model): training
takes the optimizer steps of one process, sharded evaluation gives one process's predictions in
item order and survives a killed rank, and only the launching process touches the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import classification_records, random_adapter, write_task

from loop.core.launch import LaunchError, accelerate_command
from loop.data.tasks import load_task
from loop.store.db import Store
from loop.train.config import TrainConfig

# Records every DuckDB connection (what opening the store does) made by a Python process started
# after the fixture, with that process's torchrun RANK: duckdb.connect is wrapped on import.
PROBE = '''
import importlib.abc, importlib.util, os, sys

def _record(database):
    with open(os.environ["EVALLOOP_TEST_CONNECTS"], "a") as fh:
        fh.write(f"{os.getpid()} rank={os.environ.get('RANK', '-')} {database}\\n")

class _Loader(importlib.abc.Loader):
    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        self.real.exec_module(module)
        connect = module.connect

        def probed_connect(database=":memory:", *args, **kwargs):
            _record(database)
            return connect(database, *args, **kwargs)

        module.connect = probed_connect

class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "duckdb":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None:
            spec.loader = _Loader(spec.loader)
        return spec

sys.meta_path.insert(0, _Finder())
'''

FAST = TrainConfig(max_steps=4, epochs=None, batch_size=8, learning_rate=1e-2, save_steps=4,
                   log_steps=1, bf16=False)


@pytest.fixture
def duckdb_connects(tmp_path, monkeypatch):
    """Path of the probe's record; every process launched from here (launcher, ranks) runs the
    probe through sitecustomize, with one OpenMP thread per rank (2 shared cores)."""
    hook = tmp_path / "probe"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PROBE)
    record = tmp_path / "duckdb_connects.log"
    paths = [str(hook), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("EVALLOOP_TEST_CONNECTS", str(record))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the probe works: a process that connects is recorded
    subprocess.run([sys.executable, "-c", "import duckdb; duckdb.connect()"], check=True)
    assert record.read_text().split()[1:] == ["rank=-", ":memory:"]
    record.unlink()
    return record


def _task(root: Path, extra: str = "") -> Path:
    return write_task(root, {"train": classification_records(32, offset=100),
                             "dev": classification_records(8, offset=200),
                             "test": classification_records(12)},
                      extra_toml="[generation]\nmax_new_tokens = 8\nbatch_size = 4\n" + extra)


# ---------------------------------------------------------------------------- settings

def test_processes_setting_is_checked_and_launches_the_right_engine():
    from pydantic import ValidationError

    assert TrainConfig.model_validate({"processes": 2, "batch_size": 8}).processes == 2
    with pytest.raises(ValidationError, match="(?s)strategy.*multiple of processes"):
        TrainConfig.model_validate({"processes": 3, "batch_size": 8, "strategy": "zero"})
    # the process count is not part of what is trained, so not part of the run's id
    assert TrainConfig(processes=4).identity() == TrainConfig().identity()
    assert TrainConfig(strategy="fsdp").identity() != TrainConfig().identity()
    ddp = accelerate_command(2, "loop.train.rank", ["plan.json"])
    fsdp = accelerate_command(4, "loop.train.rank", ["plan.json"], strategy="fsdp")
    assert "--multi_gpu" in ddp and "--use_fsdp" not in ddp
    assert "--use_fsdp" in fsdp and fsdp[fsdp.index("--num_processes") + 1] == "4"
    assert ddp[-3:] == ["-m", "loop.train.rank", "plan.json"]


def test_store_owning_commands_refuse_to_run_as_ranks(tmp_path, monkeypatch, capsys):
    from loop.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["eval", "--task", str(_task(tmp_path / "t")), "--workspace",
                 str(tmp_path / "ws"), "--model", "tiny-random"])
    assert code == 2 and "--processes N" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


# ---------------------------------------------------------------------------- training

def test_two_ranks_train_like_one_process_and_only_this_process_opens_the_store(
        tmp_path, duckdb_connects):
    """32 rows, batch 8: every batch splits 4 + 4 over the two ranks (a row count that is a
    multiple of batch_size, so no last batch is topped up). Tolerance: in fp32 the two ranks sum
    their halves in another order than one process does, and the all-reduce adds the halves;
    measured, the losses agree to ~1e-7 relative and the adapters to ~2e-6. rel=1e-5 leaves room
    for Adam amplifying that rounding; another data order or a per-rank loss normalisation moves
    a step's loss by far more."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from loop.models.loading import base_path
    from loop.train.sft import train_for_task

    task = load_task(_task(tmp_path / "task"))
    results = {}
    for n in (1, 2):
        ws = tmp_path / f"ws{n}"
        # held open by this process for the whole run (as `evalloop train` does): a rank that
        # opened it too would fail on DuckDB's lock
        with Store(ws) as store:
            results[n] = train_for_task(store, task, ws, model="tiny-random",
                                        config=FAST.model_copy(update={"processes": n}), progress=False)
            runs = store.query("SELECT train_id, n_train, status FROM training_runs")
        assert runs == [{"train_id": results[n].train_id, "n_train": 32, "status": "done"}]
    one, two = results[1], results[2]
    assert not duckdb_connects.exists()  # neither the launcher nor a rank opened a database

    assert two.train_id == one.train_id and two.steps_done == one.steps_done == 4
    assert two.tokens == one.tokens  # every rank's rows counted, each once
    losses = [(a.step, a.loss, b.loss) for a, b in zip(one.logs, two.logs) if a.loss is not None]
    assert len(losses) == 4 and losses[-1][1] < losses[0][1]
    for step, a, b in losses:
        assert b == pytest.approx(a, rel=1e-5), step
    wa = load_file(str(Path(one.adapter_dir) / "adapter_model.safetensors"))
    wb = load_file(str(Path(two.adapter_dir) / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4

    # the single-process files and formats
    assert ({p.name for p in Path(two.adapter_dir).iterdir()}
            == {p.name for p in Path(one.adapter_dir).iterdir()})
    log_one, log_two = (Path(r.adapter_dir, "train_log.jsonl").read_text().splitlines()
                        for r in (one, two))
    assert [json.loads(x).keys() for x in log_two] == [json.loads(x).keys() for x in log_one]
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_path("tiny-random")), two.adapter_dir)
    assert any("lora_B" in name for name, _ in model.named_parameters())


# ---------------------------------------------------------------------------- evaluation

def test_sharded_eval_matches_one_process_and_resumes_after_a_killed_rank(
        tmp_path, duckdb_connects, monkeypatch):
    from loop.evaluation.evaluate import evaluate

    task = load_task(_task(tmp_path / "task"))
    model = f"tiny-random+{random_adapter(tmp_path / 'adapter')}"  # outputs vary per item
    ids = [e.id for e in task.split("test")]

    def outputs(store, run_id):
        rows = store.query("SELECT r.example_id, p.output FROM run_items r JOIN predictions p "
                           "USING (prediction_id) WHERE r.run_id = ?", [run_id])
        return [{r["example_id"]: r["output"] for r in rows}[i] for i in ids]

    with Store(tmp_path / "ws1") as store:
        alone = evaluate(store, task, model, "test", progress=False, processes=1)
        expected = outputs(store, alone.run_id)
    assert len(set(expected)) > 1  # so the order check below means something

    with Store(tmp_path / "ws2") as store:
        monkeypatch.setenv("EVALLOOP_KILL_AT", "eval_shard_1:0")  # rank 1 dies on start
        with pytest.raises(LaunchError, match="2 processes failed"):
            evaluate(store, task, model, "test", progress=False, processes=2)
        monkeypatch.delenv("EVALLOOP_KILL_AT")
        sharded = evaluate(store, task, model, "test", progress=False, processes=2)
        assert sharded.run_id == alone.run_id and sharded.generated == len(ids)
        assert outputs(store, sharded.run_id) == expected
        assert sharded.outcomes == alone.outcomes
        again = evaluate(store, task, model, "test", progress=False, processes=2)
        assert again.generated == 0  # all reused: no launch, no new rows
        assert store.count("predictions") == len(ids)
        assert store.count("run_items") == len(ids)
    assert not duckdb_connects.exists()
    assert not any((tmp_path / "ws2" / "shards").iterdir())  # merged work is cleaned up
