"""A deterministic train/valid/test split: each row's split is a function of one field alone.

The field's value (a string as it is, anything else as its canonical JSON) is hashed with
SHA-256; the first 8 bytes, read as a fraction of 2**64, fall into one of the ratios' intervals,
laid out in the order of the split names (so writing the splits in another order in the YAML,
or a tool re-sorting its keys, changes nothing). The same row lands in the same split in every
run, whatever else the run holds, and a row re-released later keeps its split: a test row never
leaks into training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from services.coordinator.manifest import canonical_json


def split_point(value: Any) -> float:
    """Where `value` falls in [0, 1)."""
    text = value if isinstance(value, str) else canonical_json(value)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(value: Any, ratios: Sequence[tuple[str, float]]) -> str:
    point = split_point(value)
    upper = 0.0
    ordered = sorted(ratios)
    for name, ratio in ordered:
        upper += ratio
        if point < upper:
            return name
    return ordered[-1][0]  # ratios summing to 1 - epsilon by rounding
