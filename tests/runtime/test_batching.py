"""Batches cut to fit a message: nothing lost, order kept, every message under the limit."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.runtime.batching import fit
from shared.step import Row


def _encode(rows: list[Row]) -> bytes:
    return json.dumps(rows).encode()


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3_000), max_size=60),
    max_bytes=st.integers(50, 20_000),
)
def test_every_row_is_in_exactly_one_message_or_too_large(sizes: list[int], max_bytes: int) -> None:
    rows: list[Row] = [{"i": i, "text": "x" * size} for i, size in enumerate(sizes)]
    messages, too_large = fit(rows, _encode, max_bytes)

    assert all(len(m) <= max_bytes for m in messages if json.loads(m))
    placed = [row for m in messages for row in json.loads(m)]
    assert sorted([r["i"] for r in placed] + [r["i"] for r, _ in too_large]) == list(range(len(rows)))
    assert [r["i"] for r in placed] == sorted(r["i"] for r in placed)  # row order kept
    for row, size in too_large:
        assert size == len(_encode([row])) > max_bytes


def test_a_batch_that_fits_is_encoded_once() -> None:
    calls = []

    def encode(rows: list[Row]) -> bytes:
        calls.append(len(rows))
        return _encode(rows)

    messages, too_large = fit([{"i": i} for i in range(50)], encode, 10_000)
    assert calls == [50] and len(messages) == 1 and too_large == []


def test_an_empty_batch_is_one_message() -> None:
    """End-of-run markers carry no rows and must still go out."""
    assert fit([], _encode, 1) == ([b"[]"], [])
