"""One step as a service: exactly-once consume → process → produce, over any `Transport`.

Per input message (a batch of rows) the runner decodes, runs the step on every row
(asynchronous steps: many rows at once, up to `max_in_flight`), and holds the outcome until
every earlier message of the same partition is complete. Every `commit_interval_s` the
completed prefix of each partition goes out in one transaction: output batches, dead
letters, state-store writes, the progress record and the consumed offsets. A crash at any
point therefore either publishes all of a message's effects or none of them.

Nothing here knows Kafka: `shared.kafka.transport.KafkaTransport` moves the bytes, and the
unit tests drive the same code through an in-memory transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared import metrics
from shared.pipeline import ErrorPolicy
from shared.runtime.dead_letter import dead_letter
from shared.runtime.emit import Emitter, Settled, StageStats
from shared.runtime.liveness import Liveness
from shared.runtime.markers import MarkerTracker
from shared.runtime.pause import PauseControl, PauseDecision
from shared.runtime.pending import PartitionQueues, PendingMessage, Tally
from shared.runtime.state import CURRENT_INPUT, CURRENT_PARTITION, CURRENT_RUN, StateBackend, StateStore
from shared.runtime.transport import (
    InputRecord,
    OutputRecord,
    TopicPartition,
    TransactionAborted,
    Transport,
    TransportFatal,
)
from shared.runtime.wiring import Member, Wiring
from shared.serde import AvroSerde, UndecodableMessage
from shared.step import AsyncStep, Finished, Row, Step

log = logging.getLogger(__name__)

#: The Kafka header naming the step a replayed record was re-produced for (fastdistill.replay).
REPLAY_FROM_STEP = "fd-from-step"


#: A loop that has not turned for this long is reported unhealthy (the watchdog waits longer).
HEALTH_LOOP_LIMIT_S = 30.0


class StepFailed(RuntimeError):
    """A row raised under FAIL_FAST: the service stops without committing that message."""


class RunControl(Protocol):
    """Which runs are stopped, and which were produced with `--no-cache`
    (shared.kafka.control.ControlView tails the control topic)."""

    stopped: set[str]

    def poll(self, timeout: float = 0) -> None: ...

    def cache_enabled(self, run_id: str) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunnerSettings:
    instance_id: str
    commit_interval_s: float = 0.1
    #: grace on stop for rows already in flight
    shutdown_grace_s: float = 10.0
    #: a full buffer held this long pauses the partitions (see shared.runtime.pause)
    pause_after_full_s: float = 5.0
    #: largest message the transport accepts; larger batches are split
    max_message_bytes: int = 1_000_000
    #: holding readable input, not full, and consuming nothing this long is a stall
    progress_stall_s: float = 60.0
    #: how often lag is measured
    lag_every_s: float = 5.0


def _normalise(result: Row | list[Row] | None) -> list[Row]:
    """A step's result for one row as the rows it emits: None drops, a list is one-to-many."""
    if result is None:
        return []
    if isinstance(result, list):
        return result
    return [result]


class _MemberContext:
    """What one step of a chain sees: the runner, with state stores of its own."""

    def __init__(self, runner: StepRunner, member: Member) -> None:
        self.runner = runner
        self.member = member
        self.inputs = runner.inputs

    def state_store(
        self, name: str, *, durable_immediately: bool = False, scope: Literal["run", "global"] = "run"
    ) -> StateStore:
        topic = f"{self.member.state_topic_prefix}.{name}"
        return self.runner.store(topic, durable_immediately=durable_immediately, scope=scope)

    def cache_enabled(self) -> bool:
        return self.runner.cache_enabled()

    def current_input(self) -> str:
        return CURRENT_INPUT.get()

    def current_partition(self) -> int:
        return CURRENT_PARTITION.get()


class StepRunner:
    def __init__(
        self,
        steps: Step[Any] | Sequence[Step[Any]],
        wiring: Wiring,
        serde: AvroSerde,
        transport: Transport,
        state: StateBackend,
        settings: RunnerSettings,
        control: RunControl | None = None,
        clock: Callable[[], float] = time.monotonic,
        stage_stats: Callable[[str], StageStats] | None = None,
    ) -> None:
        #: the service's steps, one per member of the wiring (several: an operator chain)
        self.steps: list[Step[Any]] = [steps] if isinstance(steps, Step) else list(steps)
        if len(self.steps) != len(wiring.members):
            raise ValueError(f"{len(self.steps)} steps for {len(wiring.members)} members of {wiring.stage}")
        if len(self.steps) > 1 and any(isinstance(s, AsyncStep) for s in self.steps):
            raise ValueError(f"{wiring.stage}: an asynchronous step runs alone, not in a chain")
        self.step = self.steps[0]
        self.stage_stats = stage_stats
        self.w = wiring
        self.serde = serde
        self.transport = transport
        self.state = state
        self.settings = settings
        self.control = control
        self.clock = clock
        self.queues = PartitionQueues()
        self.pause = PauseControl(settings.pause_after_full_s)
        self.liveness = Liveness(settings.progress_stall_s, clock)
        self.inputs = [i.stage for i in wiring.inputs]
        self._inputs_by_topic = {i.topic: i for i in wiring.inputs}
        self.tracker = MarkerTracker(len(self.inputs))
        self.stores: dict[str, StateStore] = {}
        self.failure: BaseException | None = None
        self._stopping = False
        #: largest batch seen on the input; until one is seen, messages are taken one at a time
        self._max_message_rows = 0
        self._in_flight = 0
        #: the last poll found nothing new: the input is caught up with
        self._input_drained = False
        self._semaphore = asyncio.Semaphore(wiring.max_in_flight)
        #: set whenever a row settles: what the loop waits on while rows are in flight
        self._row_done = asyncio.Event()
        self._markers: StateStore | None = None
        self._emitter: Emitter | None = None
        self._lag_task: asyncio.Task[dict[TopicPartition, int] | None] | None = None
        self._last_lag_at = -1e9
        self.buffered_max = 0
        #: why the step takes no rows now (Step.ready()), None while it does
        self.held: str | None = None
        self._labels = {"step": wiring.stage}
        self._row_seconds = metrics.ROW_SECONDS.labels(**self._labels)

    # -- what steps see ------------------------------------------------------------------------
    def state_store(
        self, name: str, *, durable_immediately: bool = False, scope: Literal["run", "global"] = "run"
    ) -> StateStore:
        """A store of the service's first step (the runner's own markers live here too)."""
        topic = f"{self.w.state_topic_prefix}.{name}"
        return self.store(topic, durable_immediately=durable_immediately, scope=scope)

    def store(self, topic: str, *, durable_immediately: bool, scope: Literal["run", "global"]) -> StateStore:
        if topic not in self.stores:
            self.state.ensure(topic, self.transport.partition_count(self.w.inputs[0].topic))
            store = StateStore(
                topic,
                durable_immediately=durable_immediately,
                write_now=self.transport.produce_now,
                flush_now=self.transport.flush_now,
                per_run=scope == "run",
            )
            store.reload(self.state)
            self.stores[topic] = store
        return self.stores[topic]

    def cache_enabled(self) -> bool:
        # CURRENT_RUN is the run of the row being processed (set before its task is made).
        return self.control is None or self.control.cache_enabled(CURRENT_RUN.get())

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            self._start()
            await self._loop()
        finally:
            await self._shutdown()
            for step in self.steps:
                step.close()
        if self.failure is not None:
            raise self.failure

    def _start(self) -> None:
        self._markers = self.state_store("markers", scope="global")
        self._restore_tracker()
        if len(self.steps) == 1:
            self.step.open(self)
        else:
            for step, member in zip(self.steps, self.w.members, strict=True):
                step.open(_MemberContext(self, member))
        self._emitter = Emitter(
            self.w,
            self.serde,
            signatures=[step.signature() for step in self.steps],
            instance_id=self.settings.instance_id,
            max_message_bytes=self.settings.max_message_bytes,
            input_partitions=self.transport.partition_count(self.w.inputs[0].topic),
            output_partitions={
                m.topic: self.transport.partition_count(m.topic)
                for m in self.w.members
                if m.topic is not None
            },
            stage_stats=self.stage_stats,
        )
        self.transport.start(self)

    def current_input(self) -> str:
        return CURRENT_INPUT.get()

    def current_partition(self) -> int:
        return CURRENT_PARTITION.get()

    def stop(self) -> None:
        log.info("stop requested for %s", self.w.stage)
        self._stopping = True

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def health(self) -> dict[str, Any]:
        stalled = self.liveness.problem(HEALTH_LOOP_LIMIT_S)
        return {
            "ok": stalled is None and self.failure is None,
            "step": self.w.stage,
            "stalled": stalled,
            "held": self.held,
            "buffered_rows": self.queues.buffered_rows(),
            "in_flight": self._in_flight,
            "paused": sorted(p for _, p in self.pause.paused),
            "assigned": sorted(p for _, p in self.transport.assignment()),
            "lag": self.liveness.lag_total,
        }

    def stalled(self, loop_limit_s: float) -> str | None:
        """Why this instance is stuck (for the watchdog), or None."""
        return self.liveness.problem(loop_limit_s)

    async def _loop(self) -> None:
        interval = self.settings.commit_interval_s
        last_commit = self.clock()
        while not self._stopping:
            self.liveness.beat()
            self._consume_some()
            if self._in_flight:
                await self._wait_for_rows(min(interval, 0.05))
            else:
                await asyncio.sleep(0)
            # Caught up with the input, a stage commits what is done at once: waiting out the
            # interval there only delays the run's last rows, by up to an interval per stage.
            caught_up = self._input_drained and not self._in_flight and self.queues.any_done()
            if caught_up or self.clock() - last_commit >= interval:
                self._commit_ready()
                last_commit = self.clock()
                self._report_gauges()
            self._measure_lag()
            if self.failure is not None:
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
        deadline = self.clock() + self.settings.shutdown_grace_s
        while self.failure is None and self._in_flight and self.clock() < deadline:
            await self._wait_for_rows(0.1)
        if self.failure is None:
            self._commit_ready()
        self.queues.drop_all()
        if self._lag_task is not None:
            self._lag_task.cancel()
        self.transport.close()
        if self.control is not None:
            self.control.close()

    # -- consuming -----------------------------------------------------------------------------
    def _consume_some(self) -> None:
        buffered = self.queues.buffered_rows()
        room = self.w.max_buffered_rows - buffered
        fits = room // self._max_message_rows if self._max_message_rows else min(room, 1)
        if fits < 1 and buffered == 0:
            fits = 1  # a message larger than the cap still has to go through, alone
        self._update_held()
        # A step that is not ready is held like a full buffer: nothing consumed (so nothing new
        # committed or dead-lettered), partitions paused if it lasts, and not a stall.
        full = fits < 1 or self.held is not None
        self.liveness.full = full
        self._apply(self.pause.update(full, self.clock()))
        if not full:
            # Blocking is fine while no row is in flight; otherwise just look and go back to the rows.
            timeout = 0 if self._in_flight else min(0.05, self.settings.commit_interval_s)
            self._take(self.transport.poll(min(fits, 100), timeout))
        elif self.pause.any_paused or self._held_unassigned():
            # Paused, consume() still serves rebalance callbacks; holding briefly, not even that.
            self._take(self.transport.poll(1, 0))
        self.buffered_max = max(self.buffered_max, self.queues.buffered_rows())
        if self.control is not None:
            self.control.poll()

    def _held_unassigned(self) -> bool:
        """Held long with no partitions yet (a step not ready from the start): consume() must still
        run to join the group, whose assignment then arrives paused (PauseControl.on_assigned)."""
        return (
            self.held is not None
            and self.pause.holding_long(self.clock())
            and not self.transport.assignment()
        )

    def _update_held(self) -> None:
        # A chain is held while any of its steps is not ready.
        held = next((reason for step in self.steps if (reason := step.ready()) is not None), None)
        if (held is None) != (self.held is None):
            metrics.HELD.labels(**self._labels).set(int(held is not None))
            if held is None:
                log.info("%s takes rows again", self.w.stage)
            else:
                log.warning("%s holds its input: %s", self.w.stage, held)
        self.held = held

    def _apply(self, decision: PauseDecision) -> None:
        if decision.pause:
            self.transport.pause(decision.pause)
        if decision.resume:
            self.transport.resume(decision.resume)
        if decision.pause or decision.resume:
            metrics.PAUSED.labels(**self._labels).set(len(self.pause.paused))

    def _take(self, records: list[InputRecord]) -> None:
        self._input_drained = not records
        if records:
            self.liveness.consumed()
        for record in records:
            self._accept(record)

    def _accept(self, msg: InputRecord) -> None:
        source = self._inputs_by_topic[msg.topic]
        pm = PendingMessage(
            msg.topic,
            msg.partition,
            msg.offset,
            self.clock(),
            source=source.stage,
            timestamp_ms=msg.timestamp_ms,
        )
        self.queues.append(pm)
        replayed_from = msg.header(REPLAY_FROM_STEP)
        if replayed_from is not None and replayed_from not in self.w.replay_scope:
            return  # a replay from a step this one does not feed: not this step's run (no run id)
        try:
            schema, record = self.serde.decode(msg.value, expect=source.schema)
            if schema != source.schema:
                raise UndecodableMessage(
                    f"a {schema} record is not input of step {self.w.stage} (expected {source.schema})"
                )
        except UndecodableMessage as exc:
            pm.dead_letters.append(
                dead_letter(
                    step=self.w.stage,
                    error_type="UndecodableMessage",
                    error_message=str(exc),
                    raw=msg.value or b"",
                    source=msg.source,
                )
            )
            return
        pm.run_id = record["run_id"]
        pm.lineage = record["lineage"]
        pm.origin_ms = record.get("origin_ms") or 0
        if record["end_of_run"] is not None:
            pm.marker = record["end_of_run"]
            return
        rows: list[Row] = record["rows"]
        if source.accepts is not None:
            # Routed: the rows of this stage meant for another successor are not this step's input.
            rows = [row for row in rows if source.accepts(row)]
        pm.outputs = [[] for _ in rows]
        pm.tallies = [Tally() for _ in self.steps]
        self._max_message_rows = max(self._max_message_rows, len(rows))
        metrics.ROWS_IN.labels(**self._labels).inc(len(rows))
        if self._stopped(pm.run_id):
            # nothing left to process: the message is complete as it is
            first = pm.tallies[0]
            first.rows_in = first.stopped = first.dropped = len(rows)
            return
        pm.remaining = len(rows)
        CURRENT_PARTITION.set(pm.partition)
        CURRENT_RUN.set(pm.run_id or "")
        CURRENT_INPUT.set(source.stage)
        if isinstance(self.step, AsyncStep):
            for i, row in enumerate(rows):
                pm.tasks.append(asyncio.ensure_future(self._process_async(self.step, pm, i, row)))
            return
        self._process_sync(pm, rows)

    def _process_sync(self, pm: PendingMessage, rows: list[Row]) -> None:
        """Every row of the message through the service's steps, a step at a time (one step, or a
        chain), each step's accounting on its own tally. The hot path of a CPU step: one call
        and one try per row, the tallies counted once per step."""
        assert self._emitter is not None
        slots: list[list[Row]] = [[row] for row in rows]
        for k, (step, member) in enumerate(zip(self.steps, self.w.members, strict=True)):
            process, tally = step.process_row, pm.tallies[k]
            seen = out = dropped = errored = 0
            for i, current in enumerate(slots):
                emitted: list[Row] = []
                for one in current:
                    seen += 1
                    try:
                        result = process(one)
                    except Exception as exc:
                        errored += 1
                        self._on_row_error(pm, member, one, exc)
                        if self.failure is not None:
                            return
                        continue
                    if result is None:
                        dropped += 1
                    elif type(result) is list:
                        emitted += result
                        dropped += not result
                    else:
                        emitted.append(result)  # type: ignore[arg-type]
                out += len(emitted)
                slots[i] = emitted
            tally.rows_in, tally.rows_out, tally.dropped, tally.errored = seen, out, dropped, errored
            if self._emitter.keeps_rows(k):
                tally.rows = [row for slot in slots for row in slot]
        pm.outputs = slots
        pm.remaining = 0
        pm.finished = self.clock()
        metrics.BATCH_SECONDS.labels(**self._labels).observe(pm.finished - pm.started)

    def _stopped(self, run_id: str | None) -> bool:
        return self.control is not None and run_id in self.control.stopped

    async def _process_async(self, step: AsyncStep[Any], pm: PendingMessage, i: int, row: Row) -> None:
        tally = pm.tallies[0]
        async with self._semaphore:
            if self._stopped(pm.run_id):
                # Rows queued behind the in-flight cap when the stop arrives cost nothing.
                tally.rows_in += 1
                tally.stopped += 1
                tally.dropped += 1
                self._settle(pm, i, [])
                return
            self._in_flight += 1
            started = self.clock()
            tally.rows_in += 1
            try:
                result = await step.process_row_async(dict(row))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                tally.errored += 1
                self._on_row_error(pm, self.w.members[0], row, exc)
                self._settle(pm, i, [])
            else:
                rows = _normalise(result)
                tally.rows_out += len(rows)
                tally.dropped += not rows
                self._settle(pm, i, rows)
            finally:
                self._in_flight -= 1
                elapsed = self.clock() - started
                pm.row_seconds.append(elapsed)
                self._row_seconds.observe(elapsed)

    def _settle(self, pm: PendingMessage, i: int, rows: list[Row]) -> None:
        pm.remaining -= 1
        self._row_done.set()
        pm.outputs[i] = rows
        if pm.done:
            pm.finished = self.clock()
            metrics.BATCH_SECONDS.labels(**self._labels).observe(pm.finished - pm.started)

    def _on_row_error(self, pm: PendingMessage, member: Member, row: Row, exc: Exception) -> None:
        policy = member.error_policy
        metrics.ROWS_ERRORED.labels(step=member.stage, policy=policy.value).inc()
        if policy is ErrorPolicy.FAIL_FAST:
            self.failure = StepFailed(
                f"step {member.stage} failed on row source_index={row.get('source_index')} "
                f"(run {pm.run_id}, {pm.topic}[{pm.partition}]@{pm.offset}): {type(exc).__name__}: {exc}"
            )
            log.error("%s", self.failure)
        elif policy is ErrorPolicy.COLLECT:
            pm.dead_letters.append(
                dead_letter(
                    step=member.stage,
                    error_type=type(exc).__name__,
                    error_message=str(exc),
                    run_id=pm.run_id,
                    row=row,
                    source=(pm.topic, pm.partition, pm.offset),
                )
            )

    # -- committing ----------------------------------------------------------------------------
    def _commit_ready(self) -> None:
        ready, offsets = self.queues.take_ready()
        if not ready:
            return
        assert self._emitter is not None and self._markers is not None
        started = self.clock()
        records: list[OutputRecord] = self._emitter.emit(ready, self.tracker, self._markers, self._finish)
        for store in self.stores.values():
            records.extend(store.drain())
        try:
            self.transport.transact(records, offsets)
        except TransactionAborted as exc:
            metrics.TRANSACTIONS.labels(step=self.w.stage, outcome="aborted").inc()
            log.warning("transaction of %s aborted, re-reading from the last commit: %s", self.w.stage, exc)
            self._rewind()
            return
        except TransportFatal as exc:
            metrics.TRANSACTIONS.labels(step=self.w.stage, outcome="aborted").inc()
            log.error("%s cannot go on: %s", self.w.stage, exc)
            self.failure = exc
            return
        metrics.TRANSACTIONS.labels(step=self.w.stage, outcome="committed").inc()
        metrics.COMMIT_SECONDS.labels(**self._labels).observe(self.clock() - started)

    def _finish(self, run_id: str, partition: int) -> list[Settled]:
        """Per step of the service, what it still holds for a drained partition (as rows, and
        dead letters); what an earlier step of a chain releases goes through the later ones. A
        failure is a dead letter of the run: the marker goes on either way, so the run can end."""
        run_token, partition_token = CURRENT_RUN.set(run_id), CURRENT_PARTITION.set(partition)
        settled: list[Settled] = []
        carried: list[Row] = []
        try:
            for k, (step, member) in enumerate(zip(self.steps, self.w.members, strict=True)):
                # rows released upstream go through this step first, on a scratch message
                scratch = PendingMessage("", partition, -1, self.clock(), run_id=run_id)
                scratch.tallies = [Tally() for _ in self.steps]
                passed = [out for row in carried for out in self._one_step(scratch, k, row)]
                letters = list(scratch.dead_letters)
                try:
                    done = step.finish(run_id, partition)
                except Exception as exc:
                    log.error(
                        "%s: finishing run %s partition %d failed: %r", member.stage, run_id, partition, exc
                    )
                    done = Finished()
                    letters.append(
                        dead_letter(
                            step=member.stage,
                            error_type=type(exc).__name__,
                            error_message=f"finishing partition {partition} of the run: {exc}",
                            run_id=run_id,
                        )
                    )
                if isinstance(done, list):
                    done = Finished(rows=done)
                letters += [
                    dead_letter(
                        step=member.stage, error_type=error_type, error_message=reason, run_id=run_id, row=row
                    )
                    for row, error_type, reason in done.rejected
                ]
                settled.append(Settled(passed + done.rows, letters, rows_in=len(carried)))
                carried = passed + done.rows
            return settled
        finally:
            CURRENT_RUN.reset(run_token)
            CURRENT_PARTITION.reset(partition_token)

    def _one_step(self, pm: PendingMessage, k: int, row: Row) -> list[Row]:
        """One step (the k-th) on one row, errors handled by that step's policy."""
        try:
            return _normalise(self.steps[k].process_row(row))
        except Exception as exc:
            self._on_row_error(pm, self.w.members[k], row, exc)
            return []

    def _rewind(self) -> None:
        """Forget uncommitted work and re-read it: state from its topics, input from committed offsets."""
        self.queues.drop_all()
        self._reload_state()
        self.transport.rewind()

    # -- rebalances and state ------------------------------------------------------------------
    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        log.info("%s assigned %s", self.w.stage, sorted(p for _, p in partitions))
        self._reload_state()
        self._apply(self.pause.on_assigned(partitions, self.clock()))
        self.liveness.consumed()  # a fresh assignment starts its own clock

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        log.info("%s revoked %s", self.w.stage, sorted(p for _, p in partitions))
        if self.failure is None:
            self._commit_ready()
        self.queues.drop(partitions)
        self.pause.on_removed(partitions)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        log.warning("%s lost %s", self.w.stage, sorted(p for _, p in partitions))
        self.queues.drop(partitions)
        self.pause.on_removed(partitions)

    def _reload_state(self) -> None:
        for store in self.stores.values():
            store.reload(self.state)
        self._restore_tracker()

    def _restore_tracker(self) -> None:
        self.tracker = MarkerTracker(len(self.inputs))
        assert self._markers is not None
        for key, value in self._markers.data.items():
            try:
                run_id, partition = MarkerTracker.parse_key(key)
                self.tracker.restore(run_id, partition, value)
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                # Not written by a service: skipped (every restore would meet it again), not a crash loop.
                log.warning("%s skips a malformed marker entry %r: %r", self.w.stage, key[:200], exc)

    # -- observability -------------------------------------------------------------------------
    def _report_gauges(self) -> None:
        metrics.BUFFERED.labels(**self._labels).set(self.queues.buffered_rows())
        metrics.BUFFERED_MAX.labels(**self._labels).set(self.buffered_max)
        metrics.IN_FLIGHT.labels(**self._labels).set(self._in_flight)

    def _measure_lag(self) -> None:
        """Cached lag every few seconds for the metrics; a fresh one, off the loop, when nothing
        came in for a while although there is room (the liveness check needs the broker's word)."""
        now = self.clock()
        if self._lag_task is not None and self._lag_task.done():
            task, self._lag_task = self._lag_task, None
            if not task.cancelled() and task.exception() is None:
                self.liveness.measured(task.result(), now)
        if now - self._last_lag_at < self.settings.lag_every_s:
            return
        self._last_lag_at = now
        lag = self.transport.lag()
        if lag:
            for (topic, partition), value in lag.items():
                metrics.CONSUMER_LAG.labels(step=self.w.stage, topic=topic, partition=str(partition)).set(
                    value
                )
        if self._lag_task is None and self.liveness.wants_fresh_lag(bool(self.transport.assignment())):
            self._lag_task = asyncio.ensure_future(asyncio.to_thread(self.transport.lag, True))
