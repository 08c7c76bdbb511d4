"""Building dead-letter records (schema `schemas/envelope/dead_letter.avsc`)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

DEAD_LETTER_SCHEMA = "dead_letter"
MAX_PAYLOAD_CHARS = 100_000
#: Cap of the `raw` field: a rejected record is kept byte-exact up to this size (seed records
#: are ~0.5 KB; the cap only cuts hostile or broken input), and `raw_truncated` says it was cut.
#: With the 100,000-character payload and the message cap it keeps a dead letter far under
#: the broker's 1 MB message limit.
MAX_RAW_BYTES = 64 * 1024
#: With the bytes in `raw`, the payload (the row as JSON, or the bytes as base64 for readers of
#: the older schema) is a convenience copy, capped lower: a dead letter of a record too large
#: for a message (MessageTooLarge) must itself fit one, down to the smallest message cap
#: (`KafkaSettings.max_message_bytes` >= 100,000): 64 KiB + 16 KiB + the reason.
MAX_PAYLOAD_CHARS_BESIDE_RAW = 16 * 1024


@dataclass(frozen=True)
class RecordOrigin:
    """Where a record of an input file came from: the file's name, the 1-based physical line it
    starts on and its exact bytes (what a dead letter of it carries)."""

    file: str
    line: int
    raw: bytes


def dead_letter(
    *,
    step: str,
    error_type: str,
    error_message: str,
    run_id: str | None = None,
    row: dict[str, Any] | None = None,
    raw: bytes | None = None,
    source: tuple[str, int, int] | None = None,
    origin: RecordOrigin | None = None,
) -> dict[str, Any]:
    """A DLQ record. `row` is kept as JSON (truncated); `raw`, the rejected bytes (an undecodable
    message, a seed file's record), byte-exact in the `raw` field up to MAX_RAW_BYTES. Without a
    row, the start of `raw` also fills the base64 `payload` as before, for readers of the older
    schema. `source` is the Kafka message, `origin` the file record (its bytes unless `raw` is
    given)."""
    if origin is not None and raw is None:
        raw = origin.raw
    cap = MAX_PAYLOAD_CHARS if raw is None else MAX_PAYLOAD_CHARS_BESIDE_RAW
    if row is not None:
        payload, encoding = _utf8(json.dumps(row, default=repr, ensure_ascii=False)[:cap]), "JSON"
    elif raw is not None:
        payload, encoding = base64.b64encode(raw[: cap // 4 * 3]).decode(), "BASE64"
    else:
        payload, encoding = None, "NONE"
    return {
        "run_id": run_id,
        "step": step,
        "source_topic": source[0] if source else None,
        "source_partition": source[1] if source else None,
        "source_offset": source[2] if source else None,
        "row_index": _int_or_none(row.get("source_index")) if row else None,
        "sample_id": _str_or_none(row.get("sample_id")) if row else None,
        "error_type": error_type,
        "error_message": _utf8(error_message[:10_000]),
        "payload": payload,
        "payload_encoding": encoding,
        "created_at_ms": int(time.time() * 1000),
        "raw": None if raw is None else bytes(raw[:MAX_RAW_BYTES]),
        "raw_truncated": raw is not None and len(raw) > MAX_RAW_BYTES,
        "source_file": _utf8(origin.file) if origin else None,
        "source_line": origin.line if origin else None,
    }


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return _utf8(value) if isinstance(value, str) else None


def _utf8(text: str) -> str:
    """Avro strings must encode as UTF-8; hostile input (lone surrogates) is escaped, not a crash."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
