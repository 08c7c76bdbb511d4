"""One-to-many steps: the children of a row, with ids as deterministic as the row's own.

A step that makes several rows of one (`num_generations: N`) gives each child the parent's
fields and its own, `parent_id` (the parent's id), `generation_index` (0..N-1) and
`generation_count` (N), and the id `<parent id>:<index>`: dedup, replay and manifests see the
same ids in every run. `group_generations` gathers the children of a parent back into one row.
The three fields are declared in `schemas/rows/children.avsc`; a step that emits children
lists them among its outputs.
"""

from __future__ import annotations

from typing import Any

from shared.schemas import load_avsc
from shared.step import Row

CHILD_FIELDS = ("parent_id", "generation_index", "generation_count")


def with_child_fields(avsc: str) -> dict[str, Any]:
    """A step's Avro record (`avsc`, a path under schemas/) with the child fields appended: the
    schema of a step that may emit children."""
    record = load_avsc(avsc)
    return {**record, "fields": [*record["fields"], *load_avsc("rows/children.avsc")["fields"]]}


def child_id(parent_id: object, index: int) -> str:
    return f"{parent_id}:{index}"


def children(parent: Row, outputs: list[Row], id_field: str = "sample_id") -> list[Row]:
    """One row per output: the parent's fields, the output's, and the child fields."""
    parent_id = parent.get(id_field)
    count = len(outputs)
    return [
        parent
        | output
        | {
            "parent_id": None if parent_id is None else str(parent_id),
            "generation_index": index,
            "generation_count": count,
            id_field: child_id(parent_id, index) if parent_id is not None else None,
        }
        for index, output in enumerate(outputs)
    ]
