"""score: 1.0 when the teacher's SQL matches the gold result, 0.5 when it only runs, else 0.0."""

from __future__ import annotations

from typing import Any, ClassVar

from shared.schemas import step_fields
from shared.step import Row, Step, StepParams


class ScoreParams(StepParams):
    output: str = "teacher_score"


class ScoreStep(Step):
    name: ClassVar[str] = "score"
    Params: ClassVar[type[StepParams]] = ScoreParams
    params: ScoreParams

    def output_fields(self) -> list[dict[str, Any]]:
        return step_fields(self.name, {"teacher_score": self.params.output})

    def process_row(self, row: Row) -> Row | None:
        if row.get("gold_match") is True:
            score = 1.0
        elif row.get("exec_pass") is True:
            score = 0.5
        else:
            score = 0.0
        return {**row, self.params.output: score}
