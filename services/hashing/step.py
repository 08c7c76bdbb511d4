"""hash: a SHA-256 identity for a row from a few of its fields.

The package is `hashing` so that it does not shadow the builtin `hash`; the step is `hash`.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from pydantic import Field

from services.canonicalize.step import canonical_json
from shared.step import Row, Step, StepParams


class HashParams(StepParams):
    fields: list[str] = Field(default_factory=lambda: ["task_id", "canonical_input"], min_length=1)
    output: str = "sample_id"


class HashStep(Step[HashParams]):
    name: ClassVar[str] = "hash"
    outputs: ClassVar[tuple[str, ...]] = ("sample_id",)

    def renamed(self) -> dict[str, str]:
        return {"sample_id": self.params.output}

    def reads(self) -> set[str]:
        return set(self.params.fields)

    def process_row(self, row: Row) -> Row | None:
        missing = [f for f in self.params.fields if f not in row]
        if missing:
            # An absent field hashed as null would give unrelated rows the same identity.
            raise ValueError(f"hash: missing field {missing[0]!r}")
        # Each part is JSON, so "a|b" as one string can never collide with "a" and "b".
        blob = "|".join(canonical_json(row[f]) for f in self.params.fields)
        return {**row, self.params.output: hashlib.sha256(blob.encode("utf-8")).hexdigest()}
