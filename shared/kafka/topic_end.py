"""Reading a whole topic, from its start to its end as of the call, committed messages only."""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.kafka.state import watermarks


class TopicEndNotReached(TimeoutError):
    """The topic could not be read to its end in time."""


def read_to_end(
    kafka: KafkaSettings, topic: str, *, timeout_s: float = 60.0, past_open_transactions: bool = False
) -> Generator[Message, None, None]:
    """Every committed message of `topic`, partition by partition in offset order, up to the end
    each partition had when the call began.

    That end is the last stable offset, where a read_committed reader stops: messages of
    transactions still open are not part of the topic yet. With `past_open_transactions` it is
    the high watermark instead, so the read also covers what was committed *after* a
    transaction that is still open, and waits for every transaction open now to end (needed
    where "not found" must mean "not there", e.g. a registry).
    """
    probe = clients.consumer(
        kafka,
        f"fd-end-{uuid.uuid4().hex}",
        # librdkafka answers watermark queries for the reader's isolation level: the LSO for
        # read_committed, the high watermark for read_uncommitted.
        **{"isolation.level": "read_uncommitted" if past_open_transactions else "read_committed"},
    )
    try:
        n = clients.partition_count(probe, topic)
        ends = {p: watermarks(probe, TopicPartition(topic, p)) for p in range(n)}
    finally:
        probe.close()
    todo = {p for p, (low, high) in ends.items() if high > low}
    if not todo:
        return
    reader = clients.consumer(kafka, f"fd-end-{uuid.uuid4().hex}", **{"enable.partition.eof": True})
    try:
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                state = "a transaction is still open on it" if past_open_transactions else "too slow"
                raise TopicEndNotReached(f"{topic} not read to its end within {timeout_s:.0f} s ({state})")
            for msg in reader.consume(num_messages=1000, timeout=0.5):
                partition, offset = msg.partition() or 0, msg.offset() or 0
                err = msg.error()
                if err is None:
                    if partition in todo:
                        yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    if offset >= ends[partition][1]:
                        todo.discard(partition)
                else:
                    raise RuntimeError(f"reading {topic}: {err}")
    finally:
        reader.close()
