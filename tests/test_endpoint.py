"""The endpoint client (loop.core.endpoint) against a local fake OpenAI-compatible server:
retries on 429/5xx honouring Retry-After, timeouts, the errors left after the retries, replies in
input order under concurrency, the OPENAI_* conventions, and a key that never leaks."""

from __future__ import annotations

import http.server
import json
import threading
import time
from datetime import datetime
from typing import ClassVar

import pytest

from evals.judges import Match, Pair, endpoint_completer, llm_judge
from loop.core.endpoint import ChatRequest, Endpoint, complete_all
from loop.core.errors import ConfigError, EndpointError

KEY = "sk-endpoint-test-7d3e91"


class FakeServer(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next planned step (then 200s): an int status, "slow", or
    "echo-auth" (a 401 whose body repeats the Authorization header, as a careless server
    might). A 200 echoes the prompt, after sleeping the seconds a prompt "sleep:S ..." asks."""

    plan: ClassVar[list] = []
    seen: ClassVar[list[dict]] = []
    active = peak = 0
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with FakeServer.lock:
            FakeServer.seen.append({"auth": self.headers.get("Authorization"), "body": body,
                                    "at": time.monotonic()})
            step = FakeServer.plan.pop(0) if FakeServer.plan else 200
            FakeServer.active += 1
            FakeServer.peak = max(FakeServer.peak, FakeServer.active)
        try:
            self._answer(step, body)
        finally:
            with FakeServer.lock:
                FakeServer.active -= 1

    def _answer(self, step, body):
        prompt = body["messages"][-1]["content"]
        if step == "slow":
            time.sleep(2)
        elif step == "echo-auth":
            return self._send(401, {"error": {"message": f"bad key {self.headers['Authorization']}"}})
        elif isinstance(step, tuple):  # (status, Retry-After)
            return self._send(step[0], {"error": {"message": "slow down"}},
                              {"Retry-After": step[1]})
        elif step != 200:
            return self._send(step, {"error": {"message": f"status {step}"}})
        if prompt.startswith("sleep:"):
            time.sleep(float(prompt.split()[0][6:]))
        self._send(200, {"choices": [{"message": {"role": "assistant",
                                                  "content": f"echo {prompt}"}}]})

    def _send(self, status: int, data: dict, headers: dict | None = None):
        raw = json.dumps(data).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json",
                            "Content-Length": str(len(raw)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(raw)
        except OSError:
            pass  # the client gave up waiting (the timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    FakeServer.plan, FakeServer.seen, FakeServer.active, FakeServer.peak = [], [], 0, 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def ask(url: str, *prompts: str, **endpoint) -> list[str | None]:
    options = {"max_retries": 2, "concurrency": 1, **endpoint}
    return [r.text for r in complete_all(Endpoint(url, "m", **options),
                                         [ChatRequest.user(p) for p in prompts])]


def test_a_429_with_retry_after_0_is_retried_then_answered(server):
    FakeServer.plan = [(429, "0")]
    assert ask(server, "hello") == ["echo hello"]
    assert len(FakeServer.seen) == 2


def test_retry_after_is_honoured(server):
    FakeServer.plan = [(429, "1")]
    assert ask(server, "hello") == ["echo hello"]
    first, second = FakeServer.seen
    assert second["at"] - first["at"] >= 0.95  # waited what the server asked, not the 0.5 s default


def test_a_500_is_retried_then_answered(server):
    FakeServer.plan = [500]
    assert ask(server, "hello") == ["echo hello"]
    assert len(FakeServer.seen) == 2


def test_a_rate_limit_that_outlasts_the_retries_is_a_clear_passing_error(server):
    FakeServer.plan = [(429, "0")] * 10
    with pytest.raises(EndpointError) as err:
        ask(server, "hello", "never sent", max_retries=2)
    message = str(err.value)
    assert server in message and "HTTP 429" in message and "rate limit" in message
    assert "3 attempts" in message and not isinstance(err.value, ConfigError)
    assert len(FakeServer.seen) == 3  # 1 + 2 retries, and the second request never went out
    assert err.value.exit_code == 75  # cron retries later


def test_a_404_is_a_config_error_without_retries(server):
    FakeServer.plan = [404]
    with pytest.raises(ConfigError, match="HTTP 404 for model 'm'"):
        ask(server, "hello")
    assert len(FakeServer.seen) == 1


def test_a_slow_reply_is_a_timeout_error(server):
    FakeServer.plan = ["slow"]
    started = time.monotonic()
    with pytest.raises(EndpointError, match=r"no answer within 0\.3 s"):
        ask(server, "hello", timeout_s=0.3, max_retries=0)
    assert time.monotonic() - started < 1.5


def test_an_unreachable_endpoint_is_a_passing_error():
    with pytest.raises(EndpointError, match="Cannot reach the endpoint http://127.0.0.1:9/v1"):
        ask("http://127.0.0.1:9/v1", "hello", max_retries=0)


def test_replies_keep_the_input_order_under_concurrency(server):
    # the first prompts take longest, so replies arrive in reverse order
    prompts = [f"sleep:{0.05 * (8 - i):.2f} item {i}" for i in range(8)]
    started = time.monotonic()
    replies = ask(server, *prompts, concurrency=4)
    assert replies == [f"echo {p}" for p in prompts]
    # never more than four in flight; at least two overlapped (exactly four needs an idle machine)
    assert 1 < FakeServer.peak <= 4
    assert time.monotonic() - started < sum(0.05 * (8 - i) for i in range(8))  # 1.8 s in series


def test_openai_environment_conventions(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert ask(None, "hello") == ["echo hello"]
    assert FakeServer.seen[-1]["auth"] is None  # no key anywhere: no Authorization header
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    ask(None, "hello")
    assert FakeServer.seen[-1]["auth"] == f"Bearer {KEY}"
    monkeypatch.setenv("NAMED_KEY", "sk-named")  # a named variable wins over OPENAI_API_KEY
    ask(None, "hello", api_key_env="NAMED_KEY")
    assert FakeServer.seen[-1]["auth"] == "Bearer sk-named"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        ask(None, "hello")


def test_the_key_never_appears_in_errors_or_stored_records(server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", KEY)
    FakeServer.plan = ["echo-auth"]  # a server that repeats the key in its error text
    with pytest.raises(ConfigError) as err:
        ask(server, "hello", api_key_env="JUDGE_KEY")
    assert FakeServer.seen[-1]["auth"] == f"Bearer {KEY}" and KEY not in str(err.value)
    assert "bad key Bearer ***" in str(err.value)
    FakeServer.plan = [(429, "0")] * 3
    with pytest.raises(EndpointError) as err:
        ask(server, "hello", api_key_env="JUDGE_KEY", max_retries=2)
    assert KEY not in str(err.value)
    # a judged match as stored: the judge's label and replies, never the key
    complete = endpoint_completer(server, "judge-1", "JUDGE_KEY")
    pair = Pair("e1", "Capital of France?", "Paris", "Paris", "Lyon")
    verdict = llm_judge([pair], complete)[0]
    match = Match("t", "e1", "m1", "m2", "llm", verdict.verdict, verdict.error,
                  judged_by=complete.label, detail=verdict.detail or {})
    stored = json.dumps(match.row(datetime(2024, 1, 1)), default=str)
    assert complete.label in stored and KEY not in stored + repr(complete)
    assert all(r["auth"] == f"Bearer {KEY}" for r in FakeServer.seen[-2:])


def test_the_teacher_sends_its_batch_in_parallel_with_seeds_in_order(server):
    from loop.targeted.teacher import SYSTEM, EndpointTeacher, TeacherConfig

    teacher = EndpointTeacher(TeacherConfig(model="t", base_url=server, concurrency=3,
                                            max_new_tokens=64, temperature=0.5))
    prompts = [f"sleep:{0.05 * (6 - i):.2f} failure {i}" for i in range(6)]
    assert teacher.complete(prompts, seeds=list(range(10, 16))) == [f"echo {p}" for p in prompts]
    sent = {r["body"]["messages"][-1]["content"]: r["body"] for r in FakeServer.seen}
    assert all(sent[p]["seed"] == 10 + i for i, p in enumerate(prompts))
    assert all(b["messages"][0] == {"role": "system", "content": SYSTEM} and
               b["max_tokens"] == 64 and b["temperature"] == 0.5 for b in sent.values())
    assert FakeServer.peak == 3


def test_a_nightly_run_stopped_by_an_endpoint_exits_75_for_cron_to_retry(tmp_path, monkeypatch):
    import loop.cycle.run
    from loop import cli

    def endpoint_down(*args, **kwargs):
        raise EndpointError("The endpoint http://x/v1 answered HTTP 429 (rate limit)")

    monkeypatch.setattr(loop.cycle.run, "run_cycle", endpoint_down)
    code = cli.main(["nightly", "--task", "t.toml", "--workspace", str(tmp_path / "ws")])
    assert code == 75
    (log,) = (tmp_path / "ws" / "logs").glob("nightly-*.log")
    assert "HTTP 429" in log.read_text()
