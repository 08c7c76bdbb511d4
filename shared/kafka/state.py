"""Compacted topics read whole: the backend of the runtime's state stores, and what the
coordinator, the sink and the CLI use to read runs, verdicts and run control."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from shared.config import KafkaSettings
from shared.kafka import clients


class KafkaStateBackend:
    """`shared.runtime.state.StateBackend` on compacted topics."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka

    def ensure(self, topic: str, partitions: int) -> None:
        clients.ensure_topics(clients.admin(self.kafka), [clients.TopicSpec.compacted(topic, partitions)])

    def read(self, topic: str) -> dict[str, bytes]:
        return read_compacted(self.kafka, topic)


#: What a partition or a group reports while its leader or coordinator moves (topic just
#: created, broker restarting, __consumer_offsets still loading on a fresh broker).
LEADER_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._WAIT_COORD,
}


def _leader_moving(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException):
        return False
    err = exc.args[0]
    return bool(err.retriable()) or err.code() in LEADER_MOVING


@retry(
    retry=retry_if_exception(_leader_moving),
    wait=wait_exponential(multiplier=0.05, max=1),
    stop=stop_after_delay(30),
    reraise=True,
)
def watermarks(client: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """Low and high watermark; retried while a just-created partition gets its leader."""
    low, high = client.get_watermark_offsets(tp, timeout=10)
    return int(low), int(high)


@retry(
    retry=retry_if_exception(_leader_moving),
    wait=wait_exponential(multiplier=0.1, max=2),
    stop=stop_after_delay(120),
    reraise=True,
)
def committed_offsets(client: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets of `partitions`; retried while its coordinator moves.

    A broker that has just started (or restarted) answers NOT_COORDINATOR until it has loaded
    __consumer_offsets: a service starting then must wait for it, not exit.
    """
    return list(client.committed(partitions, timeout=10))


def read_compacted(kafka: KafkaSettings, topic: str, timeout_s: float = 120.0) -> dict[str, bytes]:
    """The latest committed value of every key of `topic` (tombstones remove the key)."""
    reader: Consumer = clients.consumer(
        kafka, group_id=f"fd-state-reader-{topic}", **{"enable.partition.eof": True}
    )
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        todo = set()
        assignment = []
        for p in partitions:
            lo, hi = watermarks(reader, TopicPartition(topic, p))
            if hi > lo:
                todo.add(p)
                assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        data: dict[str, bytes] = {}
        if not todo:
            return data
        reader.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"state topic {topic} not read to its end in {timeout_s}s")
            for msg in reader.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(msg.partition())
                        continue
                    raise RuntimeError(f"reading state topic {topic}: {err}")
                # Our keys are text; a foreign binary key is kept escaped for the reader to reject.
                key = (msg.key() or b"").decode("utf-8", "backslashreplace")
                value = msg.value()
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
        return data
    finally:
        reader.close()
