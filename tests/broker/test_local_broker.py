"""The project's own broker behaves like Kafka where the pipeline relies on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from fastdistill.dev import local_broker
from fastdistill.local_stack import free_port_pair
from shared.config import KafkaSettings
from shared.kafka import clients

pytestmark = pytest.mark.kafka


def _read_all(
    bootstrap: str, topic: str, isolation: str = "read_committed", timeout_s: float = 20
) -> list[Message]:
    """Every record of partition 0 up to its end (the last stable offset under read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused-no-commits",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    # assign(), not subscribe(): no group join, so the read is quick and exact.
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                err = msg.error()
                if err is None:
                    records.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    return records
                else:
                    raise RuntimeError(err)
        raise TimeoutError(f"{topic} not read to its end in {timeout_s}s")
    finally:
        consumer.close()


def _create(bootstrap: str, topic: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    clients.ensure_topics(clients.admin(kafka), [clients.TopicSpec(topic, partitions, config=config or {})])


def test_produce_then_consume(kafka_bootstrap: str, fresh_topic_prefix: str) -> None:
    topic = f"{fresh_topic_prefix}.plain"
    _create(kafka_bootstrap, topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"k", value=b"hello", headers=[("h", b"v")])
    assert producer.flush(10) == 0
    [msg] = _read_all(kafka_bootstrap, topic)
    assert (msg.key(), msg.value(), msg.headers()) == (b"k", b"hello", [("h", b"v")])


def test_aborted_transactions_are_invisible_to_read_committed(
    kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    topic = f"{fresh_topic_prefix}.txn"
    _create(kafka_bootstrap, topic)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    producer = clients.transactional_producer(kafka, f"{fresh_topic_prefix}-tx")
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.flush(10)  # on the broker's log before the abort, not purged from the client queue
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(30)
    assert [m.value() for m in _read_all(kafka_bootstrap, topic, "read_committed")] == [b"committed"]
    uncommitted = [m.value() for m in _read_all(kafka_bootstrap, topic, "read_uncommitted")]
    assert uncommitted == [b"aborted", b"committed"]


def test_compaction_keeps_the_last_value_per_key(kafka_bootstrap: str, fresh_topic_prefix: str) -> None:
    topic = f"{fresh_topic_prefix}.compact"
    # Tiny segments and dirty ratio: the cleaner picks the topic up within a few seconds.
    config = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"}
    _create(kafka_bootstrap, topic, config=config)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    keys = [f"k{i}" for i in range(5)]
    expected: dict[str, bytes] = {}
    produced = 0
    records = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # The cleaner never touches the active segment; a new round after segment.ms rolls it.
        for key in keys:
            expected[key] = f"{key}@{produced}".encode()
            producer.produce(topic, key=key, value=expected[key])
            produced += 1
        assert producer.flush(10) == 0
        records = _read_all(kafka_bootstrap, topic)
        if len(records) < produced:
            break
        time.sleep(1)
    assert len(records) < produced, f"the log cleaner never compacted {topic} ({produced} records)"
    latest = {(m.key() or b"").decode(): m.value() for m in records}
    assert latest == expected
    # Compaction keeps offsets: the survivors are in order, the removed ones leave gaps.
    offsets = [m.offset() or 0 for m in records]
    assert offsets == sorted(offsets) and offsets[-1] == produced - 1


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[local_broker.BrokerInfo]:
    """A broker of this test's own, so restarting it never disturbs the shared one others use."""
    port = free_port_pair()
    info = local_broker.up(port, tmp_path / "kafka")
    yield info
    local_broker.stop_hard(port, info.data_dir)


def test_a_restart_keeps_topics_and_messages(own_broker: local_broker.BrokerInfo) -> None:
    port, data_dir, bootstrap = own_broker.port, own_broker.data_dir, own_broker.bootstrap
    assert local_broker.is_running(port, data_dir)
    # up() on a running broker returns it instead of starting another.
    assert local_broker.up(port, data_dir).pid == own_broker.pid
    _create(bootstrap, "durable", partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("durable", value=b"before restart", partition=0)
    assert producer.flush(10) == 0
    del producer

    started = time.monotonic()
    local_broker.down(port, data_dir=data_dir)
    stopped = time.monotonic()
    assert not local_broker.is_running(port, data_dir)
    assert not (data_dir / local_broker.PID_FILE).exists()
    restarted = local_broker.up(port, data_dir)
    print(f"down {stopped - started:.1f}s, up {time.monotonic() - stopped:.1f}s")
    assert restarted.pid != own_broker.pid
    assert [m.value() for m in _read_all(bootstrap, "durable")] == [b"before restart"]

    # A crash (SIGKILL) loses nothing that was acknowledged either.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce("durable", value=b"before crash", partition=0)
    assert producer.flush(10) == 0
    del producer
    local_broker.restart(port, hard=True, data_dir=data_dir)
    values = [m.value() for m in _read_all(bootstrap, "durable")]
    assert values == [b"before restart", b"before crash"]
