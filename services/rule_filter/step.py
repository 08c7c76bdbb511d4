"""rule_filter: mark rows whose text is empty, too short or too long.

It never drops: a rejected row stays visible (with its reason) for the quality report, and
`filter_by_bool` or the sink decides what leaves the pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from shared.step import Row, Step, StepParams


class RuleFilterParams(StepParams):
    field: str
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(100_000, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> RuleFilterParams:
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must not exceed max_chars")
        return self


class RuleFilterStep(Step[RuleFilterParams]):
    name: ClassVar[str] = "rule_filter"
    outputs: ClassVar[tuple[str, ...]] = ("keep", "reject_reason")

    def reason(self, value: Any) -> str:
        if value is None:
            return "empty_output"
        if not isinstance(value, str):
            raise TypeError(f"rule_filter: {self.params.field!r} is {type(value).__name__}, not a string")
        length = len(value.strip())
        if length == 0:
            return "empty_output"
        if length < self.params.min_chars:
            return "too_short"
        if length > self.params.max_chars:
            return "too_long"
        return "ok"

    def reads(self) -> set[str]:
        return {self.params.field}

    def process_row(self, row: Row) -> Row | None:
        reason = self.reason(row.get(self.params.field))
        return {**row, "keep": reason == "ok", "reject_reason": reason}
