"""The Kafka transport of the step runtime: a group member, a transactional producer.

Thin on purpose (the runner decides everything); the broker's failures are handled where only
this layer can: shared.kafka.transactions (deadlines on every blocking call, a stuck or fatal
producer rebuilt) and shared.kafka.group (a fenced static member rejoins).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import cast

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.kafka.group import GroupMember, kafka_partitions, tp
from shared.kafka.transactions import CALL_TIMEOUT_S, TransactionalProducer
from shared.runtime.transport import InputRecord, OutputRecord, RebalanceListener, TopicPartition

log = logging.getLogger(__name__)


class KafkaTransport:
    def __init__(
        self, kafka: KafkaSettings, group_id: str, input_topics: list[str], instance_id: str
    ) -> None:
        self.kafka = kafka
        self.member_id = f"{group_id}-{instance_id}"
        self.group = GroupMember(kafka, group_id, self.member_id, input_topics)
        self.producer = TransactionalProducer(kafka, self.member_id)
        self._immediate: Producer | None = None

    def start(self, listener: RebalanceListener) -> None:
        self.group.listener = listener
        self.producer.init()
        self.group.subscribe()

    def poll(self, max_records: int, timeout_s: float) -> list[InputRecord]:
        if self._immediate is not None:
            self._immediate.poll(0)
        return [_record(msg) for msg in self.group.consume(max_records, timeout_s)]

    def assignment(self) -> list[TopicPartition]:
        return self.group.assignment()

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self.group.consumer.pause(kafka_partitions(partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.group.consumer.resume(kafka_partitions(partitions))

    def transact(self, records: list[OutputRecord], offsets: dict[TopicPartition, int]) -> None:
        self.producer.transact(records, offsets, self.group.consumer.consumer_group_metadata())

    def produce_now(self, record: OutputRecord) -> None:
        if self._immediate is None:
            self._immediate = clients.producer(self.kafka)
        clients.produce(self._immediate, record.topic, record.value, record.key, record.partition)

    def flush_now(self, timeout_s: float) -> bool:
        return self._immediate is None or self._immediate.flush(timeout_s) == 0

    def rewind(self) -> None:
        consumer = self.group.consumer
        assignment = consumer.assignment()
        try:
            committed = consumer.committed(assignment, timeout=CALL_TIMEOUT_S)
        except KafkaException as exc:
            # Committed offsets unknown: a new consumer starts from them on its next assignment.
            self.group.rebuild(f"committed offsets unavailable: {exc}")
            return
        for p in committed:
            consumer.seek(KafkaPartition(p.topic, p.partition, max(p.offset, 0)))

    def lag(self, fresh: bool = False) -> dict[TopicPartition, int] | None:
        consumer = self.group.consumer
        try:
            assignment = consumer.assignment()
            if not assignment:
                return {}
            lags: dict[TopicPartition, int] = {}
            for p in consumer.position(assignment):
                # Cached: the high watermark of the last fetch response (a broker round trip on
                # the loop would wait behind the consumer's long-poll fetch for seconds).
                if fresh:
                    _, high = consumer.get_watermark_offsets(p, timeout=2.0)
                else:
                    _, high = consumer.get_watermark_offsets(p, cached=True)
                if high < 0:
                    continue  # nothing fetched from this partition yet
                lags[tp(p)] = high - p.offset if p.offset >= 0 else high
            return lags
        except (KafkaException, RuntimeError):
            return None

    def partition_count(self, topic: str) -> int:
        return clients.partition_count(self.group.consumer, topic)

    def close(self) -> None:
        self.group.close()
        if self._immediate is not None:
            self._immediate.flush(10)


def _record(msg: Message) -> InputRecord:
    kind, timestamp_ms = msg.timestamp()
    return InputRecord(
        msg.topic() or "",
        msg.partition() or 0,
        msg.offset() or 0,
        msg.value(),
        # librdkafka hands a consumed message's headers as (name, bytes or None) pairs; the wider
        # type confluent-kafka declares also covers what a producer may be given (a dict, str values).
        tuple(cast("list[tuple[str, bytes | None]]", msg.headers() or [])),
        timestamp_ms if kind != TIMESTAMP_NOT_AVAILABLE and timestamp_ms > 0 else 0,
    )
