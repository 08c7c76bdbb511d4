"""One step as a Kafka service: exactly-once consume → process → produce.

Per input message (a batch of rows) the service decodes, runs the step on every row
(asynchronous steps: many rows at once, up to `max_in_flight`), and holds the outcome
until every earlier message of the same partition is complete. Every
`commit_interval_ms` the completed prefix of each partition goes out in one Kafka
transaction: output batches, dead letters, state-store writes, the progress record and
the consumed offsets. A crash at any point therefore either publishes all of a
message's effects or none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from shared import metrics
from shared.config import KafkaSettings, ServiceSettings
from shared.kafka import clients
from shared.kafka.control import ControlView
from shared.kafka.state import CURRENT_PARTITION, CURRENT_RUN, KafkaStateStore
from shared.pipeline import ErrorPolicy
from shared.runtime.batching import MESSAGE_OVERHEAD, fit, too_large_message
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.runtime.health import serving
from shared.runtime.markers import MarkerTracker
from shared.runtime.watchdog import watchdog
from shared.serde import AvroSerde, UndecodableMessage
from shared.step import Row, Step

log = logging.getLogger(__name__)

PROGRESS_SCHEMA = "progress"
#: Per-row latency samples kept per progress record; enough for percentiles, bounded in size.
MAX_ROW_SAMPLES = 512
#: How long a full buffer may go without consume() before partitions are paused (rebalance
#: callbacks are only served inside consume()).
PAUSE_AFTER_FULL_S = 5.0


class StepFailed(RuntimeError):
    """A row raised under FAIL_FAST: the service stops without committing that message."""


@dataclass(frozen=True)
class Wiring:
    """Where a service reads and writes; built by the composition root from the pipeline."""

    stage: str
    group_id: str
    input_topic: str
    input_schema: str
    output_topic: str | None
    output_schema: str | None
    dlq_topic: str
    progress_topic: str
    state_topic_prefix: str
    #: Run limits and stops (shared.kafka.control); None: rows are never stopped.
    control_topic: str | None = None
    error_policy: ErrorPolicy = ErrorPolicy.COLLECT
    max_in_flight: int = 32
    max_buffered_rows: int = 2000
    partition_by: str | None = None


_DROPPED = object()


@dataclass
class PendingMessage:
    topic: str
    partition: int
    offset: int
    started: float
    run_id: str | None = None
    lineage: list[str] = field(default_factory=list)
    marker: dict[str, Any] | None = None
    outputs: list[Any] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    row_seconds: list[float] = field(default_factory=list)
    remaining: int = 0
    errored: int = 0
    #: rows dropped unprocessed because the run was stopped
    stopped: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    finished: float | None = None

    @property
    def rows(self) -> int:
        return len(self.outputs)

    @property
    def done(self) -> bool:
        return self.remaining == 0


class StepService:
    def __init__(
        self,
        step: Step,
        wiring: Wiring,
        serde: AvroSerde,
        kafka: KafkaSettings,
        settings: ServiceSettings,
    ) -> None:
        self.step = step
        self.w = wiring
        self.serde = serde
        self.kafka = kafka
        self.settings = settings
        self.signature = step.signature()
        self.tracker = MarkerTracker()
        self.pending: dict[tuple[str, int], deque[PendingMessage]] = defaultdict(deque)
        self.stores: dict[str, KafkaStateStore] = {}
        self._stopping = False
        self._failure: BaseException | None = None
        self._seq = 0
        #: Largest batch seen on the input; until one is seen, messages are taken one at a time.
        self._max_message_rows = 0
        self._paused = False
        self._full_since: float | None = None
        self._in_flight = 0
        #: The last consume found nothing new: the input is caught up with.
        self._input_drained = False
        self._semaphore = asyncio.Semaphore(wiring.max_in_flight)
        #: Set whenever a row settles: what the loop waits on while rows are in flight.
        self._row_done = asyncio.Event()
        self._immediate: Producer | None = None
        self._markers_store: KafkaStateStore | None = None
        self.control: ControlView | None = None
        #: Highest buffered row count seen after a poll, how often a full buffer held consuming
        #: back, and how often a long hold paused the partitions.
        self.buffered_max = 0
        self.holds = 0
        self.pauses = 0
        self.input_partitions = 0
        self.output_partitions = 0
        self._last_lag_check = 0.0
        self.last_loop_at = time.monotonic()
        self.consumer: Consumer = clients.consumer(
            kafka, wiring.group_id, **{"group.instance.id": f"{wiring.group_id}-{settings.instance_id}"}
        )
        self.producer: Producer = clients.transactional_producer(
            kafka, f"{wiring.group_id}-{settings.instance_id}"
        )
        self._labels = {"step": wiring.stage}
        self._row_seconds = metrics.ROW_SECONDS.labels(**self._labels)

    # -- what steps see ------------------------------------------------------------------------
    def state_store(
        self, name: str, *, durable_immediately: bool = False, scope: Literal["run", "global"] = "run"
    ) -> KafkaStateStore:
        if name not in self.stores:
            topic = f"{self.w.state_topic_prefix}.{name}"
            admin = clients.admin(self.kafka)
            clients.ensure_topics(
                admin,
                [clients.TopicSpec.compacted(topic, clients.partition_count(admin, self.w.input_topic))],
            )
            store = KafkaStateStore(
                topic,
                durable_immediately=durable_immediately,
                immediate_producer=self._immediate_producer,
                per_run=scope == "run",
            )
            store.reload(self.kafka)
            self.stores[name] = store
        return self.stores[name]

    def _immediate_producer(self) -> Producer:
        if self._immediate is None:
            self._immediate = clients.producer(self.kafka)
        return self._immediate

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        async with (
            serving(self.settings.metrics_host, self.settings.metrics_port, self.health, self.stop),
            watchdog(self.w.stage, lambda: self.last_loop_at, self.settings.stall_limit_s),
        ):
            try:
                self.producer.init_transactions(30)
                self._markers_store = self.state_store("markers", scope="global")
                self._restore_tracker()
                self.step.open(self)
                if self.w.control_topic is not None:
                    self.control = ControlView(self.kafka, self.w.control_topic)
                self.input_partitions = clients.partition_count(self.consumer, self.w.input_topic)
                self.output_partitions = (
                    clients.partition_count(self.consumer, self.w.output_topic) if self.w.output_topic else 0
                )
                self.consumer.subscribe(
                    [self.w.input_topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
                await self._loop()
            finally:
                await self._shutdown()
                self.step.close()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        log.info("stop requested for %s", self.w.stage)
        self._stopping = True

    def health(self) -> dict[str, Any]:
        stalled = time.monotonic() - self.last_loop_at > max(30.0, self.kafka.session_timeout_ms / 1000)
        return {
            "ok": not stalled and self._failure is None,
            "step": self.w.stage,
            "buffered_rows": self._buffered_rows(),
            "in_flight": self._in_flight,
            "paused": self._paused,
            "assigned": sorted(tp.partition for tp in self.consumer.assignment()),
        }

    async def _loop(self) -> None:
        interval = self.settings.commit_interval_ms / 1000
        last_commit = time.monotonic()
        while not self._stopping:
            self.last_loop_at = time.monotonic()
            self._consume_some()
            if self._in_flight:
                await self._wait_for_rows(min(interval, 0.05))
            else:
                await asyncio.sleep(0)
            # Caught up with the input, a stage commits what is done at once: waiting out the
            # interval there only delays the run's last rows, by up to an interval per stage.
            caught_up = self._input_drained and not self._in_flight and self._any_done()
            if caught_up or time.monotonic() - last_commit >= interval:
                self._commit_ready()
                last_commit = time.monotonic()
                self._report_gauges()
            if self._failure is not None:
                self._stopping = True

    async def _wait_for_rows(self, timeout: float) -> None:
        # One event rather than asyncio.wait() on every pending task: that registers and removes
        # a callback on each of thousands of buffered rows per wake-up, milliseconds of the
        # loop's CPU per settled row. Rows settle only while this awaits, so clearing first
        # cannot miss one.
        self._row_done.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._row_done.wait()

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while self._failure is None and self._in_flight and time.monotonic() < deadline:
            await self._wait_for_rows(0.1)
        if self._failure is None:
            self._commit_ready()
        self._drop_pending(list(self.pending))
        try:
            self.consumer.close()
        except KafkaException as exc:
            log.warning("consumer close: %s", exc)
        if self._immediate is not None:
            self._immediate.flush(10)
        if self.control is not None:
            self.control.close()

    # -- consuming -----------------------------------------------------------------------------
    def _buffered_rows(self) -> int:
        return sum(m.rows for q in self.pending.values() for m in q)

    def _consume_some(self) -> None:
        buffered = self._buffered_rows()
        room = self.w.max_buffered_rows - buffered
        fits = room // self._max_message_rows if self._max_message_rows else min(room, 1)
        if fits < 1 and buffered == 0:
            fits = 1  # a message larger than the cap still has to go through, alone
        now = time.monotonic()
        if fits >= 1:
            self._set_paused(False)
            self._full_since = None
            # Blocking is fine while no row is in flight; otherwise just look and go back to the rows.
            timeout = 0 if self._in_flight else min(0.05, self.settings.commit_interval_ms / 1000)
            self._take(self.consumer.consume(num_messages=min(fits, 100), timeout=timeout))
        else:
            # Full: simply not consuming is the backpressure (librdkafka's prefetch is bounded by
            # queued.max.messages.kbytes). pause()/resume() costs ~1 s of fetch stall per resume,
            # so it is kept for long stalls, where rebalance callbacks must still be served.
            if self._full_since is None:
                self._full_since = now
                self.holds += 1
            if now - self._full_since > PAUSE_AFTER_FULL_S:
                self._set_paused(True)
                self._take(self.consumer.consume(num_messages=1, timeout=0))
        self.buffered_max = max(self.buffered_max, self._buffered_rows())
        if self._immediate is not None:
            self._immediate.poll(0)
        if self.control is not None:
            self.control.poll()
        self._maybe_report_lag()

    def _take(self, messages: list[Message]) -> None:
        self._input_drained = not messages
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error on %s: %s", self.w.stage, err)
                continue
            self._accept(msg)

    def _any_done(self) -> bool:
        return any(q and q[0].done for q in self.pending.values())

    def _set_paused(self, pause: bool) -> None:
        if pause == self._paused:
            return
        assignment = self.consumer.assignment()
        if pause:
            self.pauses += 1
            self.consumer.pause(assignment)
        else:
            self.consumer.resume(assignment)
        self._paused = pause
        metrics.PAUSED.labels(**self._labels).set(len(assignment) if pause else 0)

    def _accept(self, msg: Message) -> None:
        pm = PendingMessage(msg.topic(), msg.partition(), msg.offset(), time.monotonic())
        self.pending[(pm.topic, pm.partition)].append(pm)
        source = (pm.topic, pm.partition, pm.offset)
        try:
            schema, record = self.serde.decode(msg.value(), expect=self.w.input_schema)
            if schema != self.w.input_schema:
                raise UndecodableMessage(
                    f"a {schema} record is not input of step {self.w.stage} (expected {self.w.input_schema})"
                )
        except UndecodableMessage as exc:
            pm.dead_letters.append(
                dead_letter(
                    step=self.w.stage,
                    error_type="UndecodableMessage",
                    error_message=str(exc),
                    raw=msg.value() or b"",
                    source=source,
                )
            )
            return
        pm.run_id = record["run_id"]
        pm.lineage = record["lineage"]
        if record["end_of_run"] is not None:
            pm.marker = record["end_of_run"]
            return
        rows: list[Row] = record["rows"]
        pm.outputs = [_DROPPED] * len(rows)
        self._max_message_rows = max(self._max_message_rows, len(rows))
        metrics.ROWS_IN.labels(**self._labels).inc(len(rows))
        if self._stopped(pm.run_id):
            pm.stopped = len(rows)  # nothing left to process: the message is complete as it is
            return
        pm.remaining = len(rows)
        CURRENT_PARTITION.set(pm.partition)
        CURRENT_RUN.set(pm.run_id)
        if self.step.is_async:
            for i, row in enumerate(rows):
                pm.tasks.append(asyncio.ensure_future(self._process_async(pm, i, row)))
        else:
            for i, row in enumerate(rows):
                try:
                    self._settle(pm, i, row, self.step.process_row(row), None)
                except Exception as exc:
                    self._settle(pm, i, row, None, exc)
                if self._failure is not None:
                    return

    def _stopped(self, run_id: str | None) -> bool:
        return self.control is not None and run_id in self.control.stopped

    async def _process_async(self, pm: PendingMessage, i: int, row: Row) -> None:
        async with self._semaphore:
            if self._stopped(pm.run_id):
                # Rows queued behind the in-flight cap when the stop arrives cost nothing.
                pm.stopped += 1
                self._settle(pm, i, row, None, None)
                return
            self._in_flight += 1
            started = time.monotonic()
            try:
                result = await self.step.process_row_async(dict(row))  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._settle(pm, i, row, None, exc)
            else:
                self._settle(pm, i, row, result, None)
            finally:
                self._in_flight -= 1
                pm.row_seconds.append(time.monotonic() - started)
                self._row_seconds.observe(time.monotonic() - started)

    def _settle(
        self, pm: PendingMessage, i: int, row: Row, result: Row | None, exc: Exception | None
    ) -> None:
        pm.remaining -= 1
        self._row_done.set()
        if exc is None:
            pm.outputs[i] = _DROPPED if result is None else result
        else:
            pm.errored += 1
            policy = self.w.error_policy
            metrics.ROWS_ERRORED.labels(step=self.w.stage, policy=policy.value).inc()
            if policy is ErrorPolicy.FAIL_FAST:
                self._failure = StepFailed(
                    f"step {self.w.stage} failed on row source_index={row.get('source_index')} "
                    f"(run {pm.run_id}, {pm.topic}[{pm.partition}]@{pm.offset}): {type(exc).__name__}: {exc}"
                )
                log.error("%s", self._failure)
            elif policy is ErrorPolicy.COLLECT:
                pm.dead_letters.append(
                    dead_letter(
                        step=self.w.stage,
                        error_type=type(exc).__name__,
                        error_message=str(exc),
                        run_id=pm.run_id,
                        row=row,
                        source=(pm.topic, pm.partition, pm.offset),
                    )
                )
        if pm.done:
            pm.finished = time.monotonic()
            metrics.BATCH_SECONDS.labels(**self._labels).observe(pm.finished - pm.started)

    # -- committing ----------------------------------------------------------------------------
    def _commit_ready(self) -> None:
        ready: list[PendingMessage] = []
        offsets: list[TopicPartition] = []
        for (topic, partition), queue in self.pending.items():
            last = None
            while queue and queue[0].done:
                last = queue.popleft()
                ready.append(last)
            if last is not None:
                offsets.append(TopicPartition(topic, partition, last.offset + 1))
        if not ready:
            return
        started = time.monotonic()
        try:
            self.producer.begin_transaction()
            progress = self._emit(ready)
            for store in self.stores.values():
                store.flush_into(self.producer)
            for record in progress.values():
                self._produce(self.w.progress_topic, PROGRESS_SCHEMA, record, key=record["run_id"])
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            self._commit_transaction()
        except KafkaException as exc:
            self._transaction_failed(exc)
            return
        metrics.TRANSACTIONS.labels(step=self.w.stage, outcome="committed").inc()
        metrics.COMMIT_SECONDS.labels(**self._labels).observe(time.monotonic() - started)

    def _commit_transaction(self) -> None:
        for attempt in range(10):
            try:
                self.producer.commit_transaction(30)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or attempt == 9:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _transaction_failed(self, exc: KafkaException) -> None:
        err: KafkaError = exc.args[0]
        metrics.TRANSACTIONS.labels(step=self.w.stage, outcome="aborted").inc()
        if err.fatal():
            # Fenced or otherwise unusable producer: only a new process may continue.
            self._failure = exc
            return
        log.warning("aborting transaction of %s: %s", self.w.stage, err)
        try:
            self.producer.abort_transaction(30)
        except KafkaException as abort_exc:
            self._failure = abort_exc
            return
        self._rewind()

    def _rewind(self) -> None:
        """Forget uncommitted work and re-read it: state from its topics, input from committed offsets."""
        assignment = self.consumer.assignment()
        self._drop_pending(list(self.pending))
        self._reload_state()
        for tp in self.consumer.committed(assignment, timeout=30):
            offset = tp.offset if tp.offset >= 0 else 0
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _emit(self, ready: list[PendingMessage]) -> dict[str, dict[str, Any]]:
        progress: dict[str, dict[str, Any]] = {}
        now_ms = int(time.time() * 1000)
        for pm in ready:
            for record in pm.dead_letters:
                self._produce(self.w.dlq_topic, DEAD_LETTER_SCHEMA, record, key=record["run_id"])
                metrics.DLQ_RECORDS.labels(step=self.w.stage, error_type=record["error_type"]).inc()
            if pm.run_id is None:
                continue
            entry = progress.setdefault(pm.run_id, self._progress_record(pm.run_id, now_ms))
            if pm.marker is not None:
                self._emit_marker(pm, entry)
                continue
            rows = [r for r in pm.outputs if r is not _DROPPED]
            too_large = self._emit_rows(pm, rows)
            entry["rows_in"] += pm.rows
            entry["rows_out"] += len(rows) - too_large
            entry["rows_errored"] += pm.errored + too_large
            entry["rows_dropped"] += pm.rows - len(rows) - pm.errored
            entry["rows_stopped"] += pm.stopped
            entry["batches"] += 1
            if pm.stopped < pm.rows:  # a wholly stopped batch did no work worth timing
                entry["batch_seconds"].append((pm.finished or pm.started) - pm.started)
            room = MAX_ROW_SAMPLES - len(entry["row_seconds"])
            entry["row_seconds"].extend(pm.row_seconds[: max(room, 0)])
            metrics.ROWS_OUT.labels(**self._labels).inc(len(rows) - too_large)
            metrics.ROWS_DROPPED.labels(**self._labels).inc(pm.rows - len(rows) - pm.errored)
            metrics.ROWS_STOPPED.labels(**self._labels).inc(pm.stopped)
        return progress

    def _progress_record(self, run_id: str, now_ms: int) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "stage": self.w.stage,
            "producer": self.settings.instance_id,
            "rows_in": 0,
            "rows_out": 0,
            "rows_dropped": 0,
            "rows_errored": 0,
            "rows_stopped": 0,
            "batches": 0,
            "batch_seconds": [],
            "row_seconds": [],
            "partitions_ended": [],
            "input_partitions": self.input_partitions,
            "first_ms": now_ms,
            "last_ms": now_ms,
        }

    def _emit_rows(self, pm: PendingMessage, rows: list[Row]) -> int:
        """Produces the rows; returns how many were dead-lettered as too large for any message."""
        if not rows or self.w.output_topic is None:
            return 0
        groups: dict[int, list[Row]] = defaultdict(list)
        for row in rows:
            groups[self._output_partition(pm.partition, row)].append(row)
        lineage = [*pm.lineage, self.signature]
        too_large: list[tuple[Row, int]] = []
        for partition, group in sorted(groups.items()):
            too_large += self._produce_batch(pm.run_id or "", partition, lineage, group, None)
        for row, size in too_large:
            record = dead_letter(
                step=self.w.stage,
                error_type="MessageTooLarge",
                error_message=too_large_message(size, self.kafka.max_message_bytes),
                run_id=pm.run_id,
                row=row,
                source=(pm.topic, pm.partition, pm.offset),
            )
            self._produce(self.w.dlq_topic, DEAD_LETTER_SCHEMA, record, key=record["run_id"])
            metrics.DLQ_RECORDS.labels(step=self.w.stage, error_type=record["error_type"]).inc()
        return len(too_large)

    def _output_partition(self, input_partition: int, row: Row) -> int:
        if self.w.partition_by is None:
            return input_partition % self.output_partitions
        return zlib.crc32(str(row[self.w.partition_by]).encode()) % self.output_partitions

    def _emit_marker(self, pm: PendingMessage, entry: dict[str, Any]) -> None:
        marker = pm.marker or {}
        run_id = pm.run_id or ""
        if not self.tracker.observe(
            run_id, pm.partition, marker["source_partition"], marker["source_partitions"]
        ):
            self._persist_marker(run_id, pm.partition)
            return
        self._persist_marker(run_id, pm.partition)
        entry["partitions_ended"].append(pm.partition)
        metrics.RUNS_ENDED.labels(**self._labels).inc()
        if self.w.output_topic is not None:
            eor = {
                "source_partition": pm.partition,
                "source_partitions": self.input_partitions,
                "rows_before": 0,
            }
            for partition in range(self.output_partitions):
                self._produce_batch(run_id, partition, [*pm.lineage, self.signature], [], eor)

    def _persist_marker(self, run_id: str, partition: int) -> None:
        assert self._markers_store is not None
        token = CURRENT_PARTITION.set(partition)
        try:
            self._markers_store.put(
                MarkerTracker.key(run_id, partition), self.tracker.entry(run_id, partition)
            )
        finally:
            CURRENT_PARTITION.reset(token)

    def _produce_batch(
        self, run_id: str, partition: int, lineage: list[str], rows: list[Row], eor: dict[str, Any] | None
    ) -> list[tuple[Row, int]]:
        """One message, or several where one would exceed the message size; returns the rows that
        fit in no message, with their size."""
        assert self.w.output_topic is not None and self.w.output_schema is not None
        schema = self.w.output_schema

        def encode(part: list[Row]) -> bytes:
            record = {
                "run_id": run_id,
                "stage": self.w.stage,
                "producer": self.settings.instance_id,
                "batch_seq": self._seq,
                "lineage": lineage,
                "rows": part,
                "end_of_run": eor,
            }
            self._seq += 1
            return self.serde.encode(schema, record)

        values, too_large = fit(rows, encode, self.kafka.max_message_bytes - MESSAGE_OVERHEAD)
        for value in values:
            clients.produce(self.producer, self.w.output_topic, value, run_id, partition)
        return too_large

    def _produce(
        self,
        topic: str,
        schema: str,
        record: dict[str, Any],
        *,
        key: str | None,
        partition: int | None = None,
    ) -> None:
        clients.produce(self.producer, topic, self.serde.encode(schema, record), key, partition)

    # -- rebalances and state ------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s assigned %s", self.w.stage, [p.partition for p in partitions])
        self._reload_state()
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s revoked %s", self.w.stage, [p.partition for p in partitions])
        if self._failure is None:
            self._commit_ready()
        self._drop_pending([(p.topic, p.partition) for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("%s lost %s", self.w.stage, [p.partition for p in partitions])
        self._drop_pending([(p.topic, p.partition) for p in partitions])

    def _drop_pending(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            for pm in self.pending.pop(key, ()):
                for task in pm.tasks:
                    task.cancel()

    def _reload_state(self) -> None:
        for store in self.stores.values():
            store.reload(self.kafka)
        self._restore_tracker()

    def _restore_tracker(self) -> None:
        self.tracker = MarkerTracker()
        assert self._markers_store is not None
        for key, value in self._markers_store.data.items():
            try:
                run_id, partition = MarkerTracker.parse_key(key)
                self.tracker.restore(run_id, partition, value)
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                # Not written by a service: skipped (every restore would meet it again), not a crash loop.
                log.warning("%s skips a malformed marker entry %r: %r", self.w.stage, key[:200], exc)

    # -- observability -------------------------------------------------------------------------
    def _report_gauges(self) -> None:
        buffered = self._buffered_rows()
        metrics.BUFFERED.labels(**self._labels).set(buffered)
        metrics.BUFFERED_MAX.labels(**self._labels).set(self.buffered_max)
        metrics.IN_FLIGHT.labels(**self._labels).set(self._in_flight)

    def _maybe_report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_check < 5:
            return
        self._last_lag_check = now
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.position(assignment):
            # The high watermark of the last fetch response: a broker round trip here would wait
            # behind the consumer's long-poll fetch and freeze the loop for seconds.
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                continue  # nothing fetched from this partition yet
            lag = high - tp.offset if tp.offset >= 0 else high
            metrics.CONSUMER_LAG.labels(step=self.w.stage, topic=tp.topic, partition=str(tp.partition)).set(
                lag
            )
