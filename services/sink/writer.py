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

Memory stays flat in the number of rows: only the sort keys (source index, where the row is)
are held; rows are read back one at a time in order, the JSONL is streamed out, and the
Parquet file is written one row group at a time once a first pass has fixed each column's
type. `StagedRows` is that staging for the sink: rows appended as they arrive, one JSONL file
per partition.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from services.coordinator.manifest import canonical_json, json_default

FORMATS = ("jsonl", "parquet")
#: Part of the determinism contract (it shapes the file): small enough that one group in Arrow
#: form keeps the sink under 200 MB at any run size (100k bench rows written by a fresh process
#: with the system allocator: 154 MB peak RSS; with 65,536 rows per group ~270 MB).
ROW_GROUP_SIZE = 8192
PARQUET_COMPRESSION = "snappy"
#: Rows turned into Arrow at a time: a divisor of ROW_GROUP_SIZE and a multiple of pyarrow's
#: write_batch_size (1024), so the bytes do not depend on it (checked: 2048 and 8192 write the
#: same files). Fewer Python rows alive at once: the chain bench's sink peaked at 195-197 MB, 209-212
#: with 8192.
_ARROW_BATCH = 2048
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


class RowSource(Protocol):
    """Rows addressed by position: their count, each one's source index, and the row itself."""

    def __len__(self) -> int: ...

    def source_index(self, i: int) -> int | None: ...

    def row(self, i: int) -> dict[str, Any]: ...


class _ListSource:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def source_index(self, i: int) -> int | None:
        return self.rows[i].get("source_index")

    def row(self, i: int) -> dict[str, Any]:
        return self.rows[i]


class StagedRows:
    """A run's rows staged as compact JSON lines, one file per partition, read back by offset.

    Holds a source index and a file position per row, nothing else. Rows go through JSON on
    the way, so they must be JSON values already (as decoded Avro rows without bytes are).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._indices: list[int | None] = []
        self._files = array("H")
        self._offsets = array("q")
        self._paths: list[Path] = []
        self._file_of: dict[int, int] = {}
        self._readers: dict[int, IO[bytes]] = {}

    def __len__(self) -> int:
        return len(self._indices)

    def append(self, partition: int, rows: list[dict[str, Any]]) -> None:
        file = self._file_of.get(partition)
        if file is None:
            file = self._file_of[partition] = len(self._paths)
            self._paths.append(self.folder / f"p{partition}.jsonl")
            self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._paths[file], "ab") as fh:
            offset = fh.tell()
            for row in rows:
                line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
                fh.write(line)
                self._indices.append(row.get("source_index"))
                self._files.append(file)
                self._offsets.append(offset)
                offset += len(line)

    def source_index(self, i: int) -> int | None:
        return self._indices[i]

    def row(self, i: int) -> dict[str, Any]:
        file = self._files[i]
        reader = self._readers.get(file)
        if reader is None:
            reader = self._readers[file] = open(self._paths[file], "rb")  # noqa: SIM115 - closed in write_dataset
        reader.seek(self._offsets[i])
        row: dict[str, Any] = json.loads(reader.readline())
        return row

    def write_dataset(
        self,
        folder: Path,
        columns: list[str] | None,
        formats: list[str] | None = None,
        limit: int | None = None,
    ) -> DatasetFiles:
        """`write_dataset` of the staged rows; `limit` keeps only the first rows in file order."""
        try:
            return _write(self, folder, columns, formats, limit)
        finally:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()


def write_dataset(
    rows: list[dict[str, Any]],
    folder: Path,
    columns: list[str] | None,
    formats: list[str] | None = None,
) -> DatasetFiles:
    """Write `data.<format>` files (default: jsonl and parquet) under `folder`.

    `columns=None` takes every key, in order of first appearance in the sorted rows.
    """
    return _write(_ListSource(rows), folder, columns, formats, None)


def _write(
    source: RowSource, folder: Path, columns: list[str] | None, formats: list[str] | None, limit: int | None
) -> DatasetFiles:
    formats = list(FORMATS) if formats is None else formats
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown dataset format(s) {unknown}; known: {list(FORMATS)}")
    order = _sorted_positions(source)[:limit]
    if columns is None:
        columns = list(dict.fromkeys(key for i in order for key in source.row(i)))
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "data.jsonl" if "jsonl" in formats else None
    # The JSONL pass also settles each column's Parquet type, which needs every value seen.
    types = _write_jsonl_and_type(source, order, columns, jsonl)
    if "parquet" in formats:
        _write_parquet(source, order, columns, types, folder / "data.parquet")
    names = [f"data.{fmt}" for fmt in formats]
    return DatasetFiles(folder, {name: _sha256(folder / name) for name in names})


def _sorted_positions(source: RowSource) -> list[int]:
    """Positions by (no source index last, source index, canonical JSON of the row).

    The canonical JSON only breaks ties, so it is computed for tied rows alone: a stable sort
    on the index, then each run of equal indices sorted on it, gives the same order.
    """

    def index_key(i: int) -> tuple[bool, int]:
        index = source.source_index(i)
        return index is None, index or 0

    order = sorted(range(len(source)), key=index_key)
    result: list[int] = []
    for _, group in itertools.groupby(order, key=index_key):
        tied = list(group)
        if len(tied) > 1:
            tied.sort(key=lambda i: canonical_json(source.row(i)))
        result.extend(tied)
    return result


def _records(source: RowSource, order: list[int], columns: list[str]) -> Iterator[dict[str, Any]]:
    # Missing keys become null so both files have one shape, whatever each row carried.
    for i in order:
        row = source.row(i)
        yield {c: row.get(c) for c in columns}


class _ColumnKind:
    """The Python types seen in a column, and whether an int outside int64 was among them."""

    def __init__(self) -> None:
        self.kinds: set[type] = set()
        self.huge_int = False

    def see(self, value: Any) -> None:
        if value is None:
            return
        kind = type(value)
        self.kinds.add(kind)
        if kind is int and not _INT64_MIN <= value <= _INT64_MAX:
            self.huge_int = True

    def arrow_type(self) -> tuple[pa.DataType, bool]:
        """The column's Arrow type, and whether its values are stored as canonical JSON text."""
        kinds = self.kinds
        if kinds == {bool}:
            return pa.bool_(), False
        if kinds and kinds <= {int, float} and not self.huge_int:
            return (pa.int64() if kinds == {int} else pa.float64()), False
        return pa.string(), not kinds <= {str}


def _write_jsonl_and_type(
    source: RowSource, order: list[int], columns: list[str], path: Path | None
) -> list[tuple[pa.DataType, bool]]:
    seen = [_ColumnKind() for _ in columns]
    # Without a JSONL format the pass still runs for the types, writing to nowhere.
    with open(path or os.devnull, "wb") as fh:
        for record in _records(source, order, columns):
            for kind, value in zip(seen, record.values(), strict=True):
                kind.see(value)
            fh.write((json.dumps(record, ensure_ascii=False, default=json_default) + "\n").encode("utf-8"))
    return [kind.arrow_type() for kind in seen]


def _write_parquet(
    source: RowSource,
    order: list[int],
    columns: list[str],
    types: list[tuple[pa.DataType, bool]],
    path: Path,
) -> None:
    schema = pa.schema([pa.field(c, t, nullable=True) for c, (t, _) in zip(columns, types, strict=True)])
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    records = _records(source, order, columns)
    with pq.ParquetWriter(path, schema, **options) as writer:
        # One table per row group, built from Arrow batches of a few thousand rows, so neither a
        # run's nor a row group's rows are held as Python objects. The batches are a multiple of
        # the writer's batch size, so pages are cut where one contiguous table would cut them.
        # An empty run still writes its one empty table, as `pq.write_table` does.
        group = _row_group(records, columns, types, schema)
        while True:
            writer.write_table(group, row_group_size=ROW_GROUP_SIZE)
            group = _row_group(records, columns, types, schema)
            if group.num_rows == 0:
                break


def _row_group(
    records: Iterator[dict[str, Any]],
    columns: list[str],
    types: list[tuple[pa.DataType, bool]],
    schema: pa.Schema,
) -> pa.Table:
    batches = []
    for _ in range(ROW_GROUP_SIZE // _ARROW_BATCH):
        chunk = list(itertools.islice(records, _ARROW_BATCH))
        arrays = [
            _arrow_column([r[c] for r in chunk], arrow_type, as_json)
            for c, (arrow_type, as_json) in zip(columns, types, strict=True)
        ]
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
        if len(chunk) < _ARROW_BATCH:
            break
    return pa.Table.from_batches(batches, schema=schema).combine_chunks()


def _arrow_column(values: list[Any], arrow_type: pa.DataType, as_json: bool) -> pa.Array[Any]:
    if as_json:
        values = [None if v is None else canonical_json(v) for v in values]
    elif arrow_type == pa.float64():
        values = [None if v is None else float(v) for v in values]
    return pa.array(values, type=arrow_type)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
