"""canonicalize: the chosen fields of a row as one canonical JSON string.

The string is what identity is computed from (the hash step), so it must not depend on dict
order, the platform's default encoding or whitespace: sorted keys, ASCII, compact separators.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import Field

from shared.step import Row, Step, StepParams


def canonical_json(value: Any) -> str:
    """The one serialisation every identity-bearing step uses."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


class CanonicalizeParams(StepParams):
    fields: list[str] = Field(min_length=1)
    output: str = "canonical_input"
    strict: bool = True
    #: A null and an absent field mean the same to a seed; dropping nulls makes them hash alike.
    drop_nulls: bool = True


class CanonicalizeStep(Step[CanonicalizeParams]):
    name: ClassVar[str] = "canonicalize"
    outputs: ClassVar[tuple[str, ...]] = ("canonical_input",)

    def renamed(self) -> dict[str, str]:
        return {"canonical_input": self.params.output}

    def reads(self) -> set[str]:
        # A lenient canonicalize takes a field that is absent; a strict one needs them all.
        return set(self.params.fields) if self.params.strict else set()

    def process_row(self, row: Row) -> Row | None:
        p = self.params
        chosen: dict[str, Any] = {}
        for field in p.fields:
            if field not in row:
                if p.strict:
                    raise ValueError(f"canonicalize: missing field {field!r}")
                continue
            value = row[field]
            if value is None and p.drop_nulls:
                continue
            chosen[field] = value
        return {**row, p.output: canonical_json(chosen)}
