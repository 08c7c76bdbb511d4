"""Configured confluent-kafka clients and topic creation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypedDict

from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from shared.config import KafkaSettings


def consumer(kafka: KafkaSettings, group_id: str, **overrides: object) -> Consumer:
    conf = kafka.client_conf() | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # Aborted writes of a killed instance must never reach the next step.
        "isolation.level": "read_committed",
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(300, kafka.session_timeout_ms // 5),
        # Bounds what librdkafka prefetches, so backpressure pauses act on little buffered data.
        "queued.max.messages.kbytes": 8192,
    }
    return Consumer(conf | overrides)


def transactional_producer(kafka: KafkaSettings, transactional_id: str, **overrides: object) -> Producer:
    conf = kafka.client_conf() | {
        # A stable id per instance fences a restarted instance's zombie and aborts its open
        # transaction at once, instead of stalling read_committed readers until it times out.
        "transactional.id": transactional_id,
        "transaction.timeout.ms": kafka.transaction_timeout_ms,
        "message.max.bytes": kafka.max_message_bytes,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    return Producer(conf | overrides)


def producer(kafka: KafkaSettings, **overrides: object) -> Producer:
    conf = kafka.client_conf() | {
        "enable.idempotence": True,
        "message.max.bytes": kafka.max_message_bytes,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    return Producer(conf | overrides)


def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_conf())


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def compacted(cls, name: str, partitions: int, replication_factor: int = 1) -> TopicSpec:
        return cls(name, partitions, replication_factor, {"cleanup.policy": "compact"})


def ensure_topics(client: AdminClient, topics: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left as they are."""
    existing = set(client.list_topics(timeout=timeout_s).topics)
    wanted = [t for t in topics if t.name not in existing]
    if not wanted:
        return []
    futures = client.create_topics(
        [NewTopic(t.name, t.partitions, t.replication_factor, config=t.config) for t in wanted],
        operation_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    _wait_for_metadata(client, [t.name for t in wanted], timeout_s)
    return created


def _wait_for_metadata(client: AdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topics = client.list_topics(timeout=timeout_s).topics
        # A partition without a leader yet answers NOT_LEADER to the first clients that use it.
        if all(
            n in topics
            and not topics[n].error
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics not visible after {timeout_s}s: {names}")


def partition_count(client: AdminClient | Consumer | Producer, topic: str, timeout_s: float = 10.0) -> int:
    meta = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None or meta.error or not meta.partitions:
        raise KafkaException(f"topic {topic!r} does not exist (create it with `fastdistill topics create`)")
    return len(meta.partitions)


def position(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message that is not an error event.

    confluent-kafka types each of them optional because an error event may lack them; a data
    message always has all three, so a missing one is a bug to stop on, not a value to pass on.
    """
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"message without a position (error: {msg.error()})")
    return topic, partition, offset


class _ProduceArgs(TypedDict, total=False):
    # Only what the caller set is passed on: librdkafka's defaults stay in charge of the rest.
    value: bytes | None
    key: str | None
    partition: int
    headers: list[tuple[str, str | bytes | None]]


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: str | None,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """`produce`, waiting for room in librdkafka's queue instead of failing when it is full."""
    kwargs: _ProduceArgs = {"value": value, "key": key}
    if partition is not None:
        kwargs["partition"] = partition
    if headers:
        kwargs["headers"] = list(headers)
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)
