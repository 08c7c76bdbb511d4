"""Reading seed files (JSONL or CSV) into validated rows and dead letters with readable reasons.

Every record is read with its origin (`RecordOrigin`): the 1-based physical line it starts on
and its exact bytes, so a rejected record's dead letter says `<file>:<line>` and carries what
was in the file, whatever made it unreadable. Lines end at `\\n` (a `\\r` before it is part of
the terminator, CRLF files read as LF ones); a UTF-8 BOM at the start of the file is dropped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.runtime.dead_letter import RecordOrigin, dead_letter
from shared.step import Row

BOM = b"\xef\xbb\xbf"


class SeedFileError(ValueError):
    """The file as a whole cannot be read (e.g. a CSV header that does not parse)."""


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


@dataclass(frozen=True)
class SourceRecord:
    """One record of a seed file: its position among the records, its origin, and its value
    (a dict, any other JSON value, or the ValueError saying why it could not be read)."""

    index: int
    origin: RecordOrigin
    value: Any


@dataclass
class SeedBatch:
    rows: list[Row] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    #: source_index -> origin of every valid row (a row the producer cannot send is dead-lettered
    #: with its file bytes too)
    origins: dict[int, RecordOrigin] = field(default_factory=dict)


def read_seeds(path: Path, model: type[BaseModel], run_id: str, limit: int | None = None) -> SeedBatch:
    """Validate every record; `source_index` is the record's position in the file (0-based,
    blank lines and a CSV header are not records)."""
    out = SeedBatch()
    for record in read_records(path):
        index, origin = record.index, record.origin
        if limit is not None and index >= limit:
            break
        try:
            if isinstance(record.value, Exception):
                raise record.value
            seed = model.model_validate(record.value)
        except (ValidationError, ValueError) as exc:
            row: dict[str, Any] = {"source_index": index}
            if isinstance(record.value, dict):
                row["record"] = record.value
            out.dead_letters.append(
                dead_letter(
                    step="produce",
                    error_type=type(exc).__name__,
                    error_message=f"{origin.file}:{origin.line}: {_reason(exc)}",
                    run_id=run_id,
                    row=row,
                    origin=origin,
                )
            )
            continue
        out.rows.append({"source_index": index, **seed.model_dump()})
        out.origins[index] = origin
    return out


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}" for err in exc.errors()
        )
    return str(exc)


def read_records(path: Path) -> Iterator[SourceRecord]:
    """The records of a seed file (CSV by its `.csv` suffix, else JSON lines), never raising for
    a bad record; a file that cannot be read at all raises SeedFileError."""
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    lines = data.split(b"\n")
    if path.suffix.lower() == ".csv":
        return _csv_records(path.name, lines)
    return _jsonl_records(path.name, lines)


def _content(line: bytes) -> bytes:
    """A physical line without the `\\r` of a CRLF terminator (`line` has no `\\n`)."""
    return line[:-1] if line.endswith(b"\r") else line


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: an object naming a key twice is ambiguous (JSON parsers differ
    on which value wins), so it is an error instead of last-wins."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def parse_json(text: str) -> Any:
    """JSON with duplicate keys rejected; every failure is a ValueError with a readable reason."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey:
        raise
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, [[[[... nesting
        raise ValueError(f"not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


def _jsonl_records(name: str, lines: list[bytes]) -> Iterator[SourceRecord]:
    index = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        raw = _content(line) if number < len(lines) else line  # the last line has no terminator
        value: Any
        try:
            value = parse_json(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            value = ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})")
        except ValueError as exc:
            value = exc
        yield SourceRecord(index, RecordOrigin(name, number, raw), value)
        index += 1


class _LineFeed:
    """Physical lines for csv.reader, noting which ones each record consumed (a quoted cell can
    span lines, and the reader skips blank ones)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.taken: list[int] = []  # 0-based line numbers consumed since the last `take`

    def __iter__(self) -> Iterator[str]:
        last = len(self.lines) - 1
        for number, line in enumerate(self.lines):
            if number == last and not line:
                return  # after the final terminator
            self.taken.append(number)
            # Invalid bytes become lone surrogates, which pydantic rejects: only their record fails.
            yield (line if number == last else line + b"\n").decode("utf-8", errors="surrogateescape")

    def take(self, name: str) -> RecordOrigin:
        """The origin of the record just read: its lines from the first non-blank one."""
        taken, self.taken = self.taken, []
        if not taken:
            return RecordOrigin(name, len(self.lines), b"")
        # Every line after the first non-blank one is the record's: the reader stops at its end.
        first = next((n for n in taken if _content(self.lines[n])), taken[0])
        last = taken[-1]
        raw = b"\n".join(self.lines[first : last + 1])
        if last < len(self.lines) - 1:
            raw = _content(raw)
        return RecordOrigin(name, first + 1, raw)


def _csv_records(name: str, lines: list[bytes]) -> Iterator[SourceRecord]:
    feed = _LineFeed(lines)
    reader = csv.DictReader(feed)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise SeedFileError(f"{name}:{feed.take(name).line}: CSV header: {exc}") from None
    if header is None:
        return  # an empty file
    header_origin = feed.take(name)
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise SeedFileError(f"{name}:{header_origin.line}: duplicate column(s) in the header: {duplicates}")
    index = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a cell over csv.field_size_limit(); the reader goes on after it
            yield SourceRecord(index, feed.take(name), ValueError(f"not CSV: {exc}"))
            index += 1
            continue
        yield SourceRecord(index, feed.take(name), _csv_record(record))
        index += 1


def _csv_record(record: dict[str | None, Any]) -> dict[str, Any] | ValueError:
    if None in record:  # DictReader's key for cells beyond the header
        return ValueError(f"{len(record[None])} cells more than the header's {len(record) - 1} columns")
    # CSV has no nesting: a cell holding a JSON object (decode_profile) is parsed; empty = absent.
    parsed: dict[str, Any] = {}
    for key, value in record.items():
        if key is None or value is None or value == "":
            continue
        if value.startswith("{"):
            try:
                parsed[key] = json.loads(value, object_pairs_hook=_unique_keys)
                continue
            except DuplicateKey as exc:
                return ValueError(f"{key}: {exc}")
            except (ValueError, RecursionError):
                pass  # kept as text: the model says why that is wrong
        parsed[key] = value
    return parsed
