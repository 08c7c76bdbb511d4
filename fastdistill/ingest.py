"""Reading seed files (JSONL or CSV) into validated rows and dead letters with readable reasons."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.runtime.dead_letter import dead_letter
from shared.step import Row


@dataclass
class SeedBatch:
    rows: list[Row] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


def read_seeds(path: Path, model: type[BaseModel], run_id: str, limit: int | None = None) -> SeedBatch:
    """Validate every record; `source_index` is the record's position in the file (0-based)."""
    out = SeedBatch()
    for index, raw in _records(path):
        if limit is not None and index >= limit:
            break
        try:
            if isinstance(raw, Exception):
                raise raw
            seed = model.model_validate(raw)
        except (ValidationError, ValueError) as exc:
            out.dead_letters.append(
                dead_letter(
                    step="produce",
                    error_type=type(exc).__name__,
                    error_message=f"{path.name} record {index}: {_reason(exc)}",
                    run_id=run_id,
                    row={"source_index": index, "record": raw if isinstance(raw, dict) else repr(raw)},
                )
            )
            continue
        out.rows.append({"source_index": index, **seed.model_dump()})
    return out


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}" for err in exc.errors()
        )
    return str(exc)


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    if path.suffix.lower() == ".csv":
        yield from _csv_records(path)
    else:
        yield from _jsonl_records(path)


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        index = 0
        for line in fh:
            if not line.strip():
                continue
            try:
                yield index, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield index, ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})")
            except json.JSONDecodeError as exc:
                yield index, ValueError(f"not JSON: {exc}")
            except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, [[[[... nesting
                yield index, ValueError(f"not JSON: {type(exc).__name__}: {str(exc)[:200]}")
            index += 1


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    # Invalid bytes become lone surrogates, which pydantic rejects: only the records holding them fail.
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text))
    index = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a cell over csv.field_size_limit(); the reader goes on after it
            yield index, ValueError(f"not CSV: {exc} (line {reader.line_num})")
            index += 1
            continue
        yield index, _csv_record(record)
        index += 1


def _csv_record(record: dict[str | None, Any]) -> dict[str, Any] | ValueError:
    if None in record:  # DictReader's key for cells beyond the header
        return ValueError(f"{len(record[None])} cells more than the header's {len(record) - 1} columns")
    # CSV has no nesting: a cell holding a JSON object (decode_profile) is parsed; empty = absent.
    parsed: dict[str, Any] = {}
    for key, value in record.items():
        if value is None or value == "":
            continue
        if value.startswith("{"):
            try:
                parsed[key] = json.loads(value)
                continue
            except (ValueError, RecursionError):
                pass  # kept as text: the model says why that is wrong
        parsed[key] = value
    return parsed
