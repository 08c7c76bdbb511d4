"""keep_by_score: keep a row only if it was kept so far and scored high enough.

Like rule_filter it marks rather than drops, so the quality report sees every row.
"""

from __future__ import annotations

from typing import ClassVar

from shared.step import Row, Step, StepParams


class KeepByScoreParams(StepParams):
    field: str = "teacher_score"
    min_score: float = 0.5


class KeepByScoreStep(Step[KeepByScoreParams]):
    name: ClassVar[str] = "keep_by_score"
    outputs: ClassVar[tuple[str, ...]] = ("keep",)

    def reads(self) -> set[str]:
        return {self.params.field}

    def process_row(self, row: Row) -> Row | None:
        score = row.get(self.params.field)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError(f"keep_by_score: {self.params.field!r} is {score!r}, not a number")
        # No upstream keep (or a null one) means nothing rejected the row yet.
        kept_so_far = row.get("keep") is not False
        return {**row, "keep": kept_so_far and score >= self.params.min_score}
