"""score: 1.0 when the teacher's SQL matches the gold result, 0.5 when it only runs, else 0.0."""

from __future__ import annotations

from typing import ClassVar

from shared.step import Row, Step, StepParams


class ScoreParams(StepParams):
    output: str = "teacher_score"


class ScoreStep(Step[ScoreParams]):
    name: ClassVar[str] = "score"
    outputs: ClassVar[tuple[str, ...]] = ("teacher_score",)

    def renamed(self) -> dict[str, str]:
        return {"teacher_score": self.params.output}

    def reads(self) -> set[str]:
        return {"exec_pass", "gold_match"}

    def process_row(self, row: Row) -> Row | None:
        if row.get("gold_match") is True:
            score = 1.0
        elif row.get("exec_pass") is True:
            score = 0.5
        else:
            score = 0.0
        return {**row, self.params.output: score}
