"""join: rows of several inputs that share a key, merged into one row.

A join reads two or more stages (`inputs:`), e.g. the answers of two teachers to the same
prompt. The rows of one key meet in one instance because the inputs are partitioned alike
(each keeps the partition of the stage it read, or sets `partition_by` to the key) and the
range assignor gives an instance the same partitions of every input. A row waits in a state
store (committed with the consumed offsets, so a killed join resumes exactly) until every
input has delivered its key; the merged row is the first input's row, completed by the
others' fields it lacks, with each `collect` field gathered into a list (one entry per input,
in `inputs` order) and `join_missing` naming inputs that never delivered.

When a partition has drained on every input, keys some input never delivered (its row was
filtered, or dead-lettered upstream) are settled by `on_missing`: `emit_partial` emits the
merged row with nulls for the missing inputs, `drop` dead-letters it as JoinIncomplete with
the inputs it lacked. Both are functions of what arrived, not of arrival order.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared import rowjson
from shared.gather import GatherParams, GatherStep
from shared.step import Row
from shared.topic_schema import row_fields, union_fields


class JoinParams(GatherParams):
    #: `collect` gathers a field from every input, one entry per input in `inputs` order
    by: str = "sample_id"


class JoinStep(GatherStep[JoinParams]):
    name: ClassVar[str] = "join"
    outputs: ClassVar[tuple[str, ...]] = ("join_missing",)
    store: ClassVar[str] = "join"

    def reads(self) -> set[str]:
        return {self.params.by}

    def row_fields(self, inputs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        if len(inputs) < 2:
            raise ValueError("a join reads two or more stages (`inputs:`)")
        merged = union_fields(self.name, inputs)
        collected = self.params.collect
        missing = sorted(set(collected) - {f["name"] for f in merged})
        if missing:
            raise ValueError(f"join collects {missing}, which no input carries")
        lists = [
            {
                "name": collected[f["name"]],
                "type": {"type": "array", "items": _nullable(f["type"])},
                "default": [],
            }
            for f in merged
            if f["name"] in collected
        ]
        kept = [f for f in merged if f["name"] not in collected]
        return row_fields([], kept, lists, self.output_fields())

    # -- rows ------------------------------------------------------------------------------------
    def process_row(self, row: Row) -> Row | None:
        if row.get(self.params.by) is None:
            raise ValueError(f"join: the row has no {self.params.by!r} to join by")
        key = rowjson.row_key(row[self.params.by])
        return self.hold(key, self.ctx.current_input(), row, len(self.ctx.inputs))

    def incomplete(self, row: Row, key: str) -> tuple[str, str]:
        lacking = ", ".join(row["join_missing"])
        return "JoinIncomplete", f"no row from {lacking} for {self.params.by} {key}"

    def assemble(self, held: dict[str, Row]) -> Row:
        inputs = self.ctx.inputs
        collected = self.params.collect
        merged: Row = {}
        for stage in inputs:
            for name, value in held.get(stage, {}).items():
                if name not in collected:
                    merged.setdefault(name, value)
        for field, into in collected.items():
            merged[into] = [held[stage].get(field) if stage in held else None for stage in inputs]
        merged["join_missing"] = [stage for stage in inputs if stage not in held]
        return merged


def _nullable(kind: Any) -> Any:
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return kind
    return ["null", kind]
