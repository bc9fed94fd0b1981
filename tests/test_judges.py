"""Judges: reference rules, both-order LLM judging, verdict parsing, an HTTP endpoint, votes."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from evals.judges import (EndpointCompleter, Match, Pair, check_judge, combine_orders,
                          endpoint_completer, human_matches, judge_prompts, llm_judge,
                          parse_verdict, reference_judge)
from loop.core.endpoint import Endpoint
from loop.core.errors import ConfigError, EndpointError

KEY = "sk-test-123"


def pair(**kw) -> Pair:
    base = {"example_id": "e", "prompt": "Capital of France?", "reference": "Paris",
            "output_a": "Paris", "output_b": "Lyon"}
    return Pair(**{**base, **kw})


def test_reference_judge_uses_suite_then_similarity_with_a_tie_margin():
    verdicts = reference_judge([
        pair(passed_a=True, passed_b=False, similarity_a=0.1, similarity_b=0.9),
        pair(passed_a=False, passed_b=False, similarity_a=0.4, similarity_b=0.9),
        pair(passed_a=True, passed_b=True, similarity_a=0.90, similarity_b=0.91),
        pair(passed_a=False, passed_b=False, similarity_a=0.5, similarity_b=0.5),
        pair(passed_a=True, passed_b=True, similarity_a=0.90, similarity_b=0.80),
    ])
    assert [v.verdict for v in verdicts] == ["A", "B", "tie", "both_bad", "A"]
    assert verdicts[0].detail["by"] == "suite"  # the suite decides before similarity
    wide = reference_judge([pair(passed_a=True, passed_b=True, similarity_a=0.9,
                                 similarity_b=0.8)], margin=0.2)
    assert wide[0].verdict == "tie"


def test_a_judge_that_always_prefers_the_first_answer_yields_ties():
    def always_first(prompts):
        return ["[[1]]"] * len(prompts)

    verdicts = llm_judge([pair(), pair(output_a="Lyon", output_b="Paris")], always_first)
    assert [v.verdict for v in verdicts] == ["tie", "tie"]
    assert all(v.error is None for v in verdicts)


def prefers_paris(prompts: list[str]) -> list[str]:
    """A position-independent judge: the answer containing 'Paris' wins."""
    return ["[[1]]" if "Paris" in p[p.index("[Answer 1]"):p.index("[Answer 2]")] else "[[2]]"
            for p in prompts]


def test_a_consistent_judge_wins_in_both_orders():
    verdicts = llm_judge([pair(), pair(output_a="Lyon", output_b="Paris")], prefers_paris)
    assert [v.verdict for v in verdicts] == ["A", "B"]
    assert verdicts[0].detail == {"ab": "1", "ba": "2"}


@pytest.mark.parametrize("reply, parsed", [("[[1]]", "1"), ("I pick [[ 2 ]].", "2"),
                                           ("[[TIE]]", "tie"), ("Answer 1 is better", None),
                                           ("[[1]] or maybe [[2]]", None), ("", None),
                                           ("[[1]] ... final: [[1]]", "1"), ("[[A]]", None)])
def test_verdict_parsing(reply, parsed):
    assert parse_verdict(reply) == parsed


def test_unparseable_reply_is_an_error_not_a_win():
    verdict = combine_orders("1", None)
    assert verdict.verdict is None and "unparseable" in verdict.error and "BA" in verdict.error
    # a judge that picks answer 1 in one order and rambles in the other: no win for anyone
    def half(prompts):
        return ["[[1]]" if k % 2 == 0 else "Answer 1, clearly." for k in range(len(prompts))]

    (verdict,) = llm_judge([pair()], half)
    assert verdict.verdict is None and verdict.error
    assert verdict.detail["replies"] == ["[[1]]", "Answer 1, clearly."]


def test_a_wrong_number_of_replies_is_a_programming_error():
    with pytest.raises(ValueError, match="replies"):
        llm_judge([pair()], lambda prompts: ["[[1]]"])


def test_match_ids_ignore_the_verdict_and_the_model_order():
    one = Match("t", "e1", "m1", "m2", "reference", "A")
    assert one.match_id == Match("t", "e1", "m2", "m1", "reference", "B").match_id
    assert one.match_id != Match("t", "e1", "m1", "m2", "llm", "A").match_id
    assert one.match_id != Match("t", "e2", "m1", "m2", "reference", "A").match_id
    llm = Match("t", "e1", "m1", "m2", "llm", "A", judged_by="j1")
    assert llm.match_id != Match("t", "e1", "m1", "m2", "llm", "A", judged_by="j2").match_id
    row = llm.row(datetime(2024, 1, 1))
    assert row["match_id"] == llm.match_id and row["detail"] == {"judged_by": "j1"}


def test_human_votes_become_matches_with_the_voter():
    votes = [{"task_id": "t", "example_id": "e1", "model_a": "m1", "model_b": "m2",
              "verdict": "B", "voter": "ana", "shown_first": "m2"},
             {"task_id": "t", "example_id": "e1", "model_a": "m1", "model_b": "m2",
              "verdict": "A", "voter": "bo"}]
    first, second = human_matches(votes)
    assert (first.judge, first.voter, first.verdict, first.shown_first) == ("human", "ana", "B",
                                                                            "m2")
    assert first.match_id != second.match_id  # two voters, two matches
    with pytest.raises(ConfigError) as err:
        human_matches([{**votes[0], "verdict": "A wins"}, {**votes[1], "voter": ""}])
    assert "vote 0" in str(err.value) and "vote 1: missing voter" in str(err.value)


class _Handler(BaseHTTPRequestHandler):
    seen_auth: ClassVar[list] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen_auth.append(self.headers.get("Authorization"))
        if _Handler.status == "junk":  # a 200 that is not a chat completion
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')
            return
        if _Handler.status != 200 or self.path != "/v1/chat/completions":
            self.send_error(_Handler.status if _Handler.status != 200 else 404)
            return
        assert body["model"] == "judge-1" and body["temperature"] == 0
        reply = prefers_paris([body["messages"][0]["content"]])[0]
        data = json.dumps({"choices": [{"message": {"content": f"Verdict: {reply}"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.seen_auth, _Handler.status = [], 200
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()
    thread.join()


def test_openai_compatible_endpoint_judge(server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", KEY)
    complete = endpoint_completer(server, "judge-1", "JUDGE_KEY")
    verdicts = llm_judge([pair(), pair(output_a="Lyon", output_b="Paris")], complete)
    assert [v.verdict for v in verdicts] == ["A", "B"]
    assert _Handler.seen_auth == [f"Bearer {KEY}"] * 4  # two pairs, both orders
    assert KEY not in repr(complete) and complete.label == f"judge-1@{server}"


def test_endpoint_errors(server, monkeypatch):
    complete = endpoint_completer(server, "judge-1", "UNSET_JUDGE_KEY")
    monkeypatch.delenv("UNSET_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="UNSET_JUDGE_KEY"):
        llm_judge([pair()], complete)
    assert _Handler.seen_auth == []  # nothing sent without the key
    _Handler.status = 401  # a config problem: stop at once, no retry
    with pytest.raises(ConfigError, match="HTTP 401.*--judge-url"):
        llm_judge([pair()], endpoint_completer(server, "judge-1", concurrency=1))
    assert len(_Handler.seen_auth) == 1
    _Handler.status = 503  # still failing after the retries: a passing error, nothing to store
    one_retry = EndpointCompleter(Endpoint(server, "judge-1", max_retries=1, concurrency=1))
    with pytest.raises(EndpointError, match=f"{server}.*HTTP 503"):
        llm_judge([pair()], one_retry)
    assert len(_Handler.seen_auth) == 1 + 2  # the 401 once; the first 503 prompt tried twice


def test_a_reply_that_is_no_chat_completion_is_no_verdict(server):
    _Handler.status = "junk"
    verdicts = llm_judge([pair()], endpoint_completer(server, "judge-1"))
    assert verdicts[0].verdict is None and "unparseable" in verdicts[0].error
    assert "not a chat-completions response" in verdicts[0].detail["replies"][0]


def test_judge_prompts_show_a_first_then_b_first():
    ab, ba = judge_prompts(pair(output_a="ANSWER-FROM-A", output_b="ANSWER-FROM-B"))
    assert ab.index("ANSWER-FROM-A") < ab.index("[Answer 2]") < ab.index("ANSWER-FROM-B")
    assert ba.index("ANSWER-FROM-B") < ba.index("[Answer 2]") < ba.index("ANSWER-FROM-A")
    assert "[[1]], [[2]] or\n[[tie]]" in ab and "Paris" in ab  # format and reference shown


def test_unknown_and_human_judges_are_config_errors():
    with pytest.raises(ConfigError, match="Did you mean 'reference'"):
        check_judge("referee")
    with pytest.raises(ConfigError, match="app"):
        check_judge("human")
    assert check_judge("human", automatic=False) == "human"
    assert check_judge("llm") == "llm"
