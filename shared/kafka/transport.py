"""The Kafka transport of the step runtime: a consumer, a transactional producer, rebalance callbacks.

Thin on purpose (the runner decides everything), except where the broker's failures need
handling that only this layer can do:

- every blocking transaction call has a deadline enforced here, not only by librdkafka:
  `send_offsets_to_transaction` can block past its own timeout while the group coordinator
  is away (confluentinc/librdkafka#5456, #5511; met after a broker restart). A call past its
  deadline is abandoned in its thread and the producer is rebuilt with the same
  transactional id, which fences the stuck one and aborts its transaction;
- a producer that turned fatal for any reason but being fenced by a newer instance is
  rebuilt the same way, instead of ending the process;
- a consumer fenced as a static member ("fenced by other consumer with same
  group.instance.id", seen after a broker SIGKILL with no other process holding the id) is
  rebuilt: its partitions are reported lost and come back through a new assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.runtime.transport import (
    InputRecord,
    OutputRecord,
    RebalanceListener,
    TopicPartition,
    TransactionAborted,
    TransportFatal,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: librdkafka's own timeout for one transaction call; the deadline here adds a margin to it.
CALL_TIMEOUT_S = 10.0
DEADLINE_MARGIN_S = 5.0
#: Errors that mean another live instance holds this transactional id: only exiting is right.
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
#: Rebuilding a fenced consumer more often than this within a minute is a real duplicate: give up.
MAX_CONSUMER_REBUILDS_PER_MIN = 3


class CallAbandoned(Exception):
    """A client call did not return by its deadline; it is left to finish in its thread."""


def bounded(call: Callable[[], T], deadline_s: float, name: str) -> T:
    """`call()` in a thread of its own, waited for at most `deadline_s`."""
    result: Future[T] = Future()

    def run() -> None:
        try:
            result.set_result(call())
        except BaseException as exc:
            result.set_exception(exc)

    threading.Thread(target=run, name=f"kafka-{name}", daemon=True).start()
    try:
        return result.result(timeout=deadline_s)
    except TimeoutError:
        raise CallAbandoned(f"{name} did not return within {deadline_s:.0f} s") from None


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
        self.producer = self._new_producer()

    # -- clients ---------------------------------------------------------------------------------
    def _new_consumer(self) -> Consumer:
        # Static membership: a restarted instance takes its partitions back without a rebalance.
        return clients.consumer(self.kafka, self.group_id, **{"group.instance.id": self.member_id})

    def _new_producer(self) -> Producer:
        # A stable id per instance fences a restarted instance's zombie and aborts its open
        # transaction at once, instead of stalling read_committed readers until it times out.
        return clients.transactional_producer(self.kafka, self.member_id)

    def _init_producer(self) -> None:
        deadline = CALL_TIMEOUT_S * 3 + DEADLINE_MARGIN_S
        bounded(lambda: self.producer.init_transactions(CALL_TIMEOUT_S * 3), deadline, "init_transactions")

    def _rebuild_producer(self, why: str) -> None:
        """A new producer with the same transactional id: its init fences the old one (stuck in a
        call, or fatal) and aborts whatever transaction that one had open."""
        log.warning("%s: rebuilding the transactional producer: %s", self.member_id, why)
        self.producer = self._new_producer()
        for attempt in range(1, 1_000_000):
            try:
                self._init_producer()
                return
            except (KafkaException, CallAbandoned) as exc:
                # Broker still away: keep trying; the watchdog ends the process if this never does.
                log.warning("%s: producer init attempt %d failed: %s", self.member_id, attempt, exc)
                time.sleep(min(5.0, 0.5 * attempt))

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
        self._init_producer()
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
        try:
            self.producer.begin_transaction()
            for r in records:
                clients.produce(self.producer, r.topic, r.value, r.key, r.partition)
            positions = [KafkaPartition(t, p, o) for (t, p), o in offsets.items()]
            metadata = self.consumer.consumer_group_metadata()
            deadline = CALL_TIMEOUT_S + DEADLINE_MARGIN_S
            bounded(
                lambda: self.producer.send_offsets_to_transaction(positions, metadata, CALL_TIMEOUT_S),
                deadline,
                "send_offsets_to_transaction",
            )
            self._commit(deadline)
        except CallAbandoned as exc:
            self._rebuild_producer(str(exc))
            raise TransactionAborted(str(exc)) from None
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                if err.code() in FENCED:
                    raise TransportFatal(f"fenced by a newer instance of {self.member_id}: {err}") from exc
                self._rebuild_producer(str(err))
                raise TransactionAborted(str(err)) from exc
            self._abort(err)
            raise TransactionAborted(str(err)) from exc

    def _commit(self, deadline_s: float) -> None:
        for attempt in range(10):
            try:
                bounded(
                    lambda: self.producer.commit_transaction(CALL_TIMEOUT_S), deadline_s, "commit_transaction"
                )
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.txn_requires_abort() or not err.retriable() or attempt == 9:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _abort(self, err: KafkaError) -> None:
        log.warning("aborting transaction of %s: %s", self.member_id, err)
        try:
            deadline = CALL_TIMEOUT_S + DEADLINE_MARGIN_S
            bounded(lambda: self.producer.abort_transaction(CALL_TIMEOUT_S), deadline, "abort_transaction")
        except (KafkaException, CallAbandoned) as exc:
            # e.g. "not coordinator" right after a broker restart: a new producer aborts for us.
            self._rebuild_producer(f"abort failed: {exc}")

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
