"""A format option naming what a value is made of: a field, or a template over fields.

`instruction` is the row's field; `Schema: {schema}\nQuestion: {instruction}` is a template
(str.format over the row). A template with any of its fields missing or null gives None, as a
missing field does, so a format can tell an absent value from an empty one.
"""

from __future__ import annotations

import string
from typing import Any

from services.coordinator.manifest import canonical_json


def fields_of(spec: str) -> set[str]:
    if "{" not in spec:
        return {spec}
    return {name for _, name, _, _ in string.Formatter().parse(spec) if name}


def text_of(spec: str, row: dict[str, Any]) -> str | None:
    """The text `spec` makes of `row`: a string as it is, another value as its canonical JSON."""
    if "{" not in spec:
        return _text(row.get(spec))
    values = {name: row.get(name) for name in fields_of(spec)}
    if any(v is None for v in values.values()):
        return None
    return spec.format_map({k: _text(v) for k, v in values.items()})


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return canonical_json(value)
