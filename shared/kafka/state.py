"""State stores backed by compacted topics (the `StateStore` a step gets in `open`).

A store keeps its whole map in memory and rebuilds it from its topic on start and on
every partition assignment. Transactional writes are produced inside the service's next
transaction, so the state commits atomically with the rows that caused it; a partition
is written with the input partition being processed, so a key lives where its rows do.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from shared.config import KafkaSettings
from shared.kafka import clients

#: The input partition and the run whose rows are being processed (set by the service per message).
CURRENT_PARTITION: contextvars.ContextVar[int] = contextvars.ContextVar("fd_current_partition", default=0)
CURRENT_RUN: contextvars.ContextVar[str] = contextvars.ContextVar("fd_current_run", default="")


class KafkaStateStore:
    def __init__(
        self,
        topic: str,
        *,
        durable_immediately: bool,
        immediate_producer: Callable[[], Producer],
        per_run: bool = True,
    ) -> None:
        self.topic = topic
        self.durable_immediately = durable_immediately
        self.per_run = per_run
        self._immediate_producer = immediate_producer
        self.data: dict[str, bytes] = {}
        self._pending: list[tuple[str, bytes, int]] = []

    def _key(self, key: str) -> str:
        return f"{CURRENT_RUN.get()}|{key}" if self.per_run else key

    def get(self, key: str) -> bytes | None:
        return self.data.get(self._key(key))

    def put(self, key: str, value: bytes) -> None:
        key = self._key(key)
        self.data[key] = value
        partition = CURRENT_PARTITION.get()
        if self.durable_immediately:
            self._immediate_producer().produce(self.topic, value=value, key=key, partition=partition)
        else:
            self._pending.append((key, value, partition))

    def flush_into(self, transactional: Producer) -> None:
        """Produce pending writes into the caller's open transaction."""
        for key, value, partition in self._pending:
            transactional.produce(self.topic, value=value, key=key, partition=partition)
        self._pending.clear()

    def discard_pending(self) -> None:
        self._pending.clear()

    def reload(self, kafka: KafkaSettings) -> None:
        self._pending.clear()
        self.data = read_compacted(kafka, self.topic)


#: What a partition reports while its leader moves (topic just created, broker restarting).
LEADER_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
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
                if msg.value() is None:
                    data.pop(key, None)
                else:
                    data[key] = msg.value()
        return data
    finally:
        reader.close()
