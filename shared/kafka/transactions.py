"""A transactional producer that survives the broker's failures: one `transact` call writes
records and consumed offsets atomically, or raises TransactionAborted (nothing visible; the
caller rewinds to its committed offsets) or TransportFatal (only a new process may go on).

- Every blocking call has a deadline enforced here, not only by librdkafka:
  `send_offsets_to_transaction` can block past its own timeout while the group coordinator is
  away (confluentinc/librdkafka#5456, #5511; met after a broker restart). A call past its
  deadline is abandoned in its thread and the producer is rebuilt with the same transactional
  id, which fences the stuck one and aborts its transaction.
- A producer that turned fatal for any reason but being fenced by a newer instance of the same
  id is rebuilt the same way, instead of ending the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.runtime.transport import OutputRecord, TopicPartition, TransactionAborted, TransportFatal

log = logging.getLogger(__name__)

T = TypeVar("T")

#: librdkafka's own timeout for one transaction call; the deadline here adds a margin to it.
CALL_TIMEOUT_S = 10.0
DEADLINE_MARGIN_S = 5.0
#: Errors that mean another live instance holds this transactional id: only exiting is right.
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


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


class TransactionalProducer:
    def __init__(self, kafka: KafkaSettings, transactional_id: str, **overrides: object) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.overrides = overrides
        self.producer = self._new()

    def _new(self) -> Producer:
        # A stable id per instance fences a restarted instance's zombie and aborts its open
        # transaction at once, instead of stalling read_committed readers until it times out.
        return clients.transactional_producer(self.kafka, self.transactional_id, **self.overrides)

    def init(self) -> None:
        deadline = CALL_TIMEOUT_S * 3 + DEADLINE_MARGIN_S
        bounded(lambda: self.producer.init_transactions(CALL_TIMEOUT_S * 3), deadline, "init_transactions")

    def rebuild(self, why: str) -> None:
        """A new producer with the same transactional id: its init fences the old one (stuck in a
        call, or fatal) and aborts whatever transaction that one had open."""
        log.warning("%s: rebuilding the transactional producer: %s", self.transactional_id, why)
        self.producer = self._new()
        for attempt in range(1, 1_000_000):
            try:
                self.init()
                return
            except (KafkaException, CallAbandoned) as exc:
                # Broker still away: keep trying; the watchdog ends the process if this never does.
                log.warning("%s: producer init attempt %d failed: %s", self.transactional_id, attempt, exc)
                time.sleep(min(5.0, 0.5 * attempt))

    def transact(self, records: list[OutputRecord], offsets: dict[TopicPartition, int], group: Any) -> None:
        """`records` and `offsets` (next offset to read, for `group`: the consumer's group
        metadata) in one transaction."""
        try:
            self.producer.begin_transaction()
            for r in records:
                clients.produce(self.producer, r.topic, r.value, r.key, r.partition)
            positions = [KafkaPartition(t, p, o) for (t, p), o in offsets.items()]
            producer, deadline = self.producer, CALL_TIMEOUT_S + DEADLINE_MARGIN_S
            bounded(
                lambda: producer.send_offsets_to_transaction(positions, group, CALL_TIMEOUT_S),
                deadline,
                "send_offsets_to_transaction",
            )
            self._commit(deadline)
        except CallAbandoned as exc:
            self.rebuild(str(exc))
            raise TransactionAborted(str(exc)) from None
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                if err.code() in FENCED:
                    raise TransportFatal(
                        f"fenced by a newer instance of {self.transactional_id}: {err}"
                    ) from exc
                self.rebuild(str(err))
                raise TransactionAborted(str(err)) from exc
            self._abort(err)
            raise TransactionAborted(str(err)) from exc

    def _commit(self, deadline_s: float) -> None:
        producer = self.producer
        for attempt in range(10):
            try:
                bounded(lambda: producer.commit_transaction(CALL_TIMEOUT_S), deadline_s, "commit_transaction")
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.txn_requires_abort() or not err.retriable() or attempt == 9:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _abort(self, err: KafkaError) -> None:
        log.warning("aborting transaction of %s: %s", self.transactional_id, err)
        producer, deadline = self.producer, CALL_TIMEOUT_S + DEADLINE_MARGIN_S
        try:
            bounded(lambda: producer.abort_transaction(CALL_TIMEOUT_S), deadline, "abort_transaction")
        except (KafkaException, CallAbandoned) as exc:
            # e.g. "not coordinator" right after a broker restart: a new producer aborts for us.
            self.rebuild(f"abort failed: {exc}")
