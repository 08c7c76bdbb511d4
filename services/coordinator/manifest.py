"""The manifest of a stage: what rows it produced, identified independently of their order.

Rows are taken as released: only the stage's dataset columns (every field but the volatile
ones, `shared.topic_schema.dataset_columns`: how a row was fetched, e.g. the teacher's latency
and cache flag), a missing one as null — exactly the objects of the stage's `data.jsonl` lines.

- `columns`: those columns; `field_hash`: SHA-256 hex of them sorted, joined with ",".
- `content_hash`: the sum mod 2**256 of the SHA-256 (as a big-endian integer) of each row's
  canonical JSON (sorted keys, separators "," and ":", non-ASCII as is, UTF-8, bytes as base64),
  as 64 hex digits. Rows of a stage arrive from several partitions in an order that differs
  between runs and restarts; addition commutes, so any order and any split of the rows give the
  same hash. Unlike XOR, a sum does not cancel a row that occurs twice, so duplicates still show.
  To check a released file: `content_hash(json.loads(line) for line in open("data.jsonl"))`.

Everything but `created_at` is a function of the multiset of released rows alone, so two runs
whose data.jsonl files are byte-identical have equal hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from services.coordinator import greatest, least

_MOD = 2**256


class ManifestReport(TypedDict):
    run_id: str
    stage: str
    count: int
    columns: list[str]
    field_hash: str
    content_hash: str
    min_sample_id: str | None
    max_sample_id: str | None
    created_at: str | None  # ISO 8601 UTC with milliseconds; None until the run has finished


def json_default(value: object) -> object:
    # Avro `bytes` fields decode to bytes, which JSON has no type for.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default)


def row_hash(row: dict[str, Any]) -> int:
    return int.from_bytes(hashlib.sha256(canonical_json(row).encode("utf-8")).digest(), "big")


def released_row(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """The row as a dataset file holds it: `columns` only, a missing one as null."""
    return {c: row.get(c) for c in columns}


def content_hash(rows: Iterable[dict[str, Any]]) -> str:
    """The manifest's `content_hash` of rows already as released (e.g. parsed data.jsonl lines)."""
    total = 0
    for row in rows:
        total = (total + row_hash(row)) % _MOD
    return f"{total:064x}"


def field_hash(columns: list[str] | set[str]) -> str:
    return hashlib.sha256(",".join(sorted(columns)).encode("utf-8")).hexdigest()


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class ManifestAgg:
    count: int = 0
    columns: set[str] = field(default_factory=set)
    content: int = 0
    min_sample_id: str | None = None
    max_sample_id: str | None = None

    def add_rows(self, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        """`columns`: the stage's dataset columns, which the rows are cut to (None: as they are)."""
        for row in rows:
            if columns is not None:
                row = released_row(row, columns)
            self.count += 1
            self.columns.update(row)
            self.content = (self.content + row_hash(row)) % _MOD
            if row.get("sample_id") is not None:
                sample_id = str(row["sample_id"])
                self._widen(sample_id, sample_id)

    def _widen(self, low: str | None, high: str | None) -> None:
        self.min_sample_id = least(self.min_sample_id, low)
        self.max_sample_id = greatest(self.max_sample_id, high)

    def merge(self, other: ManifestAgg) -> None:
        self.count += other.count
        self.columns |= other.columns
        self.content = (self.content + other.content) % _MOD
        self._widen(other.min_sample_id, other.max_sample_id)

    def report(self, run_id: str, stage: str, created_ms: int | None) -> ManifestReport:
        columns = sorted(self.columns)
        return ManifestReport(
            run_id=run_id,
            stage=stage,
            count=self.count,
            columns=columns,
            field_hash=field_hash(columns),
            content_hash=f"{self.content:064x}",
            min_sample_id=self.min_sample_id,
            max_sample_id=self.max_sample_id,
            created_at=iso_ms(created_ms),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "columns": sorted(self.columns),
            "content": f"{self.content:064x}",
            "min_sample_id": self.min_sample_id,
            "max_sample_id": self.max_sample_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManifestAgg:
        return cls(
            data["count"],
            set(data["columns"]),
            int(data["content"], 16),
            data["min_sample_id"],
            data["max_sample_id"],
        )
