"""Judges: reference rules, both-order LLM judging, verdict parsing, an HTTP endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from evals.judges import (Pair, check_judge, combine_orders, endpoint_completer, llm_judge,
                          parse_verdict, reference_judge)
from loop.errors import ConfigError


def pair(**kw) -> Pair:
    base = dict(example_id="e", prompt="Capital of France?", reference="Paris", output_a="Paris",
                output_b="Lyon")
    return Pair(**{**base, **kw})


def test_reference_judge_uses_suite_then_similarity_with_a_tie_margin():
    verdicts = reference_judge([
        pair(passed_a=True, passed_b=False),
        pair(passed_a=False, passed_b=False, similarity_a=0.4, similarity_b=0.9),
        pair(passed_a=True, passed_b=True, similarity_a=0.90, similarity_b=0.91),
        pair(passed_a=False, passed_b=False, similarity_a=0.5, similarity_b=0.5),
    ])
    assert [v.verdict for v in verdicts] == ["A", "B", "tie", "both_bad"]


def test_a_judge_that_always_prefers_the_first_answer_yields_ties():
    always_first = lambda prompts: ["[[1]]"] * len(prompts)  # noqa: E731
    verdicts = llm_judge([pair(), pair(output_a="Lyon", output_b="Paris")], always_first)
    assert [v.verdict for v in verdicts] == ["tie", "tie"]


def test_a_consistent_judge_wins_in_both_orders():
    def prefers_paris(prompts):
        return ["[[1]]" if p.index("Paris", p.index("[Answer 1]")) < p.index("[Answer 2]")
                else "[[2]]" for p in prompts]

    (verdict,) = llm_judge([pair()], prefers_paris)
    assert verdict.verdict == "A"


@pytest.mark.parametrize("reply, parsed", [("[[1]]", "1"), ("I pick [[ 2 ]].", "2"),
                                           ("[[TIE]]", "tie"), ("Answer 1 is better", None),
                                           ("[[1]] or maybe [[2]]", None), ("", None)])
def test_verdict_parsing(reply, parsed):
    assert parse_verdict(reply) == parsed


def test_unparseable_reply_is_an_error_not_a_win():
    verdict = combine_orders("1", None)
    assert verdict.verdict is None and "unparseable" in verdict.error


class _Handler(BaseHTTPRequestHandler):
    seen_auth: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen_auth.append(self.headers.get("Authorization"))
        assert self.path == "/v1/chat/completions" and body["model"] == "judge-1"
        prompt = body["messages"][0]["content"]
        first = prompt[prompt.index("[Answer 1]"):prompt.index("[Answer 2]")]
        reply = "[[1]]" if "Paris" in first else "[[2]]"
        data = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_compatible_endpoint_judge(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUDGE_KEY", "sk-test-123")
    try:
        complete = endpoint_completer(f"http://127.0.0.1:{server.server_port}/v1", "judge-1",
                                      "JUDGE_KEY")
        verdicts = llm_judge([pair(), pair(output_a="Lyon", output_b="Paris")], complete)
    finally:
        server.shutdown()
    assert [v.verdict for v in verdicts] == ["A", "B"]
    assert _Handler.seen_auth[-1] == "Bearer sk-test-123"


def test_unknown_and_human_judges_are_config_errors():
    with pytest.raises(ConfigError, match="Did you mean 'reference'"):
        check_judge("referee")
    with pytest.raises(ConfigError, match="app"):
        check_judge("human")
