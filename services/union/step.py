"""union: the rows of several stages, interleaved as they come, unchanged.

Fields that only some inputs carry become nullable; a field two inputs type differently is a
load-time error (shared/topic_schema.py `union_fields`). Every step reading several stages does
the same with its input; `union` is the step that does nothing else.
"""

from __future__ import annotations

from typing import ClassVar

from shared.step import Row, Step, StepParams


class UnionStep(Step[StepParams]):
    name: ClassVar[str] = "union"

    def process_row(self, row: Row) -> Row:
        return row
