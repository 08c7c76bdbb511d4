"""filter_by_bool: drop rows whose boolean field is not the wanted value."""

from __future__ import annotations

from typing import ClassVar

from shared.step import Row, Step, StepParams


class FilterByBoolParams(StepParams):
    field: str = "keep"
    value: bool = True


class FilterByBoolStep(Step[FilterByBoolParams]):
    name: ClassVar[str] = "filter_by_bool"

    def reads(self) -> set[str]:
        return {self.params.field}

    def process_row(self, row: Row) -> Row | None:
        # Strict equality: an absent field, null or a truthy non-bool is not `True`.
        value = row.get(self.params.field)
        return row if isinstance(value, bool) and value == self.params.value else None
