"""group_generations: the children of one row (a one-to-many step's output) back into one row.

Children carry `parent_id`, `generation_index` and `generation_count` (shared/fanout.py). They
wait in a state store, committed with the consumed offsets, until all `generation_count` of a
parent are in; the grouped row is the first child's fields with the parent's id back in
`sample_id`, each `collect` field gathered into a list in index order, and the child fields
gone. Children of one parent travel one partition (a step emits them together); a child
dead-lettered on the way leaves its group short, and when the partition drains such groups
are emitted with what arrived (`group_missing` lists the absent indexes) or dropped, by
`on_missing`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.fanout import CHILD_FIELDS
from shared.gather import GatherParams, GatherStep
from shared.step import Row
from shared.topic_schema import row_fields


class GroupParams(GatherParams):
    id_field: str = "sample_id"


class GroupGenerationsStep(GatherStep[GroupParams]):
    name: ClassVar[str] = "group_generations"
    outputs: ClassVar[tuple[str, ...]] = ("group_missing",)
    store: ClassVar[str] = "groups"

    def reads(self) -> set[str]:
        return {*CHILD_FIELDS, self.params.id_field, *self.params.collect}

    def row_fields(self, inputs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        (fields,) = inputs
        collected = self.params.collect
        lists = [
            {"name": collected[f["name"]], "type": {"type": "array", "items": f["type"]}, "default": []}
            for f in fields
            if f["name"] in collected
        ]
        kept = [f for f in fields if f["name"] not in collected and f["name"] not in CHILD_FIELDS]
        return row_fields([], kept, lists, self.output_fields())

    def process_row(self, row: Row) -> Row | None:
        parent = row.get("parent_id")
        if parent is None:
            raise ValueError(
                "group_generations: the row has no parent_id (it was not made by a one-to-many step)"
            )
        return self.hold(str(parent), str(row["generation_index"]), row, int(row["generation_count"]))

    def incomplete(self, row: Row, key: str) -> tuple[str, str]:
        return "GroupIncomplete", f"children {row['group_missing']} of {key} never arrived"

    def assemble(self, held: dict[str, Row]) -> Row:
        children = [held[k] for k in sorted(held, key=int)]
        first = children[0]
        count = int(first["generation_count"])
        present = {int(k) for k in held}
        grouped = {k: v for k, v in first.items() if k not in CHILD_FIELDS and k not in self.params.collect}
        grouped[self.params.id_field] = first["parent_id"]
        for field, into in self.params.collect.items():
            grouped[into] = [child.get(field) for child in children]
        grouped["group_missing"] = [i for i in range(count) if i not in present]
        return grouped
