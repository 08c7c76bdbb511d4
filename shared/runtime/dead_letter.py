"""Building dead-letter records (schema `schemas/envelope/dead_letter.avsc`)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

DEAD_LETTER_SCHEMA = "dead_letter"
MAX_PAYLOAD_CHARS = 100_000


def dead_letter(
    *,
    step: str,
    error_type: str,
    error_message: str,
    run_id: str | None = None,
    row: dict[str, Any] | None = None,
    raw: bytes | None = None,
    source: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    """A DLQ record; `row` is kept as JSON, `raw` (undecodable bytes) as base64, both truncated."""
    if row is not None:
        payload, encoding = (
            _utf8(json.dumps(row, default=repr, ensure_ascii=False)[:MAX_PAYLOAD_CHARS]),
            "JSON",
        )
    elif raw is not None:
        payload, encoding = base64.b64encode(raw).decode()[:MAX_PAYLOAD_CHARS], "BASE64"
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
    }


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return _utf8(value) if isinstance(value, str) else None


def _utf8(text: str) -> str:
    """Avro strings must encode as UTF-8; hostile input (lone surrogates) is escaped, not a crash."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
