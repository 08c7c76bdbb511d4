"""Deterministic dataset files: the same rows, in any arrival order, give byte-identical files.

Rows are ordered by `source_index` (rows without one last; ties broken by their canonical
JSON, so even duplicated indices cannot make the order depend on arrival). `data.jsonl` holds
one object per line with keys in `columns` order (missing keys as null, bytes as base64).
`data.parquet` is built from exactly those JSON values with an explicit schema inferred from
them, never from pandas, so it carries no pandas metadata:

- bool, int (int64), float (float64, also for columns mixing ints and floats) and str
  columns keep their type, as long as every int fits in int64;
- any other column (nested records, maps, arrays, bytes, mixed types, huge ints) is stored as
  a string of its canonical JSON (sorted keys) — struct inference would make the schema depend
  on which keys happen to occur, and JSON strings read back the same everywhere;
- columns whose values are all null are strings; every column is nullable.

Compression (snappy), the row-group size and the remaining writer options are fixed, and
pyarrow writes no timestamp, so the bytes depend on nothing but the rows and the pyarrow
version (which the footer names in `created_by`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.coordinator.manifest import canonical_json, json_default

FORMATS = ("jsonl", "parquet")
ROW_GROUP_SIZE = 65_536
PARQUET_COMPRESSION = "snappy"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Writer options spelled out so a change of pyarrow's defaults shows up as a diff here.
PARQUET_OPTIONS: dict[str, Any] = {
    "row_group_size": ROW_GROUP_SIZE,
    "compression": PARQUET_COMPRESSION,
    "version": "2.6",
    "data_page_version": "1.0",
    "use_dictionary": True,
    "write_statistics": True,
    "store_schema": True,
}


class DatasetFiles(dict[str, str]):
    """File name -> SHA-256 hex of each file written, plus the folder they are in.

    A plain dict to JSON encoders and `==`, so the sink can record it in its release status.
    """

    def __init__(self, folder: Path, sha256: Mapping[str, str]) -> None:
        super().__init__(sha256)
        self.folder = folder

    @property
    def sha256(self) -> dict[str, str]:
        return dict(self)

    @property
    def paths(self) -> dict[str, Path]:
        return {name: self.folder / name for name in self}


def _order(row: dict[str, Any]) -> tuple[bool, int, str]:
    # Rows without a source index go last rather than failing the comparison with None.
    index = row.get("source_index")
    return index is None, index or 0, canonical_json(row)


def write_dataset(
    rows: list[dict[str, Any]],
    folder: Path,
    columns: list[str] | None,
    formats: list[str] | None = None,
) -> DatasetFiles:
    """Write `data.<format>` files (default: jsonl and parquet) under `folder`.

    `columns=None` takes every key, in order of first appearance in the sorted rows.
    """
    formats = list(FORMATS) if formats is None else formats
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown dataset format(s) {unknown}; known: {list(FORMATS)}")
    ordered = sorted(rows, key=_order)
    if columns is None:
        columns = list(dict.fromkeys(key for row in ordered for key in row))
    # Missing keys become null so both files have one shape, whatever each row carried.
    records = [{c: row.get(c) for c in columns} for row in ordered]
    encoders = {"jsonl": _jsonl_bytes, "parquet": _parquet_bytes}
    folder.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    for fmt in formats:
        data = encoders[fmt](records, columns)
        name = f"data.{fmt}"
        (folder / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return DatasetFiles(folder, digests)


def _jsonl_bytes(records: list[dict[str, Any]], columns: list[str]) -> bytes:
    lines = (json.dumps(r, ensure_ascii=False, default=json_default) + "\n" for r in records)
    return "".join(lines).encode("utf-8")


def _arrow_column(values: list[Any]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return pa.array(values, type=pa.bool_())
    numeric = bool(kinds) and kinds <= {int, float}
    if numeric and all(type(v) is not int or _INT64_MIN <= v <= _INT64_MAX for v in values):
        if kinds == {int}:
            return pa.array(values, type=pa.int64())
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if kinds <= {str}:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else canonical_json(v) for v in values], type=pa.string())


def _parquet_bytes(records: list[dict[str, Any]], columns: list[str]) -> bytes:
    arrays = [_arrow_column([r[column] for r in records]) for column in columns]
    schema = pa.schema([pa.field(c, a.type, nullable=True) for c, a in zip(columns, arrays, strict=True)])
    table = pa.Table.from_arrays(arrays, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **PARQUET_OPTIONS)
    return buffer.getvalue()
