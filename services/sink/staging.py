"""One part of a dataset staged in its released form while rows arrive, merged in order at release.

A part's rows are released sorted by `source_index` (rows without one last; ties broken by the
canonical JSON of the released record, so the order never depends on arrival and identical
records are the only ones whose order is free). Sorting at the end would mean re-reading and
re-encoding every row after the run drained: the serial write issue 16 measured at 26-28% of a
CPU run's wall time. Instead rows are encoded as they arrive:

- rows gather in a small buffer (`RUN_ROWS`), which is sorted and written as one *sorted run*:
  its records as the exact JSONL lines of the released file, and as an Arrow IPC file whose
  columns are typed on the run's own values (`services.sink.columns`);
- nothing per row stays in memory: each run's sort keys and line offsets go to a small index
  file beside it (16 bytes a row), read back by the merge;
- at release, `release_order` sorts the keys (in Arrow), which yields for each output row the
  run it comes from; every run is then read front to back exactly once: JSONL lines are copied
  as bytes, Arrow slices are cast to the column's merged type and put in order with `take`.

The merge copies bytes and Arrow buffers; nothing is decoded or re-encoded in Python except a
column whose values turned out mixed (stored as JSON text) and the keys of tied rows. Memory
is flat in the number of rows: one buffer while staging, one Arrow batch per run while merging.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from services.coordinator.manifest import json_default
from services.sink.columns import ColumnKind, canonical_json, convert, merged, schema

Record = dict[str, Any]
#: a buffered row: its sort key and its record
_Staged = tuple[int, Record]

#: Rows per sorted run: a buffer of Python rows stays a few MB, and a million rows make ~250
#: runs (each at most one open file and one Arrow batch while merging).
RUN_ROWS = 4096
#: Rows per record batch inside a run's Arrow file: what the merge holds of each run at once.
_IPC_BATCH = 256
#: A released JSONL line's encoder, built once (json.dumps builds one per call when given
#: options: 26 -> 14 µs a bench row).
_encode_line = json.JSONEncoder(ensure_ascii=False, default=json_default).encode
#: Bytes of JSONL handed on at once by `line_blocks`.
_BLOCK_BYTES = 1 << 20
#: Bytes read ahead per run while merging JSONL (at most one buffer per run in use).
_READ_AHEAD = 64 * 1024
#: The sort key of a row without a source index: after every real one.
_NO_INDEX = 2**63 - 1
#: Per-row type codes of a mixed column (see `_Run.codes`) and the kinds they stand for; any
#: type but these four makes a column JSON text, so one representative (object) stands for all.
_CODE_KINDS: dict[int, type] = {1: bool, 2: int, 3: int, 4: float, 5: str, 6: object}
_HUGE = 3


def sort_key(row: Record) -> int:
    index = row.get("source_index")
    return index if type(index) is int else _NO_INDEX


@dataclass
class _Run:
    """One sorted run on disk, and what the merge needs of it in memory."""

    lines: Path
    arrow: Path
    #: the rows' sort keys, then len + 1 byte offsets of their lines in `lines` (int64 each)
    index: Path
    count: int
    kinds: list[ColumnKind]
    #: per column, the first row holding a value (None: all null)
    first_value: list[int | None]
    #: per column of more than one kind (or with an int beyond int64), each row's type code,
    #: so the kinds of a prefix of the run are exact when a limit cuts it
    codes: dict[int, bytes]

    def keys(self) -> array[int]:
        return self._read_index(0, self.count)

    def offsets(self) -> array[int]:
        return self._read_index(self.count, self.count + 1)

    def _read_index(self, start: int, count: int) -> array[int]:
        values = array("q")
        with open(self.index, "rb") as fh:
            fh.seek(start * values.itemsize)
            values.fromfile(fh, count)
        return values

    def prefix_kinds(self, rows: int) -> list[ColumnKind]:
        """The kinds of the run's first `rows` rows."""
        if rows == self.count:
            return self.kinds
        out = []
        for c, kind in enumerate(self.kinds):
            codes = self.codes.get(c)
            if codes is not None:
                seen = set(codes[:rows]) - {0}
                out.append(ColumnKind({_CODE_KINDS[s] for s in seen}, _HUGE in seen))
            else:
                first = self.first_value[c]
                out.append(kind if first is not None and first < rows else ColumnKind())
        return out


def _code(value: Any) -> int:
    kind = type(value)
    if value is None:
        return 0
    if kind is bool:
        return 1
    if kind is int:
        return 2 if -(2**63) <= value < 2**63 else _HUGE
    if kind is float:
        return 4
    return 5 if kind is str else 6


@dataclass
class PartStager:
    """Rows of one part (a subset, or one split of it), staged as sorted runs under `folder`."""

    folder: Path
    columns: list[str]
    run_rows: int = RUN_ROWS
    _buffer: list[_Staged] = field(default_factory=list)
    _runs: list[_Run] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(r.count for r in self._runs) + len(self._buffer)

    def add(self, row: Record) -> None:
        # Missing keys become null so every file has one shape, whatever each row carried.
        record = {c: row.get(c) for c in self.columns}
        self._buffer.append((sort_key(record), record))
        if len(self._buffer) >= self.run_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one sorted run."""
        if not self._buffer:
            return
        staged = _sorted(self._buffer)
        self._buffer = []
        self.folder.mkdir(parents=True, exist_ok=True)
        number = len(self._runs)
        lines_path = self.folder / f"run-{number:05d}.jsonl"
        arrow_path = self.folder / f"run-{number:05d}.arrow"
        records = [record for _, record in staged]
        del staged
        offsets = array("q", [0])
        with open(lines_path, "wb") as fh:
            for record in records:
                line = (_encode_line(record) + "\n").encode("utf-8")
                fh.write(line)
                offsets.append(offsets[-1] + len(line))
        kinds, arrays, first_value, codes = [], [], [], {}
        for c, column in enumerate(self.columns):
            values = [r[column] for r in records]
            kind = ColumnKind()
            kind.see_all(values)
            kinds.append(kind)
            arrays.append(kind.array(values))
            first_value.append(next((i for i, v in enumerate(values) if v is not None), None))
            if len(kind.kinds) > 1 or kind.huge_int:
                codes[c] = bytes(map(_code, values))
        table = pa.Table.from_arrays(arrays, names=self.columns)
        with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=_IPC_BATCH)
        index_path = self.folder / f"run-{number:05d}.index"
        with open(index_path, "wb") as fh:
            array("q", map(sort_key, records)).tofile(fh)
            offsets.tofile(fh)
        self._runs.append(_Run(lines_path, arrow_path, index_path, len(records), kinds, first_value, codes))

    @property
    def runs(self) -> list[_Run]:
        self.flush()
        return self._runs

    def merge(self, limit: int | None = None) -> MergedPart:
        """The part in release order; `limit` keeps only its first rows."""
        return MergedPart(self.columns, self.runs, release_order(self.runs, limit))

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._runs = []
        self._buffer = []


def _sorted(staged: list[_Staged]) -> list[_Staged]:
    staged.sort(key=lambda item: item[0])
    out: list[_Staged] = []
    for _, group in itertools.groupby(staged, key=lambda item: item[0]):
        tied = list(group)
        if len(tied) > 1:
            tied.sort(key=lambda item: canonical_json(item[1]))
        out.extend(tied)
    return out


def release_order(runs: Sequence[_Run], limit: int | None = None) -> array[int]:
    """For each output row in release order, the number of the run it comes from.

    Each run is sorted by the same key, so its rows appear in the output in run order: the run
    number alone says which row comes next (the sort is stable, which keeps equal keys of one
    run in run order; equal keys of different runs are identical records)."""
    if not any(r.count for r in runs):
        return array("i")
    keys = pa.chunked_array([_int64(r.keys()) for r in runs], type=pa.int64())
    order = pc.sort_indices(keys)
    # Rows sharing a source index (several rows of one seed) are ordered by their canonical
    # JSON, read back for those rows alone; a hash of every key would cost more than the sort.
    ordered = pc.take(keys, order)
    tied = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    if pc.any(tied).as_py():
        values = {v for v in pc.unique(pc.filter(ordered.slice(1), tied)).to_pylist() if v is not None}
        table = pa.Table.from_arrays([keys, _ties(runs, values)], names=["key", "tie"])
        order = pc.sort_indices(table, sort_keys=[("key", "ascending"), ("tie", "ascending")])
    del ordered, tied
    if limit is not None:
        order = order[:limit]
    numbers = pa.chunked_array(
        [pa.repeat(pa.scalar(i, pa.int32()), r.count) for i, r in enumerate(runs)], type=pa.int32()
    )
    return _int32s(pc.take(numbers, order))


def shared_limit(parts: Sequence[PartStager], limit: int) -> list[int]:
    """How many rows of each part are among the `limit` first of all parts together (an early
    stop counts a stage's rows, which the sink splits into parts)."""
    runs = [run for part in parts for run in part.runs]
    owner = [p for p, part in enumerate(parts) for _ in part.runs]
    counts = [0] * len(parts)
    for run in release_order(runs, limit):
        counts[owner[run]] += 1
    return counts


def _int64(values: array[int]) -> pa.Array[Any]:
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _int32s(values: pa.ChunkedArray[Any] | pa.Array[Any]) -> array[int]:
    out = array("i")
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    for chunk in chunks:
        data = chunk.buffers()[1]
        assert data is not None  # an int32 array always has its values buffer
        start = chunk.offset * 4
        out.frombytes(memoryview(data)[start : start + len(chunk) * 4])
    return out


def _ties(runs: Sequence[_Run], wanted: set[int]) -> pa.Array[Any]:
    """The canonical JSON of the rows whose key is in `wanted`, null for every other row."""
    ties: list[str | None] = [None] * sum(r.count for r in runs)
    position = 0
    for run in runs:
        offsets = run.offsets()
        with open(run.lines, "rb") as fh:
            for i, key in enumerate(run.keys()):
                if key in wanted:
                    fh.seek(offsets[i])
                    ties[position + i] = canonical_json(json.loads(fh.readline()))
        position += run.count
    return pa.array(ties, type=pa.string())


class MergedPart:
    """A staged part in release order, read as JSONL lines, records or Arrow tables."""

    def __init__(self, columns: list[str], runs: Sequence[_Run], order: array[int]) -> None:
        self.columns = columns
        self._runs = runs
        self._order = order
        #: per run, how many of its rows the output takes: all of them, or a prefix under a limit
        taken = [0] * len(runs)
        for run in order:
            taken[run] += 1
        self._kinds = [r.prefix_kinds(n) for r, n in zip(runs, taken, strict=True)]
        self.kinds = [merged(k[c] for k in self._kinds) for c in range(len(columns))]

    def __len__(self) -> int:
        return len(self._order)

    @property
    def schema(self) -> pa.Schema:
        return schema(self.columns, self.kinds)

    def column_types(self) -> list[tuple[str, str]]:
        """(column, type) in column order; a type is bool, int64, float64, string or json (JSON
        text in Parquet)."""
        return [(c, k.type_name()) for c, k in zip(self.columns, self.kinds, strict=True)]

    def line_blocks(self) -> Iterator[bytes]:
        """The JSONL bytes in order, in blocks of about a megabyte."""
        readers: dict[int, _LineReader] = {}
        done = [0] * len(self._runs)
        pending: list[bytes] = []
        size = 0
        try:
            for run, stretch in itertools.groupby(self._order):
                reader = readers.get(run)
                if reader is None:
                    reader = readers[run] = _LineReader(self._runs[run])
                first = done[run]
                done[run] += sum(1 for _ in stretch)
                block = reader.read(first, done[run])
                pending.append(block)
                size += len(block)
                if size >= _BLOCK_BYTES:
                    yield b"".join(pending)
                    pending, size = [], 0
                if done[run] == self._runs[run].count:
                    reader.close()
            if pending:
                yield b"".join(pending)
        finally:
            for reader in readers.values():
                reader.close()

    def records(self) -> Iterator[Record]:
        """The released records as JSON reads them back (bytes are base64 text)."""
        for block in self.line_blocks():
            for line in block.split(b"\n")[:-1]:
                yield json.loads(line)

    def tables(self, rows: int) -> Iterator[pa.Table]:
        """Tables of `rows` rows (the last one shorter) with the merged schema; one empty table
        for an empty part."""
        if not self._order:
            yield self.schema.empty_table()
            return
        readers = [_RunReader(run, self.schema, self.kinds) for run in self._runs]
        try:
            for start in range(0, len(self._order), rows):
                group = pa.array(self._order[start : start + rows], type=pa.int32())
                counts = pc.value_counts(group)
                slices = [
                    readers[cast(int, run)].take(cast(int, count))
                    for run, count in sorted(
                        zip(
                            counts.field("values").to_pylist(),
                            counts.field("counts").to_pylist(),
                            strict=True,
                        )
                    )
                ]
                # The slices are the group's rows sorted (stably) by run; the inverse of that
                # permutation puts each row back where the release order wants it.
                table = pa.concat_tables(slices)
                if len(slices) > 1:
                    table = table.take(pc.sort_indices(pc.sort_indices(group)))
                yield table.combine_chunks()
        finally:
            for reader in readers:
                reader.close()


class _LineReader:
    """A run's lines read front to back through a small read-ahead buffer: the merge takes a
    few lines of a run at a time, which would be a system call each."""

    def __init__(self, run: _Run) -> None:
        self.offsets = run.offsets()
        self.fd: int | None = os.open(run.lines, os.O_RDONLY)
        self.buffer = b""
        self.at = 0  # the file offset of buffer[0]

    def read(self, first: int, end: int) -> bytes:
        """Lines first..end-1, read in order (first is where the last read ended)."""
        start, stop = self.offsets[first], self.offsets[end]
        if stop > self.at + len(self.buffer):
            assert self.fd is not None
            self.buffer = os.pread(self.fd, max(stop - start, _READ_AHEAD), start)
            self.at = start
        return self.buffer[start - self.at : stop - self.at]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.buffer = b""


class _RunReader:
    """A run's Arrow file read front to back, its columns converted to the merged types."""

    def __init__(self, run: _Run, schema: pa.Schema, final: list[ColumnKind]) -> None:
        self.run = run
        self.schema = schema
        self.final = final
        self._file: pa.NativeFile | None = None
        self._reader: pa.ipc.RecordBatchFileReader | None = None
        self._next = 0
        self._pending: pa.RecordBatch | None = None

    def take(self, count: int) -> pa.Table:
        batches = []
        while count:
            if self._pending is None:
                if self._reader is None:
                    self._file = pa.OSFile(str(self.run.arrow), "rb")
                    self._reader = pa.ipc.open_file(self._file)
                self._pending = self._reader.get_batch(self._next)
                self._next += 1
            piece = self._pending.slice(0, count)
            # A slice keeps its whole batch alive: an exhausted batch is let go at once, and a
            # run read to its end is closed, so the merge holds at most one batch per open run.
            self._pending = (
                self._pending.slice(piece.num_rows) if piece.num_rows < self._pending.num_rows else None
            )
            if (
                self._pending is None
                and self._reader is not None
                and self._next == self._reader.num_record_batches
            ):
                self.close()
            arrays = [
                # A column typed on the run's own values is converted with the kinds of the
                # whole run (what its Arrow file was written with).
                convert(piece.column(i), self.run.kinds[i], self.final[i])
                for i in range(piece.num_columns)
            ]
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
            count -= piece.num_rows
        return pa.Table.from_batches(batches, schema=self.schema)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._reader = None
