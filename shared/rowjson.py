"""Rows as JSON that reads back as the same row: bytes (Avro `bytes`) survive as tagged base64.

What steps keep of a row in a state store (a join's waiting side, a group's children) must
come back exactly, or a merged row would differ from one made without the restart.
"""

from __future__ import annotations

import base64
import json
from typing import Any

_BYTES = "$bytes"


def _encode(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and _BYTES in obj:
        return base64.b64decode(obj[_BYTES])
    return obj


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_encode, separators=(",", ":"), sort_keys=True).encode()


def loads(blob: bytes) -> Any:
    return json.loads(blob, object_hook=_decode)


def row_key(value: Any) -> str:
    """A key's text form in a store (keys are strings; a non-string key is its JSON)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
