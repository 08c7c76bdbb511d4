"""Composing the concrete Avro schema of each data topic.

A row on the topic after step N carries the seed's fields plus every field steps 1..N
added; the envelope (`schemas/envelope/batch.avsc`) wraps an array of such rows. Composing
the schema from the step declarations keeps each topic's schema exact and lets a reader
reject bytes written under any schema this pipeline does not know.
"""

from __future__ import annotations

from typing import Any

from shared.schemas import load_avsc

ROW_META_FIELDS: list[dict[str, Any]] = [
    {"name": "source_index", "type": "long", "doc": "position of the seed in its input"},
]


#: A field attribute (`"volatile": true`) marking a column that records how a row was made
#: (latency, cache hits), not what it is: it differs between runs of the same seeds, so dataset
#: files leave it out and stay byte-identical.
VOLATILE = "volatile"


def dataset_columns(fields: list[dict[str, Any]]) -> list[str]:
    """The columns of a dataset file: every row field but the volatile ones."""
    return [f["name"] for f in fields if not f.get(VOLATILE)]


def row_fields(seed_fields: list[dict[str, Any]], *added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Meta fields, then seed fields, then each step's additions (a re-declared name is replaced)."""
    by_name: dict[str, dict[str, Any]] = {}
    for group in (ROW_META_FIELDS, seed_fields, *added):
        for field in group:
            by_name[field["name"]] = field
    return list(by_name.values())


def union_fields(stage: str, inputs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The fields of rows from several stages read as one: every field of any input; one typed
    differently by two inputs is an error, one missing from some input becomes nullable."""
    by_name: dict[str, dict[str, Any]] = {}
    present: dict[str, int] = {}
    for fields in inputs:
        for field in fields:
            name = field["name"]
            known = by_name.get(name)
            if known is not None and known["type"] != field["type"]:
                raise ValueError(
                    f"stage {stage!r}: field {name!r} is {known['type']!r} in one input and "
                    f"{field['type']!r} in another"
                )
            by_name.setdefault(name, field)
            present[name] = present.get(name, 0) + 1
    out = []
    for name, field in by_name.items():
        if present[name] < len(inputs) and not _nullable(field):
            field = field | {"type": ["null", field["type"]], "default": None}
        out.append(field)
    return out


def _nullable(field: dict[str, Any]) -> bool:
    kind = field["type"]
    return kind == "null" or (isinstance(kind, list) and kind[:1] == ["null"])


def batch_schema(fields: list[dict[str, Any]]) -> dict[str, Any]:
    """The full Batch schema with Row and EndOfRun inlined (so its fingerprint is self-contained)."""
    envelope = load_avsc("envelope/batch.avsc")
    row = {"type": "record", "name": "Row", "namespace": "fastdistill", "fields": fields}
    for field in envelope["fields"]:
        if field["name"] == "rows":
            field["type"]["items"] = row
        elif field["name"] == "end_of_run":
            field["type"] = ["null", load_avsc("envelope/end_of_run.avsc")]
    return envelope
