"""The sink: turns a run's rows on the released stages' topics into dataset files, released by
the gate.

Every released stage (`sink.stages`, default the pipeline's leaves) is a named subset. Its rows
are routed as they arrive into parts (kept rows by split, rejected rows; `services.sink.subsets`)
and staged in their released form (`services.sink.staging`), so that once the run drains the
files are a merge of what is staged, not a rewrite of every row. The stage topics are the
durable staging area: offsets are committed only up to the first message of the oldest run not
yet released, so after a crash the sink wipes the staging of unfinished runs and re-reads them
whole. A drained run's files are written into `<out>/<pipeline>/<run>/.pending/` and moved into
place when the coordinator's gate verdict passes (or under `gate-rejected/`), with the dataset
card (from the run state the coordinator publishes on the runs topic) and RELEASED.json
(`services.sink.release`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from fastdistill.plan import PipelinePlan
from services.sink import card
from services.sink.formats import SinkFormat, build_format
from services.sink.release import (
    CARD,
    PENDING,
    PIPELINE_YAML,
    REJECTED,
    RELEASED,
    PendingRelease,
    finish,
    write_pending,
)
from services.sink.subsets import SubsetStaging, released_stages
from shared import metrics
from shared.config import KafkaSettings, ServiceSettings
from shared.kafka import clients
from shared.kafka.control import ControlView
from shared.kafka.state import committed_offsets
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.runtime.health import serving
from shared.runtime.markers import MarkerTracker
from shared.runtime.poll_loop import PollLoop
from shared.runtime.watchdog import watchdog
from shared.serde import AvroSerde, UndecodableMessage
from shared.topic_schema import dataset_columns

log = logging.getLogger(__name__)

#: Offsets not committed for this long while commits fail: the consumer is rebuilt. A broker
#: frozen (SIGSTOP) past every session left librdkafka's consumer waiting for its group
#: coordinator for good ("Commit failed: Local: Waiting for coordinator" every 7 s for minutes)
#: while a new consumer of the same group commits at once.
COMMIT_STUCK_S = 30.0
#: /healthz says not ok when the loop has not turned for this long
HEALTH_LOOP_LIMIT_S = 30.0

#: glibc's mallopt parameter and the size from which allocations get their own mapping.
_M_MMAP_THRESHOLD = -3
_MMAP_FROM = 128 * 1024


def _fixed_mmap_threshold() -> None:
    """Large allocations (Arrow buffers, a run's temporaries) mapped on their own, so freeing
    them gives the memory back. glibc raises its threshold after the first large free, after
    which such buffers come from the heap and stay part of the RSS once freed (measured on 300k
    rows: 228 -> 205 MB peak). Not glibc: nothing to do."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)
    except (OSError, AttributeError, TypeError):
        pass


def _where(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (always set on one without error)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


@dataclass
class StageInput:
    stage: str
    topic: str
    schema: str
    columns: list[str]
    partitions: int = 0
    tracker: MarkerTracker = field(default_factory=MarkerTracker)


@dataclass
class OpenRun:
    run_id: str
    subsets: dict[str, SubsetStaging]
    #: (topic, partition) -> offset of the run's first message there
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: the run's files under `.pending`, once it drained
    pending: PendingRelease | None = None


class SinkService:
    def __init__(self, plan: PipelinePlan, serde: AvroSerde, kafka: KafkaSettings, settings: ServiceSettings):
        self.plan = plan
        self.spec = plan.spec
        self.serde = serde
        self.kafka = kafka
        self.settings = settings
        stages = released_stages(self.spec)
        self.inputs = {
            self.spec.topic(stage): StageInput(
                stage,
                self.spec.topic(stage),
                plan.schema_name(stage),
                dataset_columns(plan.fields[stage]),
            )
            for stage in stages
        }
        #: the subset a run's limit (early stop) counts: the final stage, when released
        self.primary = self.spec.primary_leaf if self.spec.primary_leaf in stages else stages[-1]
        self.formats: list[SinkFormat] = [build_format(n, o) for n, o in self.spec.sink.format_entries()]
        self.root = Path(self.spec.sink.output_dir) / self.spec.name
        self.staging = self.root / ".staging"
        self.runs: dict[str, OpenRun] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        #: run -> its latest state on the runs topic (raw), for the dataset card
        self.run_states: dict[str, bytes] = {}
        self.released: set[str] = set()
        self.loop = PollLoop()
        #: when offsets were last committed (or there were none to commit)
        self.committed_at = time.monotonic()
        #: (topic, partition) -> where reading started (the committed offset), for a rebuild
        self.started_at: dict[tuple[str, int], int] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        # Arrow's default pool (mimalloc) keeps freed row groups' memory; the system allocator
        # hands it back, which keeps a long-lived sink's RSS flat from run to run.
        pa.set_memory_pool(pa.system_memory_pool())
        _fixed_mmap_threshold()
        limit = self.settings.stall_limit_s
        async with (
            serving(self.settings.metrics_host, self.settings.metrics_port, self.health, self.stop),
            watchdog("sink", lambda: self.problem(limit, limit)),
        ):
            # Everything not finished is re-read from the committed offsets, so its staging must go.
            shutil.rmtree(self.staging, ignore_errors=True)
            self.consumer: Consumer = self._new_consumer()
            self.gates: Consumer = clients.consumer(self.kafka, f"fd.{self.spec.name}.sink-gates")
            self.states: Consumer = clients.consumer(self.kafka, f"fd.{self.spec.name}.sink-runs")
            # Dead letters are flushed before the offsets past them are committed: at least once.
            self.dlq = clients.producer(self.kafka)
            # A run's limit is written with its seeds, long before its rows drain here; reading
            # the topic to its end first covers a restart that finds drained runs at once.
            self.control = ControlView(self.kafka, self.spec.control_topic)
            self.control.catch_up()
            try:
                assignment = []
                for topic, stage_input in self.inputs.items():
                    stage_input.partitions = clients.partition_count(self.consumer, topic)
                    assignment += [TopicPartition(topic, p) for p in range(stage_input.partitions)]
                committed = committed_offsets(self.consumer, assignment)
                self.started_at = {
                    (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    for tp in committed
                }
                self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.started_at.items()])
                self.gates.assign([TopicPartition(self.spec.gates_topic, 0, OFFSET_BEGINNING)])
                runs_partitions = clients.partition_count(self.states, self.spec.runs_topic)
                self.states.assign(
                    [
                        TopicPartition(self.spec.runs_topic, p, OFFSET_BEGINNING)
                        for p in range(runs_partitions)
                    ]
                )
                await self.loop.run(self._turn, self._commit)
            finally:
                self.consumer.close()
                self.gates.close()
                self.states.close()
                self.control.close()

    def _turn(self) -> None:
        for msg in self.consumer.consume(num_messages=100, timeout=0.05):
            self._on_message(msg)
        for msg in self.gates.consume(num_messages=100, timeout=0):
            self._on_verdict(msg)
        for msg in self.states.consume(num_messages=100, timeout=0):
            self._on_run_state(msg)
        self.control.poll()
        self._release_ready()

    def stop(self) -> None:
        self.loop.stop()

    def health(self) -> dict[str, Any]:
        # Not ok once a rebuilt consumer could not commit either.
        problem = self.problem(HEALTH_LOOP_LIMIT_S, 2 * COMMIT_STUCK_S)
        return {"ok": problem is None, "step": "sink", "stalled": problem, "open_runs": len(self.runs)}

    def problem(self, loop_limit_s: float, commit_limit_s: float) -> str | None:
        """Why the sink makes no progress (its loop stopped, or no commit succeeds), or None."""
        if (stalled := self.loop.stalled_for()) > loop_limit_s:
            return f"loop stalled for {stalled:.0f} s (limit {loop_limit_s:.0f} s)"
        if (uncommitted := time.monotonic() - self.committed_at) > commit_limit_s:
            return f"no offsets committed for {uncommitted:.0f} s (limit {commit_limit_s:.0f} s)"
        return None

    # -- data ----------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(str(error))
            return
        topic, partition, offset = _where(msg)
        stage_input = self.inputs[topic]
        try:
            schema, record = self.serde.decode(msg.value() or b"", expect=stage_input.schema)
            if schema != stage_input.schema:
                raise UndecodableMessage(
                    f"a {schema} record is not input of the sink (expected {stage_input.schema})"
                )
        except UndecodableMessage as exc:
            self._dead_letter(msg, exc)
            return
        run_id = record["run_id"]
        if self._finished(run_id):
            return
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = self._open(run_id)
        run.first_offsets.setdefault((topic, partition), offset)
        marker = record["end_of_run"]
        if marker is not None:
            stage_input.tracker.observe(
                run_id, partition, marker["source_partition"], marker["source_partitions"]
            )
            return
        run.subsets[stage_input.stage].add(record["rows"])

    def _open(self, run_id: str) -> OpenRun:
        sink = self.spec.sink
        split = list(sink.split.items()) if sink.split else None
        subsets = {
            s.stage: SubsetStaging(
                s.stage, s.columns, self.staging / run_id / s.stage, sink.select, split, sink.split_by
            )
            for s in self.inputs.values()
        }
        return OpenRun(run_id, subsets)

    def _dead_letter(self, msg: Message, exc: UndecodableMessage) -> None:
        log.warning("sink dead-letters %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        record = dead_letter(
            step="sink",
            error_type=type(exc).__name__,
            error_message=str(exc),
            raw=msg.value() or b"",
            source=_where(msg),
        )
        clients.produce(self.dlq, self.spec.dlq_topic, self.serde.encode(DEAD_LETTER_SCHEMA, record), None)
        metrics.DLQ_RECORDS.labels(step="sink", error_type=record["error_type"]).inc()

    def _finished(self, run_id: str) -> bool:
        if run_id in self.released:
            return True
        run_dir = self.root / run_id
        if (run_dir / RELEASED).exists() or (run_dir / REJECTED).exists():
            self.released.add(run_id)
            return True
        return False

    def _drained(self, run_id: str) -> bool:
        return all(len(s.tracker.drained_partitions(run_id)) >= s.partitions for s in self.inputs.values())

    def _write_pending(self, run: OpenRun) -> PendingRelease:
        started = time.perf_counter()
        pending = write_pending(
            list(run.subsets.values()),
            self.formats,
            self.root / run.run_id / PENDING,
            self.primary,
            # Early stop: of the rows that passed the final stage before the run drained, the
            # N first by source index; a function of that set alone, whatever their arrival.
            self.control.limits.get(run.run_id) if self.primary == self.spec.primary_leaf else None,
        )
        counts = ", ".join(
            f"{s} {v['kept']} kept/{v['rejected']} rejected" for s, v in pending.subsets.items()
        )
        log.info("run %s: %s, staged for release in %.2fs", run.run_id, counts, time.perf_counter() - started)
        return pending

    # -- release -------------------------------------------------------------------------------
    def _on_verdict(self, msg: Message) -> None:
        value = msg.value()
        if msg.error() is not None or value is None:
            return
        try:
            verdict = json.loads(value)
            self.verdicts[verdict["run_id"]] = verdict | {"passed": bool(verdict["passed"])}
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            # Re-read from the start at every restart, so a dead letter here would repeat: logged only.
            log.warning("sink skips a malformed verdict at %s@%s: %r", msg.partition(), msg.offset(), exc)

    def _on_run_state(self, msg: Message) -> None:
        """Kept raw and parsed at release: the coordinator rewrites a run's state at every commit."""
        key, value = msg.key(), msg.value()
        if msg.error() is not None or key is None or value is None:
            return
        run_id = key.decode("utf-8", "replace")
        if not self._finished(run_id):
            self.run_states[run_id] = value

    def _run_state(self, run_id: str) -> dict[str, Any] | None:
        raw = self.run_states.get(run_id)
        if raw is None:
            return None
        try:
            state = json.loads(raw)
        except (ValueError, RecursionError):
            log.warning("sink: the run state of %s is no JSON; the card goes without it", run_id)
            return None
        return {k: v for k, v in state.items() if k != "snapshot"} if isinstance(state, dict) else None

    def _release_ready(self) -> None:
        for run_id, run in list(self.runs.items()):
            if not self._drained(run_id):
                continue
            if run.pending is None:
                run.pending = self._write_pending(run)
                for subset in run.subsets.values():
                    subset.discard()  # merged into `.pending`: the staged runs are spent
            verdict = self.verdicts.get(run_id)
            if self.spec.sink.await_gate and verdict is None:
                continue
            self._finish(run, run.pending, verdict)

    def _finish(self, run: OpenRun, pending: PendingRelease, verdict: dict[str, Any] | None) -> None:
        run_dir = self.root / run.run_id
        passed = verdict is None or verdict["passed"]
        seed_file = self.control.seed_files.get(run.run_id)
        limit = self.control.limits.get(run.run_id)
        if self.spec.sink.card:
            context = card.CardContext(
                self.spec,
                run.run_id,
                card.step_infos(self.spec, self.plan.steps),
                self._run_state(run.run_id),
                verdict,
                seed_file,
                limit,
            )
            (pending.folder / PIPELINE_YAML).write_text(card.pipeline_yaml(self.spec), encoding="utf-8")
            pending.add_file(PIPELINE_YAML)
            (pending.folder / CARD).write_text(card.render(context, pending), encoding="utf-8")
            pending.add_file(CARD)
        status = {
            "run_id": run.run_id,
            "pipeline": self.spec.name,
            "gate": verdict,
            "limit": limit,
            "seed_file": seed_file,
        }
        path, _ = finish(pending, run_dir, passed, status)
        shutil.rmtree(self.staging / run.run_id, ignore_errors=True)
        del self.runs[run.run_id]
        self.run_states.pop(run.run_id, None)
        self.released.add(run.run_id)
        log.info("run %s %s: %s", run.run_id, "released" if passed else "rejected", path)

    def _commit(self) -> None:
        if self.dlq.flush(30):
            log.warning("sink dead letters not yet delivered; offsets stay where they are")
            return
        offsets = []
        for tp in self.consumer.position(self.consumer.assignment()):
            if tp.offset < 0:
                continue
            key = (tp.topic, tp.partition)
            open_firsts = [r.first_offsets[key] for r in self.runs.values() if key in r.first_offsets]
            offsets.append(TopicPartition(tp.topic, tp.partition, min([tp.offset, *open_firsts])))
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # retried on the next round; the offsets only grow
                log.warning("sink commit: %s", exc)
                if (uncommitted := time.monotonic() - self.committed_at) > COMMIT_STUCK_S:
                    self._rebuild_consumer(f"no commit for {uncommitted:.0f} s: {exc}")
                return
        self.committed_at = time.monotonic()

    def _new_consumer(self) -> Consumer:
        """A consumer of the sink's group (its offsets say what is released or staged)."""
        return clients.consumer(self.kafka, f"fd.{self.spec.name}.sink")

    def _rebuild_consumer(self, why: str) -> None:
        """A new consumer of the same group, reading on from where the old one was: what was
        read and not committed stays staged, and the next commit covers it."""
        log.warning("sink: rebuilding its consumer: %s", why)
        resume = {
            (tp.topic, tp.partition): tp.offset
            if tp.offset >= 0
            else self.started_at[(tp.topic, tp.partition)]
            for tp in self.consumer.position(self.consumer.assignment())
        }
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("sink: closing the old consumer: %s", exc)
        self.consumer = self._new_consumer()
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in resume.items()])
        self.started_at = resume
        self.committed_at = time.monotonic()  # the new consumer gets its own COMMIT_STUCK_S
