"""How a dataset column is typed in Parquet and Arrow, from the Python values it holds.

- bool, int (int64), float (float64, also for columns mixing ints and floats) and str columns
  keep their type, as long as every int fits in int64;
- any other column (nested records, maps, arrays, bytes, mixed types, huge ints) is stored as
  a string of its canonical JSON (sorted keys) — struct inference would make the schema depend
  on which keys happen to occur, and JSON strings read back the same everywhere;
- columns whose values are all null are strings; every column is nullable.

Kinds are seen a chunk of rows at a time and merged, so a column's type is a function of the
set of values alone; a chunk typed on its own values converts losslessly to the merged type.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from services.coordinator.manifest import json_default

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NONE = type(None)

#: `services.coordinator.manifest.canonical_json`, built once: json.dumps builds an encoder per
#: call when given options, which cost as much as the encoding of a small value (measured:
#: 5.8 -> 3.6 µs a decode profile).
canonical_json = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default
).encode

#: The names RELEASED.json gives column types (so an export can read Parquet back exactly).
TYPE_NAMES = {pa.bool_(): "bool", pa.int64(): "int64", pa.float64(): "float64"}


@dataclass
class ColumnKind:
    """The Python types seen in a column, and whether an int outside int64 was among them."""

    kinds: set[type] = field(default_factory=set)
    huge_int: bool = False

    def see_all(self, values: Sequence[Any]) -> None:
        kinds = set(map(type, values))
        kinds.discard(_NONE)
        if int in kinds and not self.huge_int:
            self.huge_int = any(type(v) is int and not _INT64_MIN <= v <= _INT64_MAX for v in values)
        self.kinds |= kinds

    def merge(self, other: ColumnKind) -> None:
        self.kinds |= other.kinds
        self.huge_int = self.huge_int or other.huge_int

    @property
    def as_json(self) -> bool:
        """Whether the values are stored as canonical JSON text."""
        return self.arrow_type() == pa.string() and not self.kinds <= {str}

    def arrow_type(self) -> pa.DataType:
        kinds = self.kinds
        if kinds == {bool}:
            return pa.bool_()
        if kinds and kinds <= {int, float} and not self.huge_int:
            return pa.int64() if kinds == {int} else pa.float64()
        return pa.string()

    @property
    def stored_as_json(self) -> bool:
        """Whether a chunk of rows typed on its own values stores this column as JSON text: any
        mix of kinds does, so a value keeps its exact kind until the whole column's type is
        known (an int stays an int next to floats; a float64 column could not say which were
        ints, should the column turn out JSON text)."""
        return self.as_json or len(self.kinds) > 1

    def type_name(self) -> str:
        return "json" if self.as_json else TYPE_NAMES.get(self.arrow_type(), "string")

    def array(self, values: Sequence[Any]) -> pa.Array[Any]:
        """A chunk's values as Arrow, typed on their own kinds (null-typed when all are null)."""
        if not self.kinds:
            return pa.nulls(len(values))
        if self.stored_as_json:
            return pa.array([None if v is None else canonical_json(v) for v in values], type=pa.string())
        return self.array_of(values)

    def array_of(self, values: Sequence[Any]) -> pa.Array[Any]:
        """Values of a column of these (final, unmixed) kinds as Arrow of its type."""
        arrow_type = self.arrow_type()
        if arrow_type == pa.float64():
            values = [None if v is None else float(v) for v in values]
        return pa.array(values, type=arrow_type)


def merged(kinds: Iterable[ColumnKind]) -> ColumnKind:
    out = ColumnKind()
    for kind in kinds:
        out.merge(kind)
    return out


def schema(columns: Sequence[str], kinds: Sequence[ColumnKind]) -> pa.Schema:
    return pa.schema(
        [pa.field(c, k.arrow_type(), nullable=True) for c, k in zip(columns, kinds, strict=True)]
    )


def convert(array: pa.Array[Any], local: ColumnKind, final: ColumnKind) -> pa.Array[Any]:
    """A chunk's array (as `local`, its own kinds, stored it) as `final` (the whole column's
    kinds, or those of the rows a limit keeps) types it."""
    target = final.arrow_type()
    if array.type == pa.null():
        return pa.nulls(len(array), type=target)  # type: ignore[call-overload,no-any-return]
    if local.stored_as_json:
        if final.as_json:
            return array  # canonical JSON either way
        # Mixed in the chunk, not in the column (or not in the rows a limit keeps): rare, so
        # through Python.
        return final.array_of([None if v is None else json.loads(v) for v in array.to_pylist()])
    if final.as_json:  # a column mixed elsewhere: rare, so through Python
        return pa.array([None if v is None else canonical_json(v) for v in array.to_pylist()], type=target)
    if array.type == target:
        return array
    # int64 -> float64, an int column that met floats elsewhere: the cast rounds as Python's
    # float(int) does.
    return pc.cast(array, target, safe=False)
