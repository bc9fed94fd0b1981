"""Security by default, tried from outside: the app's bind address, SQL built from user text,
model loading (safetensors only, no remote code unless asked) and API keys kept out of every
file and stream evalloop writes."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
from conftest import ChatHandler, classification_records, write_task

from loop.store import inbox
from loop.models import loading as models
from loop.store.app_arena import shared_items
from loop.store.app_failures import FailureFilter, check_results, filter_failures
from loop.store.app_queries import snapshot
from loop.store.app_training import current_champion, generated_examples
from loop.core.errors import ModelError
from loop.store.db import Store
from reliability.harness import cli, error_line, start_cli, table_digests

INJECTIONS = ["' OR 1=1 --", "'; DROP TABLE failures; --", "\" OR \"\"=\"", "%' OR '1'='1",
              "x'); DELETE FROM runs; --", "1; ATTACH 'evil.db' AS e; --", "$1", "?", "\\",
              "base-0000' UNION SELECT * FROM predictions --", "\x00", "ʼ OR 1=1 --"]


# ---------------------------------------------------------------------------- the app's bind

def test_the_command_line_refuses_a_public_bind_without_the_flag(tmp_path):
    for host in ("0.0.0.0", "::", "10.1.2.3"):
        proc = cli("app", "--workspace", str(tmp_path / "ws"), "--host", host, timeout=60)
        assert proc.returncode != 0
        assert "--allow-remote" in error_line(proc)


def _listening(port: int) -> set[str]:
    """Local addresses listening on `port`, read from the kernel's socket tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            if len(raw) == 4:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_the_app_listens_on_loopback_only_by_default(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = start_cli("app", "--workspace", str(tmp_path / "ws"), "--port", str(port))
    try:
        deadline = time.monotonic() + 90
        while not _listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
        assert _listening(port) == {"127.0.0.1"}, proc.stderr.read() if proc.poll() else ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------- SQL

@pytest.fixture
def seeded(tmp_path) -> Path:
    from test_app import seed

    workspace = tmp_path / "ws"
    seed(workspace)
    return workspace


def test_injection_strings_in_every_filter_match_nothing_and_change_nothing(seeded):
    before = table_digests(seeded)
    with snapshot(seeded) as store:
        everything = filter_failures(store, FailureFilter()).total
        assert everything > 0
        for text in INJECTIONS:
            for field in ("task", "model", "cycle", "category", "cluster", "check"):
                assert filter_failures(store, FailureFilter(**{field: text})).total == 0, field
            assert filter_failures(store, FailureFilter(tagged=(text,), category=text)).total == 0
            assert filter_failures(store, FailureFilter(hide=(text,))).total == everything
            assert check_results(store, text, text) == []
            assert shared_items(store, text, text, text, text) == []
            assert shared_items(store, "t", "test", text, "base-0000") == []
            assert generated_examples(store, status=text) == []
            assert generated_examples(store, strategy=text) == []
            assert current_champion(store, text) is None
        search = {t: filter_failures(store, FailureFilter(search=t)).total for t in INJECTIONS}
        assert all(n in (0, everything) for n in search.values()), search  # "?" matches all
    assert table_digests(seeded) == before


def test_review_text_and_keys_from_the_app_are_stored_literally(seeded):
    for text in INJECTIONS:
        inbox.append(seeded, "reviews", {"task_id": "t", "example_id": "e1",
                                         "prediction_id": "p0-1", "action": "tag",
                                         "category": text, "note": text, "reviewer": text,
                                         "status\" = 'x'; DROP TABLE runs; --": 1})
    before = table_digests(seeded)
    with Store(seeded) as store:  # opening the store ingests the inbox
        notes = {r["note"] for r in store.query("SELECT note FROM reviews")}
        assert set(INJECTIONS) <= notes
        assert {"runs", "failures", "predictions"} <= set(store.tables())
    after = table_digests(seeded)
    assert {t: v for t, v in after.items() if t != "reviews"} == {
        t: v for t, v in before.items() if t != "reviews"}


# ---------------------------------------------------------------------------- model loading

def _checkpoint_copy(target: Path) -> Path:
    source = Path(models.base_path("tiny-random"))
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(models.CACHE_MANIFEST))
    return target


def test_remote_code_is_not_run_unless_asked(tmp_path):
    marker = tmp_path / "remote-code-ran"
    checkpoint = _checkpoint_copy(tmp_path / "custom")
    (checkpoint / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((checkpoint / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig",
                          "AutoModelForCausalLM": "evil.EvilModel"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    try:
        loaded = models.load_model(str(checkpoint))
    except ModelError as exc:
        assert str(checkpoint) in str(exc)
    else:  # transformers may fall back to the built-in class: fine, as long as nothing ran
        assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()
    # The probe works: asked explicitly, transformers does import the checkpoint's code.
    try:
        models.load_model(str(checkpoint), trust_remote_code=True)
    except ModelError:
        pass
    assert marker.exists()


def test_pickled_weights_are_never_loaded(tmp_path):
    import torch

    marker = tmp_path / "pickle-ran"
    checkpoint = _checkpoint_copy(tmp_path / "pickled")
    state = {"weights": _Payload(str(marker))}
    (checkpoint / "model.safetensors").unlink()
    torch.save(state, checkpoint / "pytorch_model.bin")
    with pytest.raises(ModelError, match="safetensors"):
        models.load_model(str(checkpoint))
    assert not marker.exists()


class _Payload:
    """Unpickling this would write a marker file: the loader must never unpickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))


# ---------------------------------------------------------------------------- API keys

def test_the_api_key_is_used_but_never_written_anywhere(tmp_path, chat_server):
    key = "sk-evalloop-test-5f1c2a9be07d"
    ChatHandler.answers = [json.dumps([{
        "instruction": "Name the colour mentioned in the sentence. One word.",
        "input": f"The kite number {900 + i} was painted red.", "output": "red"}])
        for i in range(8)]
    task = write_task(tmp_path / "task", {
        "train": classification_records(12, 100), "dev": classification_records(8, 300),
        "test": classification_records(8)},
        "[generation]\nmax_new_tokens = 4\nbatch_size = 4\n"
        f'[targeted]\nn = 4\nstrategies = ["teacher"]\n[targeted.teacher]\nmodel = "t"\n'
        f'base_url = "{chat_server}"\napi_key_env = "EVALLOOP_TEST_KEY"\n')
    workspace, home = tmp_path / "ws", tmp_path / "home"
    env = {"EVALLOOP_TEST_KEY": key, "EVALLOOP_HOME": str(home)}
    streams = []
    for args in (("eval", "--split", "dev", "--model", "tiny-random"), ("generate",)):
        # --verbose: every log record evalloop emits goes to stderr, which is searched below
        proc = cli("--verbose", *args, "--task", str(task), "--workspace", str(workspace),
                   env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        streams += [proc.stdout, proc.stderr]
    assert ChatHandler.seen and all(r["auth"] == f"Bearer {key}" for r in ChatHandler.seen)
    assert key not in "".join(streams)
    leaks = [str(p) for root in (workspace, home, task.parent) for p in root.rglob("*")
             if p.is_file() and key.encode() in p.read_bytes()]
    assert leaks == []
