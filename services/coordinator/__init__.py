"""The coordinator's pure aggregates: manifest, quality, timing, gates and the per-run state.

Everything here is incremental (rows and progress records are folded in one at a time),
mergeable and JSON-serialisable, so the coordinator service can snapshot a run into a
compacted topic after every transaction and resume it after a crash with identical results.
Reports are `TypedDict`s: they are typed for the code that builds them and are already the
JSON written to report files and topics, so readers on the far side need no model to decode them.
"""

from __future__ import annotations

from typing import TypeVar

_T = TypeVar("_T", int, float, str)


def least(current: _T | None, other: _T | None) -> _T | None:
    """min() where None means "nothing seen yet", so merging an empty aggregate changes nothing."""
    if current is None:
        return other
    return current if other is None else min(current, other)


def greatest(current: _T | None, other: _T | None) -> _T | None:
    """max() where None means "nothing seen yet"."""
    if current is None:
        return other
    return current if other is None else max(current, other)
