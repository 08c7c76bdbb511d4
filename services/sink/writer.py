"""Deterministic dataset files: the same rows, in any arrival order, give byte-identical files.

Rows are ordered by `source_index` (ties broken by their canonical JSON, so even duplicated
indices cannot make the order depend on arrival). `data.jsonl` holds one object per line with
keys in `columns` order. `data.parquet` is built from exactly those JSON values with an
explicit schema inferred from them, never from pandas, so it carries no pandas metadata:

- bool, int (int64), float (float64, also for columns mixing ints and floats) and str columns
  keep their type;
- any other column (nested records, maps, arrays, or mixed types) is stored as a string of
  its canonical JSON (sorted keys) — struct inference would make the schema depend on which
  keys happen to occur, and JSON strings read back the same everywhere;
- columns whose values are all null are strings; every column is nullable.

Compression and the row-group size are fixed so the bytes depend on nothing but the rows and
the pyarrow version.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.coordinator.manifest import canonical_json

FORMATS = ("jsonl", "parquet")
ROW_GROUP_SIZE = 65_536
PARQUET_COMPRESSION = "zstd"


def write_dataset(
    rows: list[dict[str, Any]],
    folder: Path,
    columns: list[str] | None,
    formats: list[str] | None = None,
) -> dict[str, str]:
    """Write `data.<format>` files under `folder`; returns file name -> SHA-256 hex.

    `columns=None` takes every key, in order of first appearance in the sorted rows.
    """
    formats = list(FORMATS) if formats is None else formats
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown dataset format(s) {unknown}; known: {list(FORMATS)}")
    ordered = sorted(rows, key=lambda r: (r.get("source_index", 0), canonical_json(r)))
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
    return digests


def _jsonl_bytes(records: list[dict[str, Any]], columns: list[str]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _arrow_column(values: list[Any]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return pa.array(values, type=pa.bool_())
    if kinds == {int}:
        return pa.array(values, type=pa.int64())
    if kinds and kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if kinds <= {str}:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else canonical_json(v) for v in values], type=pa.string())


def _parquet_bytes(records: list[dict[str, Any]], columns: list[str]) -> bytes:
    arrays = [_arrow_column([r[column] for r in records]) for column in columns]
    schema = pa.schema([pa.field(c, a.type, nullable=True) for c, a in zip(columns, arrays, strict=True)])
    table = pa.Table.from_arrays(arrays, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=ROW_GROUP_SIZE, compression=PARQUET_COMPRESSION)
    return buffer.getvalue()
