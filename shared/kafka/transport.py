"""The Kafka transport of the step runtime: a consumer, a transactional producer, rebalance callbacks.

Thin on purpose (the runner decides everything), except where the broker's failures need
handling that only this layer can do:

- transactions go through shared.kafka.transactions (deadlines on every blocking call, the
  producer rebuilt instead of the process ended);
- a consumer fenced as a static member ("fenced by other consumer with same
  group.instance.id", seen after a broker SIGKILL with no other process holding the id) is
  rebuilt: its partitions are reported lost and come back through a new assignment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.kafka.transactions import CALL_TIMEOUT_S, TransactionalProducer
from shared.runtime.transport import (
    InputRecord,
    OutputRecord,
    RebalanceListener,
    TopicPartition,
    TransportFatal,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Rebuilding a fenced consumer more often than this within a minute is a real duplicate: give up.
MAX_CONSUMER_REBUILDS_PER_MIN = 3


def _tp(p: KafkaPartition) -> TopicPartition:
    return (p.topic, p.partition)


def _kafka(partitions: Iterable[TopicPartition]) -> list[KafkaPartition]:
    return [KafkaPartition(topic, partition) for topic, partition in partitions]


class KafkaTransport:
    def __init__(
        self, kafka: KafkaSettings, group_id: str, input_topics: list[str], instance_id: str
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.input_topics = input_topics
        self.member_id = f"{group_id}-{instance_id}"
        self._listener: RebalanceListener | None = None
        self._immediate: Producer | None = None
        self._consumer_rebuilds: list[float] = []
        self.consumer = self._new_consumer()
        self.producer = TransactionalProducer(kafka, self.member_id)

    # -- clients ---------------------------------------------------------------------------------
    def _new_consumer(self) -> Consumer:
        # Static membership: a restarted instance takes its partitions back without a rebalance.
        return clients.consumer(self.kafka, self.group_id, **{"group.instance.id": self.member_id})

    def _rebuild_consumer(self, why: str) -> None:
        now = time.monotonic()
        self._consumer_rebuilds = [t for t in self._consumer_rebuilds if now - t < 60] + [now]
        if len(self._consumer_rebuilds) > MAX_CONSUMER_REBUILDS_PER_MIN:
            raise TransportFatal(f"consumer fenced {len(self._consumer_rebuilds)} times in a minute: {why}")
        log.warning("%s: rebuilding the consumer: %s", self.member_id, why)
        lost = self.assignment()
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("%s: closing the old consumer: %s", self.member_id, exc)
        if lost and self._listener is not None:
            self._listener.on_lost(lost)
        self.consumer = self._new_consumer()
        self._subscribe()

    def _subscribe(self) -> None:
        # The range assignor (librdkafka's first default) gives one member the same partition
        # numbers of every input topic: the rows a join matches by key meet in one instance.
        self.consumer.subscribe(
            self.input_topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    # -- Transport -------------------------------------------------------------------------------
    def start(self, listener: RebalanceListener) -> None:
        self._listener = listener
        self.producer.init()
        self._subscribe()

    def poll(self, max_records: int, timeout_s: float) -> list[InputRecord]:
        if self._immediate is not None:
            self._immediate.poll(0)
        try:
            messages = self.consumer.consume(num_messages=max_records, timeout=timeout_s)
        except KafkaException as exc:
            return self._consumer_failed(exc.args[0])
        records = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if _fatal(err):
                    return records + self._consumer_failed(err)
                log.warning("consumer error on %s: %s", self.input_topics, err)
                continue
            records.append(_record(msg))
        return records

    def _consumer_failed(self, err: KafkaError) -> list[InputRecord]:
        if not _fatal(err):
            log.warning("consumer error on %s: %s", self.input_topics, err)
            return []
        # A fatal error reaches the consumer as _FATAL with the cause in its text: librdkafka
        # has no way to hand the consumer's original code to Python.
        if err.code() == KafkaError.FENCED_INSTANCE_ID or "group.instance.id" in err.str():
            self._rebuild_consumer(str(err))
            return []
        raise TransportFatal(f"consumer: {err}")

    def assignment(self) -> list[TopicPartition]:
        try:
            return [_tp(p) for p in self.consumer.assignment()]
        except (KafkaException, RuntimeError):
            return []

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self.consumer.pause(_kafka(partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.consumer.resume(_kafka(partitions))

    def transact(self, records: list[OutputRecord], offsets: dict[TopicPartition, int]) -> None:
        self.producer.transact(records, offsets, self.consumer.consumer_group_metadata())

    def produce_now(self, record: OutputRecord) -> None:
        if self._immediate is None:
            self._immediate = clients.producer(self.kafka)
        clients.produce(self._immediate, record.topic, record.value, record.key, record.partition)

    def rewind(self) -> None:
        assignment = self.consumer.assignment()
        try:
            committed = self.consumer.committed(assignment, timeout=CALL_TIMEOUT_S)
        except KafkaException as exc:
            # Committed offsets unknown: a new consumer starts from them on its next assignment.
            self._rebuild_consumer(f"committed offsets unavailable: {exc}")
            return
        for tp in committed:
            self.consumer.seek(KafkaPartition(tp.topic, tp.partition, max(tp.offset, 0)))

    def lag(self, fresh: bool = False) -> dict[TopicPartition, int] | None:
        try:
            assignment = self.consumer.assignment()
            if not assignment:
                return {}
            lags: dict[TopicPartition, int] = {}
            for tp in self.consumer.position(assignment):
                # Cached: the high watermark of the last fetch response (a broker round trip on
                # the loop would wait behind the consumer's long-poll fetch for seconds).
                if fresh:
                    _, high = self.consumer.get_watermark_offsets(tp, timeout=2.0)
                else:
                    _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue  # nothing fetched from this partition yet
                lags[_tp(tp)] = high - tp.offset if tp.offset >= 0 else high
            return lags
        except (KafkaException, RuntimeError):
            return None

    def partition_count(self, topic: str) -> int:
        return clients.partition_count(self.consumer, topic)

    def close(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close: %s", exc)
        if self._immediate is not None:
            self._immediate.flush(10)

    # -- rebalance callbacks ---------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        # Taken now (eager protocol), so the pauses and resumes the runner asks for act on them.
        consumer.assign(partitions)
        if self._listener is not None:
            self._listener.on_assigned([_tp(p) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        if self._listener is not None:
            self._listener.on_revoked([_tp(p) for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        if self._listener is not None:
            self._listener.on_lost([_tp(p) for p in partitions])


def _fatal(err: KafkaError) -> bool:
    # A message carrying _FATAL does not always have the fatal flag set (seen after a broker
    # SIGKILL: "Static consumer fenced by other consumer with same group.instance.id").
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def _record(msg: Message) -> InputRecord:
    return InputRecord(
        msg.topic() or "",
        msg.partition() or 0,
        msg.offset() or 0,
        msg.value(),
        tuple(msg.headers() or ()),
    )
