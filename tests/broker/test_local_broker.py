"""The project's own broker behaves like Kafka where the pipeline relies on it."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer

from shared import local_broker
from shared.config import KafkaSettings
from shared.runtime import clients
from shared.runtime.state import read_compacted

pytestmark = pytest.mark.kafka


def _read(bootstrap: str, topic: str, isolation: str, expect: int, timeout_s: float = 20) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expect and time.monotonic() < deadline:
        values += [m.value() for m in consumer.consume(100, 0.2) if m.error() is None]
    # Give stragglers (which must not exist) a moment to show up.
    values += [m.value() for m in consumer.consume(100, 1.0) if m.error() is None]
    consumer.close()
    return values


def test_aborted_transactions_are_invisible_to_read_committed(
    kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    topic = f"{fresh_topic_prefix}.txn"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    clients.ensure_topics(clients.admin(kafka), [clients.TopicSpec(topic, 1)])
    producer = clients.transactional_producer(kafka, f"{fresh_topic_prefix}-tx")
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.flush(10)  # on the broker's log before the abort, not purged from the client queue
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(30)
    assert _read(kafka_bootstrap, topic, "read_committed", 1) == [b"committed"]
    assert sorted(_read(kafka_bootstrap, topic, "read_uncommitted", 2)) == [b"aborted", b"committed"]


def test_compaction_keeps_the_last_value_per_key(kafka_bootstrap: str, fresh_topic_prefix: str) -> None:
    topic = f"{fresh_topic_prefix}.compact"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
    }
    clients.ensure_topics(clients.admin(kafka), [clients.TopicSpec(topic, 1, config=config)])
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    deadline = time.monotonic() + 60
    compacted = False
    round_ = 0
    while not compacted and time.monotonic() < deadline:
        for i in range(50):
            producer.produce(topic, key=f"k{i % 5}", value=f"{round_}-{i}".encode())
        producer.flush(10)
        round_ += 1
        time.sleep(1.5)
        # The cleaner only touches closed segments; new writes roll the active one.
        values = _read(kafka_bootstrap, topic, "read_committed", 1, timeout_s=5)
        compacted = len(values) < 50 * round_
    assert compacted, "the log cleaner never compacted the topic"
    latest = read_compacted(kafka, topic)
    assert sorted(latest) == [f"k{i}" for i in range(5)]
    assert latest["k4"] == f"{round_ - 1}-49".encode()


def test_a_restart_keeps_topics_and_messages(kafka_bootstrap: str, fresh_topic_prefix: str) -> None:
    if kafka_bootstrap != local_broker.bootstrap() or not local_broker.is_running():
        pytest.skip("restart is tested on the project's own broker only")
    topic = f"{fresh_topic_prefix}.durable"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    clients.ensure_topics(clients.admin(kafka), [clients.TopicSpec(topic, 2)])
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, value=b"before restart")
    producer.flush(10)
    started = time.monotonic()
    local_broker.restart()
    print(f"broker restart took {time.monotonic() - started:.1f}s")
    assert _read(kafka_bootstrap, topic, "read_committed", 1) == [b"before restart"]
