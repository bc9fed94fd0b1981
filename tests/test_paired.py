"""Paired comparisons (evals.paired) and the gate's power statements: hand-computed intervals on
a planted table, identical models, "cannot tell" on too few items, the task gain's MDE."""

from __future__ import annotations

import json
import math

import pytest

from evals.paired import (CANNOT_TELL, DROPPED, GOLD_LOGPROB, PASSED, PairedStat, gold_logprob,
                          items_needed, paired_stat, pooled, sample_scores, verdict)
from loop.core.settings import GateSettings
from loop.cycle.gate import GateInputs, PromotionDecision, decide

Z95 = 1.959963984540054  # z(0.975)
K = Z95 + 1.6448536269514722  # z(0.975) + z(0.95): the MDE's multiple of the standard error


def planted(both: int, only_champion: int, only_candidate: int, neither: int):
    """A 2x2 table of paired 0/1 outcomes as two score lists."""
    champion = [1] * both + [1] * only_champion + [0] * only_candidate + [0] * neither
    candidate = [1] * both + [0] * only_champion + [1] * only_candidate + [0] * neither
    return champion, candidate


def test_paired_interval_equals_the_hand_computed_one_on_a_planted_table():
    champion, candidate = planted(both=8, only_champion=5, only_candidate=2, neither=5)
    stat = paired_stat("arc_easy/acc", champion, candidate)
    n, b, c = 20, 5, 2
    delta = (c - b) / n  # -0.15
    se = math.sqrt(((b + c) - (b - c) ** 2 / n) / (n - 1) / n)  # sd of the differences / sqrt n
    assert stat.n == n and stat.binary
    assert stat.delta == pytest.approx(delta)
    assert stat.se == pytest.approx(se) and se == pytest.approx(0.1312892, abs=1e-7)
    assert (stat.lower, stat.upper) == pytest.approx((delta - Z95 * se, delta + Z95 * se))
    assert stat.p_value == pytest.approx(58 / 128)  # exact McNemar: 2 * P(Bin(7, .5) <= 2)
    assert stat.mde == pytest.approx(max(K * se, K * K / (n + K * K)))


def test_the_paired_interval_is_narrower_than_the_unpaired_one():
    # 400 items, 10% of them flip (half each way): the unpaired se would be ~0.035
    champion, candidate = planted(both=180, only_champion=20, only_candidate=20, neither=180)
    stat = paired_stat("x", champion, candidate)
    unpaired = math.sqrt(2 * 0.5 * 0.5 / 400)
    assert stat.delta == 0 and stat.se < 0.5 * unpaired


def test_identical_models_give_a_zero_difference_with_a_finite_interval():
    scores = [1, 0, 1, 1, 0, 0, 1, 0] * 25
    stat = paired_stat("hellaswag/acc_norm", scores, scores)
    assert (stat.delta, stat.lower, stat.upper, stat.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert all(math.isfinite(v) for v in (stat.se, stat.lower, stat.upper, stat.mde))
    # no flip observed is not "sees everything": a 0/1 check on 200 items cannot see 1 point
    assert stat.mde == pytest.approx(K * K / (200 + K * K)) and stat.mde > 0.05
    logprobs = [-1.2, -0.3, -2.0, -0.7] * 10
    same = paired_stat("hellaswag/gold_logprob", logprobs, logprobs, unit="nats")
    assert (same.delta, same.lower, same.upper) == (0.0, 0.0, 0.0) and not same.binary


def test_cannot_tell_when_items_are_too_few_and_passed_when_there_are_enough():
    few = paired_stat("arc_easy/acc", [1, 0] * 10, [1, 0] * 10)
    many = paired_stat("arc_easy/acc", [1, 0] * 2000, [1, 0] * 2000)
    assert verdict(few, tolerance=0.05) == CANNOT_TELL
    assert verdict(many, tolerance=0.05) == PASSED
    dropped = paired_stat("arc_easy/acc", [1] * 400, [1] * 300 + [0] * 100)
    assert verdict(dropped, tolerance=0.05) == DROPPED


def test_one_item_has_no_interval_and_serialises_without_infinities():
    stat = paired_stat("x", [1], [0])
    assert stat.delta == -1 and math.isinf(stat.se) and verdict(stat, 0.05) == CANNOT_TELL
    data = json.loads(json.dumps(stat.to_json(), allow_nan=False))
    assert data["se"] is None and PairedStat.from_json(data) == stat


def test_pooled_error_is_the_root_sum_of_squares_over_the_count():
    a = PairedStat("a", 100, -0.02, 0.03, 0, 0, K * 0.03, 1.0, False)
    b = PairedStat("b", 100, -0.04, 0.04, 0, 0, K * 0.04, 1.0, False)
    both = pooled("pooled/accuracy", [a, b])
    assert both.delta == pytest.approx(-0.03) and both.se == pytest.approx(0.025)
    assert both.mde == pytest.approx(K * 0.025) and both.n == 200


def test_items_needed_reaches_the_target_mde():
    stat = paired_stat("x", *planted(both=40, only_champion=6, only_candidate=6, neither=48))
    n = items_needed(0.03, stat)
    sd = stat.se * math.sqrt(stat.n)
    assert K * sd / math.sqrt(n) <= 0.03 < K * sd / math.sqrt(n - 1)


def test_gold_logprob_and_sample_scores_from_stored_rows():
    assert gold_logprob([[-1.0, True], [-2.0, False]], "0") == pytest.approx(
        -math.log(1 + math.exp(-1)))
    assert gold_logprob([[-1.0, True]], "0") is None  # one choice is no choice
    assert gold_logprob(None, "0") is None and gold_logprob([[-1, 1], [-2, 0]], "x") is None
    rows = [{"task": "arc_easy", "doc_id": 3, "target": "1", "metrics": '{"acc": 1.0}',
             "responses": "[[-3.0, false], [-1.0, true], [-4.0, false]]"},
            {"task": "forgetting", "doc_id": 4, "target": None, "metrics": {"token_ce": 2.5},
             "responses": [50.0, 20]}]
    scores = sample_scores(rows)
    assert scores["acc"] == {("arc_easy", 3): 1.0}
    assert scores["token_ce"] == {("forgetting", 4): 2.5}
    assert list(scores[GOLD_LOGPROB]) == [("arc_easy", 3)]


# ---------------------------------------------------------------------------- the gate

def gate_inputs(champ_pass: int, cand_pass: int, n: int = 200, **kw) -> GateInputs:
    return GateInputs({f"e{i}": i < champ_pass for i in range(n)},
                      {f"e{i}": i < cand_pass for i in range(n)}, {}, 900, 1100, **kw)


def test_gate_says_cannot_tell_and_keeps_the_champion_on_a_small_gain():
    few = {"arc_easy/acc": paired_stat("arc_easy/acc", [1, 0] * 10, [1, 0] * 10)}
    small = decide(gate_inputs(60, 68, benchmark_stats=few))  # +4 points: significant, small
    (line,) = [r for r in small.reasons if r.check == "benchmark:arc_easy/acc"]
    assert line.status == CANNOT_TELL and not line.passed and not small.promote
    assert "cannot tell" in line.detail and "MDE 0.394" in line.detail
    large = decide(gate_inputs(40, 120, benchmark_stats=few))  # +40 points: not small
    (line,) = [r for r in large.reasons if r.check == "benchmark:arc_easy/acc"]
    assert line.status == CANNOT_TELL and line.passed and large.promote
    ignore = decide(gate_inputs(60, 68, benchmark_stats=few), GateSettings(cannot_tell="ignore"))
    assert ignore.promote
    enough = {"arc_easy/acc": paired_stat("arc_easy/acc", [1, 0] * 2000, [1, 0] * 2000)}
    assert decide(gate_inputs(60, 68, benchmark_stats=enough)).promote


def test_gate_rejects_a_significant_pooled_drop_and_states_interval_and_mde():
    drop = paired_stat("arc_easy/acc", [1] * 600, [1] * 560 + [0] * 40)
    pool = pooled("pooled/accuracy", [drop])
    decision = decide(gate_inputs(40, 120, benchmark_stats={drop.name: drop},
                                  pooled_stats={pool.name: pool}))
    (line,) = [r for r in decision.reasons if r.check == "benchmark:pooled/accuracy"]
    assert line.status == DROPPED and not line.passed and not decision.promote
    assert line.lower < line.delta < line.upper < 0 and line.mde is not None
    assert "interval [" in line.detail and "MDE" in line.detail
    stored = json.loads(json.dumps(decision.to_json(), allow_nan=False))
    assert PromotionDecision.from_json(stored).reasons == decision.reasons


def test_gain_check_states_its_mde_and_suggests_a_test_size():
    decision = decide(gate_inputs(100, 104), GateSettings(min_gain=0.02))
    gain = decision.reasons[0]
    assert gain.check == "gain" and gain.mde > 0.02
    assert "cannot see a 2.0% gain: about" in gain.detail and "items would" in gain.detail
    assert gain.lower < gain.delta < gain.upper


def test_the_app_shows_result_interval_and_mde_of_stored_reasons():
    from loop.app.views import gate_reasons

    few = {"arc_easy/acc": paired_stat("arc_easy/acc", [1, 0] * 10, [1, 0] * 10)}
    stored = json.dumps(decide(gate_inputs(60, 68, benchmark_stats=few)).to_json()["reasons"])
    rows = {r["check"]: r for r in gate_reasons(stored)}
    line = rows["benchmark:arc_easy/acc"]
    assert (line[""], line["result"], line["interval"]) == ("FAIL", CANNOT_TELL, "[+0.000, +0.000]")
    assert line["MDE"] == pytest.approx(K * K / (20 + K * K))
    old = gate_reasons([{"check": "gain", "passed": True, "detail": "0% -> 50%"}])
    assert old[0]["result"] is None and old[0]["MDE"] is None  # stored before MDEs


def test_a_benchmark_whose_log_probability_can_tell_is_not_blocked_by_its_accuracy():
    acc = paired_stat("arc_easy/acc", [1, 0] * 50, [1, 0] * 50)  # 100 items: MDE 11 points
    logprobs = [-1.0, -1.4, -0.6, -1.2] * 25
    gold = paired_stat(f"arc_easy/{GOLD_LOGPROB}", logprobs, [v - 0.001 for v in logprobs],
                       unit="nats")
    both = {acc.name: acc, gold.name: gold}
    assert not decide(gate_inputs(60, 68, benchmark_stats=both)).promote  # accuracy alone
    decision = decide(gate_inputs(60, 68, benchmark_stats=both),
                      GateSettings(logprob_tolerance=0.05))
    lines = {r.check: r for r in decision.reasons}
    assert lines["benchmark:arc_easy/acc"].status == CANNOT_TELL
    assert lines["benchmark:arc_easy/acc"].passed and "another arc_easy signal can" in \
        lines["benchmark:arc_easy/acc"].detail
    assert lines[f"benchmark:arc_easy/{GOLD_LOGPROB}"].status == PASSED and decision.promote
