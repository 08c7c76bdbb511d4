"""score: 1.0 on gold match, 0.5 when the SQL only runs, else 0.0."""

from __future__ import annotations

import pytest

from services.score import ScoreStep


@pytest.mark.parametrize(
    ("exec_pass", "gold_match", "score"),
    [(True, True, 1.0), (True, False, 0.5), (True, None, 0.5), (False, False, 0.0), (False, None, 0.0)],
)
def test_scores(exec_pass: bool, gold_match: bool | None, score: float) -> None:
    out = ScoreStep().process_row({"source_index": 0, "exec_pass": exec_pass, "gold_match": gold_match})
    assert out is not None and out["teacher_score"] == score


@pytest.mark.parametrize("exec_pass", [True, False])
def test_broken_gold_scores_zero_and_keeps_its_reason(exec_pass: bool) -> None:
    row = {"source_index": 0, "exec_pass": exec_pass, "gold_match": None, "gold_error": "no such table: t"}
    out = ScoreStep().process_row(row)
    assert out is not None and out["teacher_score"] == 0.0
    assert out["gold_error"] == "no such table: t"


def test_no_gold_error_scores_as_before() -> None:
    row = {"source_index": 0, "exec_pass": True, "gold_match": True, "gold_error": None}
    out = ScoreStep().process_row(row)
    assert out is not None and out["teacher_score"] == 1.0


def test_missing_fields_score_zero() -> None:
    out = ScoreStep().process_row({"source_index": 0})
    assert out is not None and out["teacher_score"] == 0.0


def test_output_renamed() -> None:
    step = ScoreStep(output="s")
    out = step.process_row({"source_index": 0, "exec_pass": True})
    assert out is not None and out["s"] == 0.5
    assert [f["name"] for f in step.output_fields()] == ["s"]
