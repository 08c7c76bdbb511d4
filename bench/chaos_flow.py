"""Rows of one run as they become visible at a stage: what the chaos harness schedules its faults
by (a fraction of the run's rows at the last stage) and measures recovery with (when rows flow
again after a broker kill).

A plain assigned consumer (no group, so nothing to rejoin after a broker restart) reading
`read_committed` from the beginning of the stage's topic: a row counts once its transaction
committed, exactly what the next step and the sink see.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.serde import AvroSerde, UndecodableMessage


@dataclass(frozen=True)
class Arrival:
    #: monotonic time the watcher read the message
    seen: float
    #: the message's own timestamp (the producer's clock when it was produced), epoch seconds
    produced: float
    rows: int


class FlowWatcher(threading.Thread):
    def __init__(self, kafka: KafkaSettings, topic: str, serde: AvroSerde, run_id: str) -> None:
        super().__init__(daemon=True, name=f"flow-{topic}")
        self.kafka, self.topic, self.serde, self.run_id = kafka, topic, serde, run_id
        self.arrivals: list[Arrival] = []
        self.rows = 0
        self.since = time.monotonic()
        self._quit = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    @property
    def last_at(self) -> float:
        """When the last row arrived (the watcher's start before the first)."""
        with self._lock:
            return self.arrivals[-1].seen if self.arrivals else self.since

    def first_since(self, wall: float) -> float | None:
        """When (monotonic) the first message produced at or after `wall` (epoch seconds) arrived:
        rows that were already on their way before a fault do not count as flowing again."""
        with self._lock:
            return next((a.seen for a in self.arrivals if a.produced >= wall and a.rows), None)

    def stop(self) -> None:
        self._quit.set()
        self.join(30)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the harness, which owns the outcome
            self.error = exc

    def _run(self) -> None:
        # Short reconnect backoff: the watcher's own reconnection must not add seconds to a
        # measured recovery (librdkafka's default backoff grows to 10 s while the broker is away).
        consumer = clients.consumer(
            self.kafka,
            f"chaos-flow-{uuid.uuid4().hex[:8]}",
            **{"reconnect.backoff.max.ms": 500, "fetch.wait.max.ms": 100},
        )
        try:
            count = clients.partition_count(consumer, self.topic)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(count)])
            while not self._quit.is_set():
                try:
                    messages = consumer.consume(num_messages=500, timeout=0.2)
                except KafkaException:
                    continue  # the broker is away; the consumer reconnects by itself
                seen = time.monotonic()
                for msg in messages:
                    if msg.error() is not None:
                        continue
                    self._count(msg.value() or b"", msg.timestamp()[1] / 1000, seen)
        finally:
            consumer.close()

    def _count(self, value: bytes, produced: float, seen: float) -> None:
        try:
            _, record = self.serde.decode(value)
        except UndecodableMessage:
            return
        if record.get("run_id") != self.run_id or record.get("end_of_run") is not None:
            return
        rows = len(record.get("rows") or [])
        with self._lock:
            self.arrivals.append(Arrival(seen, produced, rows))
            self.rows += rows
