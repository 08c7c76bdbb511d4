from __future__ import annotations

import pytest

from services.coordinator.gates import KNOWN_METRICS, GateConfigError, evaluate_gates, parse_gates

METRICS = {
    "total": 42,
    "exec_pass_rate": 0.119,
    "gold_match_rate": 0.45,
    "teacher_score_mean": 0.3,
    "p_keep": 0.9,
    "rejected": 7,
    "teacher_score_min": None,
}


def test_exact_failure_strings_in_configuration_order() -> None:
    verdict = evaluate_gates(
        {
            "min_total": 100,
            "min_exec_pass_rate": 0.5,
            "min_gold_match_rate": 0.4,
            "min_judge_score_mean": 0.5,
            "max_rejected": 5,
            "max_p_keep": 0.95,
        },
        METRICS,
    )
    assert verdict == {
        "passed": False,
        "failures": [
            "total 42.0000 < min_total 100.0000",
            "exec_pass_rate 0.1190 < min_exec_pass_rate 0.5000",
            "judge_score_mean 0.3000 < min_judge_score_mean 0.5000",
            "rejected 7.0000 > max_rejected 5.0000",
        ],
    }


def test_passing_gates_and_boundaries() -> None:
    assert evaluate_gates({}, METRICS) == {"passed": True, "failures": []}
    assert evaluate_gates({"min_total": 42, "max_total": 42, "min_gold_match_rate": 0.45}, METRICS)["passed"]


def test_a_metric_the_stage_lacks_fails_the_gate() -> None:
    verdict = evaluate_gates({"min_teacher_score_min": 0.1, "max_gold_match_rate": 1}, METRICS)
    assert verdict["failures"] == ["teacher_score_min missing (min_teacher_score_min 0.1000)"]


def test_unknown_gates_are_a_config_error_listing_known_metrics() -> None:
    with pytest.raises(GateConfigError) as info:
        parse_gates({"min_total": 1, "min_accuracy": 0.5, "exec_pass_rate": 0.5})
    message = str(info.value)
    assert message.startswith("unknown quality gate(s) min_accuracy, exec_pass_rate: ")
    assert all(metric in message for metric in KNOWN_METRICS)
    assert "judge_score_mean" in KNOWN_METRICS
