"""Shared fixtures: an offline environment, a workspace per test, and a tiny task builder."""

from __future__ import annotations

import atexit
import http.server
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from loop.core.openmp import wait_briefly

os.environ.setdefault("HF_HUB_OFFLINE", "1")
wait_briefly()  # before torch loads: idle OpenMP threads spin briefly, then sleep
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests track into their temp workspaces only
# `make test` runs pytest-xdist workers, one per core: each worker's torch takes its share of the
# cores, rather than two workers running four threads on two cores
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


def _isolated_cache_home() -> Path:
    """A per-session EVALLOOP_HOME: memos (weight fingerprints, the bf16 probe) that one run
    writes never reach another run or the user's cache, and the user's memos never reach the
    tests. The converted model weights are linked in from the user's cache (converting them
    takes minutes and they never change), so the real-model tests still find them."""
    from loop.core.cache import cache_dir

    real = cache_dir()
    home = Path(tempfile.mkdtemp(prefix="evalloop-test-home-"))
    # made when missing, so parallel workers share one conversion (written atomically) and the
    # next run finds it
    (real / "models").mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(real / "models", target_is_directory=True)
    atexit.register(shutil.rmtree, home, ignore_errors=True)  # the link, not its target
    return home


os.environ["EVALLOOP_HOME"] = str(_isolated_cache_home())

REPO = Path(__file__).resolve().parents[1]
DEMO_TASK = REPO / "datasets" / "demo" / "task.toml"


def write_task(directory: Path, splits: dict[str, list[dict]], extra_toml: str = "",
               name: str = "tiny") -> Path:
    """Write a task TOML and its JSONL files; returns the TOML path."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f'name = "{name}"']
    for split, records in splits.items():
        with (directory / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
        lines.append(f'{split} = "{split}.jsonl"')
    toml = directory / "task.toml"
    toml.write_text("\n".join(lines) + "\n" + extra_toml, encoding="utf-8")
    return toml


def classification_records(n: int, offset: int = 0) -> list[dict]:
    """A small external-style classification task (not the demo)."""
    colours = ["red", "green", "blue", "yellow"]
    return [{"instruction": "Name the colour mentioned in the sentence. One word.",
             "input": f"Item {i + offset} was painted {colours[i % 4]} last spring.",
             "output": colours[i % 4], "category": f"colour_{colours[i % 4]}"}
            for i in range(n)]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def tiny_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "task", {
        "train": classification_records(40, offset=100),
        "dev": classification_records(8, offset=200),
        "test": classification_records(8),
    }, extra_toml="[generation]\nmax_new_tokens = 8\nbatch_size = 4\n")


def random_adapter(directory: Path) -> Path:
    """A LoRA adapter with non-zero random weights on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from loop.models.loading import load_model

    lm = load_model("tiny-random")
    # seeded before peft draws lora_A too: with an unseeded A, some draws make every prompt of a
    # task decode to the same text (measured: 1 distinct output of 12 for seeds 2 and 3)
    torch.manual_seed(0)
    model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    model.save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------- a chat endpoint

class ChatHandler(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[str]] = []
    seen: ClassVar[list[dict]] = []

    lock: ClassVar[threading.Lock] = threading.Lock()  # clients send requests in parallel

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with ChatHandler.lock:
            ChatHandler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                     "body": body})
            content = ChatHandler.answers[(len(ChatHandler.seen) - 1) % len(ChatHandler.answers)]
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ChatHandler.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (training tests on a shared 2-core machine), then back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
