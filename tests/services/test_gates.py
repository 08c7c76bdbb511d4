from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from services.coordinator.gates import (
    KNOWN_METRICS,
    GateConfig,
    GateConfigError,
    GateVerdict,
    evaluate_gates,
    parse_gates,
)
from services.coordinator.quality import QUALITY_METRICS, QualityAgg

METRICS = {
    "total": 42,
    "exec_pass_rate": 0.119,
    "gold_match_rate": 0.45,
    "teacher_score_mean": 0.3,
    "p_keep": 0.9,
    "rejected": 7,
    "teacher_score_min": None,
}


def test_exact_failure_strings_named_gates_first_then_configuration_order() -> None:
    verdict = evaluate_gates(
        {
            "max_rejected": 5,
            "min_total": 100,
            "max_p_keep": 0.95,
            "min_exec_pass_rate": 0.5,
            "min_gold_match_rate": 0.4,
            "min_judge_score_mean": 0.5,
            "min_p_keep": 0.91,
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
            "p_keep 0.9000 < min_p_keep 0.9100",
        ],
    }


def test_gates_on_a_real_quality_report() -> None:
    # 5 of 42 rows pass execution: 0.11904... prints as the design's example.
    agg = QualityAgg()
    agg.add_rows([{"exec_pass": i < 5, "teacher_score": 0.5 if i < 5 else 0.0} for i in range(42)])
    config = GateConfig(min_exec_pass_rate=0.5, min_total=10, max_teacher_score_max=0.4)
    verdict = evaluate_gates(config, agg.report("r", "score"))
    assert verdict == GateVerdict(
        passed=False,
        failures=[
            "exec_pass_rate 0.1190 < min_exec_pass_rate 0.5000",
            "teacher_score_max 0.5000 > max_teacher_score_max 0.4000",
        ],
    )
    assert evaluate_gates(config, agg.metrics()) == verdict
    assert json.loads(json.dumps(verdict)) == verdict


def test_passing_gates_and_boundaries() -> None:
    assert evaluate_gates({}, METRICS) == {"passed": True, "failures": []}
    assert evaluate_gates(GateConfig(), METRICS)["passed"]
    at_bounds = {"min_total": 42, "max_total": 42, "min_gold_match_rate": 0.45, "max_judge_score_mean": 0.3}
    assert evaluate_gates(at_bounds, METRICS) == {"passed": True, "failures": []}


def test_a_metric_the_stage_lacks_fails_the_gate() -> None:
    verdict = evaluate_gates({"min_teacher_score_min": 0.1, "max_gold_match_rate": 1}, METRICS)
    assert verdict["failures"] == ["teacher_score_min missing (min_teacher_score_min 0.1000)"]
    assert evaluate_gates({"min_gold_matched": 1}, METRICS)["failures"] == [
        "gold_matched missing (min_gold_matched 1.0000)"
    ]


def test_config_parses_yaml_values_and_keeps_extra_gates_typed() -> None:
    config = GateConfig.parse({"min_total": "3", "max_rejected": 2, "min_judge_score_mean": 0.5})
    assert config.min_total == 3.0 and config.min_exec_pass_rate is None
    assert config.model_extra == {"max_rejected": 2.0}
    assert [(g.name, g.metric, g.bound, g.threshold) for g in config.gates()] == [
        ("min_total", "total", "min", 3.0),
        ("min_judge_score_mean", "judge_score_mean", "min", 0.5),
        ("max_rejected", "rejected", "max", 2.0),
    ]


def test_unknown_gates_are_a_config_error_listing_known_metrics() -> None:
    with pytest.raises(GateConfigError) as info:
        GateConfig.parse({"min_total": 1, "min_accuracy": 0.5, "exec_pass_rate": 0.5, "mean_total": 1})
    message = str(info.value)
    assert message.startswith("unknown quality gate(s) min_accuracy, exec_pass_rate, mean_total: ")
    assert all(metric in message for metric in KNOWN_METRICS)
    assert set(QUALITY_METRICS) < set(KNOWN_METRICS) and "judge_score_mean" in KNOWN_METRICS
    with pytest.raises(GateConfigError, match="min_accuracy"):
        evaluate_gates({"min_accuracy": 0.5}, METRICS)
    with pytest.raises(ValidationError):
        GateConfig.model_validate({"max_accuracy": 1})


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ({"min_total": "many"}, "min_total: Input should be a valid number"),
        ({"max_p_keep": float("nan")}, "max_p_keep: Input should be a finite number"),
        ({"max_p_keep": None}, "max_p_keep: Input should be a valid number"),
    ],
)
def test_bad_thresholds_are_config_errors(gates: dict, message: str) -> None:
    with pytest.raises(GateConfigError) as info:
        GateConfig.parse(gates)
    assert str(info.value).startswith(message)


def test_parse_gates_checks_a_plain_mapping() -> None:
    assert [g.name for g in parse_gates({"max_rejected": 1, "min_total": 2})] == ["min_total", "max_rejected"]
    with pytest.raises(GateConfigError, match="min_accuracy"):
        parse_gates({"min_accuracy": 0.5})
