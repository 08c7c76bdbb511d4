from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastdistill.plan import PipelinePlan, PlanError
from services.coordinator.gates import GateConfigError, GateVerdict, evaluate_gates, parse_gates
from services.coordinator.layout import QualityLayout
from services.coordinator.quality import QualityAgg
from shared.pipeline import PipelineSpec

REPO = Path(__file__).resolve().parents[2]
METRICS = {
    "total": 42,
    "exec_pass_rate": 0.119,
    "exec_error_rate": 0.881,
    "gold_match_rate": 0.45,
    "teacher_score_mean": 0.3,
    "teacher_score_p50": 0.5,
    "p_keep": 0.9,
    "rejected": 7,
    "teacher_score_min": None,
    "gold_matched": None,
    "dead_letters": 3,
}


def test_exact_failure_strings_in_configuration_order() -> None:
    verdict = evaluate_gates(
        {
            "max_rejected": 5,
            "min_total": 100,
            "max_p_keep": 0.95,
            "min_exec_pass_rate": 0.5,
            "max_exec_error_rate": 0.5,
            "min_gold_match_rate": 0.4,
            "min_judge_score_mean": 0.5,
            "min_teacher_score_p50": 0.6,
            "max_dead_letters": 0,
            "min_p_keep": 0.91,
        },
        METRICS,
    )
    assert verdict == {
        "passed": False,
        "failures": [
            "rejected 7.0000 > max_rejected 5.0000",
            "total 42.0000 < min_total 100.0000",
            "exec_pass_rate 0.1190 < min_exec_pass_rate 0.5000",
            "exec_error_rate 0.8810 > max_exec_error_rate 0.5000",
            "judge_score_mean 0.3000 < min_judge_score_mean 0.5000",
            "teacher_score_p50 0.5000 < min_teacher_score_p50 0.6000",
            "dead_letters 3.0000 > max_dead_letters 0.0000",
            "p_keep 0.9000 < min_p_keep 0.9100",
        ],
    }


def test_gates_on_a_real_quality_aggregate_any_metric() -> None:
    # 5 of 42 rows pass execution: 0.11904... prints as the design's example.
    layout = QualityLayout((("teacher_score", True), ("latency_ms", True)), ("sql",), ("teacher_score",))
    agg = QualityAgg(layout)
    agg.add_rows(
        [{"exec_pass": i < 5, "teacher_score": 0.5 * (i < 5), "latency_ms": 10.0 * i} for i in range(42)]
    )
    gates = parse_gates(
        {"min_exec_pass_rate": 0.5, "min_total": 10, "max_teacher_score_max": 0.4, "max_latency_ms_p95": 300},
        layout.metrics(),
    )
    verdict = evaluate_gates(gates, agg.metrics())
    assert verdict == GateVerdict(
        passed=False,
        failures=[
            "exec_pass_rate 0.1190 < min_exec_pass_rate 0.5000",
            "teacher_score_max 0.5000 > max_teacher_score_max 0.4000",
            # p95 of 0, 10, ..., 410 is 390 (nearest rank 40), read from buckets within 2.2 %
            f"latency_ms_p95 {agg.metrics()['latency_ms_p95']:.4f} > max_latency_ms_p95 300.0000",
        ],
    )
    assert agg.metrics()["latency_ms_p95"] == pytest.approx(390, rel=0.022)
    assert json.loads(json.dumps(verdict)) == verdict


def test_passing_gates_and_boundaries() -> None:
    assert evaluate_gates({}, METRICS) == {"passed": True, "failures": []}
    at_bounds = {"min_total": 42, "max_total": 42, "min_gold_match_rate": 0.45, "max_judge_score_mean": 0.3}
    assert evaluate_gates(at_bounds, METRICS) == {"passed": True, "failures": []}


def test_a_metric_the_data_cannot_give_fails_the_gate() -> None:
    verdict = evaluate_gates({"min_teacher_score_min": 0.1, "max_gold_match_rate": 1}, METRICS)
    assert verdict["failures"] == ["teacher_score_min missing (min_teacher_score_min 0.1000)"]
    assert evaluate_gates({"min_gold_matched": 1}, METRICS)["failures"] == [
        "gold_matched missing (min_gold_matched 1.0000)"
    ]


def test_parsed_gates_keep_configuration_order() -> None:
    known = ["total", "rejected", "teacher_score_mean", "judge_score_mean"]
    gates = parse_gates({"max_rejected": 2, "min_total": 3, "min_judge_score_mean": 0.5}, known)
    assert [(g.name, g.metric, g.bound, g.threshold) for g in gates] == [
        ("max_rejected", "rejected", "max", 2.0),
        ("min_total", "total", "min", 3.0),
        ("min_judge_score_mean", "judge_score_mean", "min", 0.5),
    ]


def test_unknown_gates_are_one_line_naming_the_stage_and_its_metrics() -> None:
    layout = QualityLayout((("teacher_score", True),), ("sql",))
    with pytest.raises(GateConfigError) as info:
        parse_gates(
            {"min_total": 1, "min_accuracy": 0.5, "exec_pass_rate": 0.5, "mean_total": 1},
            layout.metrics(),
            stage="score",
            described=layout.describe(),
        )
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "unknown quality gate(s) min_accuracy, exec_pass_rate, mean_total on stage score: a gate is "
        "min_<metric> or max_<metric>; metrics on stage score: total, kept, rejected, p_keep, rows_in, "
    )
    assert "exec_error_rate" in message and "gold_error_rate" in message
    assert "teacher_score_{count,nulls,min,mean,p50,p95,max}" in message
    assert message.endswith(", judge_score_mean")


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ({"min_total": "many"}, "min_total: the threshold must be a finite number, not 'many'"),
        ({"max_p_keep": float("nan")}, "max_p_keep: the threshold must be a finite number, not nan"),
        ({"max_p_keep": None}, "max_p_keep: the threshold must be a finite number, not None"),
        ({"max_p_keep": True}, "max_p_keep: the threshold must be a finite number, not True"),
    ],
)
def test_bad_thresholds_are_config_errors(gates: dict[str, Any], message: str) -> None:
    with pytest.raises(GateConfigError) as info:
        parse_gates(gates, ["total", "p_keep"])
    assert str(info.value) == message


# -- gates of a pipeline, checked when its plan is built ------------------------------------------
def _example(**changes: Any) -> PipelineSpec:
    raw = yaml.safe_load((REPO / "examples/text2sql/pipeline.yaml").read_text())
    for step in raw["steps"]:
        if "db_path" in step.get("params", {}):
            step["params"]["db_path"] = str(REPO / step["params"]["db_path"])
    return PipelineSpec.model_validate(raw | changes)


def test_gates_on_any_stage_and_metric_load() -> None:
    spec = _example(
        gates={
            "min_total": 100,
            "max_exec_error_rate": 0.5,
            "min_teacher_score_mean": 0.2,
            "sql_eval": {"min_exec_pass_rate": 0.5, "max_gold_error_rate": 0.1},
            "teacher": {
                "max_teacher_latency_ms_p95": 5000,
                "max_dead_letters": 0,
                "min_prompt_tokens_p50": 1,
            },
            "dedup": {"max_rows_dropped": 50},
            "seeds": {"min_source_index_count": 1},
        }
    )
    layouts = PipelinePlan.build(spec).quality_layouts()
    assert layouts["sql_eval"].sets == ("sql",) and layouts["teacher"].sets == ()
    assert layouts["score"].scores == ("teacher_score",) and layouts["keep_by_score"].scores == ()
    assert dict(layouts["teacher"].numeric)["teacher_latency_ms"] is True
    assert dict(layouts["keep_by_score"].numeric)["prompt_tokens"] is False


def test_a_gate_unknown_on_its_stage_fails_the_plan_in_one_line() -> None:
    spec = _example(gates={"teacher": {"min_exec_pass_rate": 0.5}, "min_acuracy": 1})
    with pytest.raises(PlanError) as info:
        PipelinePlan.build(spec)
    first, second = info.value.problems
    assert first.startswith(
        "gates of teacher: unknown quality gate(s) min_exec_pass_rate on stage teacher: a gate is "
    )
    assert "teacher_latency_ms_{count,nulls,min,mean,p50,p95,max}" in first
    assert second.startswith(
        "gates of keep_by_score: unknown quality gate(s) min_acuracy on stage keep_by_score"
    )


def test_the_quality_section_is_checked() -> None:
    spec = _example(
        quality={
            "metric_sets": {"teacher": ["sql"], "nowhere": ["sql"], "score": ["sqll"]},
            "score_columns": ["teacher_score", "bogus"],
        }
    )
    with pytest.raises(PlanError) as info:
        PipelinePlan.build(spec)
    assert info.value.problems == [
        "quality.metric_sets: 'nowhere' is no stage; stages: seeds, canonicalize, hash, dedup, teacher, "
        "clean_sql, rule_filter, sql_eval, score, keep_by_score",
        "quality.score_columns: 'bogus' is no numeric column of any stage; numeric columns: "
        "completion_tokens, prompt_tokens, source_index, teacher_latency_ms, teacher_score",
        "quality.metric_sets of teacher: set 'sql' needs column(s) exec_pass, which the stage's rows "
        "do not have",
        "quality.metric_sets of score: unknown quality metric set 'sqll'; did you mean 'sql'?",
    ]


def test_the_pipeline_chooses_sets_and_score_columns() -> None:
    spec = _example(
        quality={"metric_sets": {"keep_by_score": []}, "score_columns": ["teacher_latency_ms"]}, gates={}
    )
    layouts = PipelinePlan.build(spec).quality_layouts()
    assert layouts["keep_by_score"].sets == () and layouts["score"].sets == ("sql",)
    assert layouts["teacher"].scores == ("teacher_latency_ms",) and layouts["score"].scores == ()
    spec = _example(quality={"metric_sets": {"keep_by_score": []}}, gates={"min_exec_pass_rate": 0.5})
    with pytest.raises(PlanError, match="min_exec_pass_rate on stage keep_by_score"):
        PipelinePlan.build(spec)
