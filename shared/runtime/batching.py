"""Cutting a batch of rows into messages the broker accepts.

Kafka refuses a message over `message.max.bytes` (1 MB by default), and a transaction holding
one can only be aborted: retried from the same input (and the teacher's cached answer), the batch
would stall its partition for good. So a batch whose encoding is too large is halved until every
part fits; a row too large on its own is handed back for the caller to dead-letter.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.step import Row

#: Room left in a message for its key and record overhead (librdkafka counts key + value).
MESSAGE_OVERHEAD = 4096


def fit(
    rows: list[Row], encode: Callable[[list[Row]], bytes], max_bytes: int
) -> tuple[list[bytes], list[tuple[Row, int]]]:
    """(encoded messages in row order, [(row, its encoded size)] of rows that fit in no message).

    The common case costs one encoding; only a batch over the limit is encoded again in parts.
    """
    value = encode(rows)
    if len(value) <= max_bytes or not rows:
        return [value], []
    if len(rows) == 1:
        return [], [(rows[0], len(value))]
    half = len(rows) // 2
    left, left_too_large = fit(rows[:half], encode, max_bytes)
    right, right_too_large = fit(rows[half:], encode, max_bytes)
    return left + right, left_too_large + right_too_large


def too_large_message(size: int, max_bytes: int) -> str:
    return (
        f"row encodes to {size} bytes, more than a message may hold ({max_bytes} bytes; "
        "KAFKA_MAX_MESSAGE_BYTES, and the topic's max.message.bytes)"
    )
