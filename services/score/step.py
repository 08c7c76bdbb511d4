"""score: 1.0 when the teacher's SQL matches the gold result, 0.5 when it only runs, else 0.0.

A row whose gold SQL failed (`gold_error` set by sql_eval) scores 0.0 whatever its own SQL did:
with a broken gold there is nothing to check the answer against, so it must not pass as one that
merely runs (0.5 would keep it under the example's `keep_by_score` threshold). The reason stays
visible in the row's `gold_error` column and in the quality report's gold error counts.
"""

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
        if row.get("gold_error") is not None:
            score = 0.0
        elif row.get("gold_match") is True:
            score = 1.0
        elif row.get("exec_pass") is True:
            score = 0.5
        else:
            score = 0.0
        return {**row, self.params.output: score}
