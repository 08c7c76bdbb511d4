"""keep_by_score: keep = upstream keep AND score >= min_score."""

from __future__ import annotations

import pytest

from services.keep_by_score import KeepByScoreStep


@pytest.mark.parametrize(
    ("keep", "score", "expected"),
    [(True, 1.0, True), (True, 0.5, True), (True, 0.0, False), (False, 1.0, False), (None, 0.5, True)],
)
def test_keep(keep: bool | None, score: float, expected: bool) -> None:
    out = KeepByScoreStep().process_row({"source_index": 0, "keep": keep, "teacher_score": score})
    assert out is not None and out["keep"] is expected


def test_no_upstream_keep_means_kept_so_far() -> None:
    out = KeepByScoreStep(min_score=1.0).process_row({"source_index": 0, "teacher_score": 1.0})
    assert out is not None and out["keep"] is True


def test_custom_field() -> None:
    out = KeepByScoreStep(field="judge", min_score=0.8).process_row({"source_index": 0, "judge": 0.7})
    assert out is not None and out["keep"] is False


@pytest.mark.parametrize("score", [None, "1.0", True])
def test_missing_or_non_numeric_score_is_an_error(score: object) -> None:
    with pytest.raises(ValueError):
        KeepByScoreStep().process_row({"source_index": 0, "teacher_score": score})


def test_never_drops_and_declares_keep() -> None:
    assert KeepByScoreStep().process_row({"source_index": 0, "teacher_score": 0.0}) is not None
    assert [f["name"] for f in KeepByScoreStep().output_fields()] == ["keep"]
