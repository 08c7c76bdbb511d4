"""The coordinator: per-run progress, end-of-run detection, global steps and quality gates.

It reads every stage topic, the progress topic and the dead-letter topic, and folds them
into per-run aggregates (`services.coordinator.run_state.RunState`). Each commit is one
Kafka transaction holding the changed run states (compacted `runs` topic), any gate
verdicts (compacted `gates` topic) and the consumed offsets, so a coordinator killed at
any point restarts from exactly the state its offsets belong to, and reaches the same
reports and verdicts.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge

from fastdistill.plan import PipelinePlan
from fastdistill.replay import replay_origin
from services.coordinator.export import Series, run_series
from services.coordinator.report_html import render_report
from services.coordinator.run_state import REPORT_HTML, RunState
from shared import metrics
from shared.config import KafkaSettings, ServiceSettings
from shared.kafka import clients, control
from shared.kafka.group import GroupMember
from shared.kafka.state import read_compacted
from shared.kafka.transactions import TransactionalProducer
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.runtime.health import serving
from shared.runtime.poll_loop import PollLoop
from shared.runtime.progress import PROGRESS_SCHEMA
from shared.runtime.transport import OutputRecord, TransactionAborted
from shared.runtime.watchdog import loop_stall, watchdog
from shared.serde import AvroSerde, UndecodableMessage
from shared.topic_schema import dataset_columns

log = logging.getLogger(__name__)

GATE_VERDICTS = Counter("fd_gate_verdicts_total", "Quality gate verdicts", ["pipeline", "verdict"])
GATE_PASSED = Gauge("fd_gate_passed", "1 if the run's gate passed, 0 if it failed", ["pipeline", "run_id"])
RUNS_FINISHED = Counter("fd_runs_finished_total", "Runs whose every stage drained", ["pipeline"])
#: Per-run series (services.coordinator.export), by metric name.
RUN_GAUGES: dict[str, Gauge] = {
    name: Gauge(name, doc, labels)
    for name, doc, labels in (
        (
            "fd_run_stage_rows",
            "Rows of a run at a stage: in, out, dropped, errored, stopped, dead_lettered (progress sums)",
            ["pipeline", "run_id", "stage", "kind"],
        ),
        (
            "fd_run_latency_ms",
            "Per-row latency quantile of a run's stage: queue (message timestamp to commit) or "
            "end_to_end (seed produced to commit)",
            ["pipeline", "run_id", "stage", "kind", "quantile"],
        ),
        (
            "fd_run_end_to_end_ms",
            "Per-row end-to-end latency quantile of a run at the pipeline's leaves",
            ["pipeline", "run_id", "quantile"],
        ),
        (
            "fd_run_quality",
            "Quality metrics of a finished run per stage (final=true: the run's final stage)",
            ["pipeline", "run_id", "stage", "metric", "final"],
        ),
        (
            "fd_run_score",
            "Statistics of a score column of a finished run, at the stage that adds it",
            ["pipeline", "run_id", "stage", "column", "stat"],
        ),
        (
            "fd_run_score_rows",
            "Rows per bin of a score column of a finished run, at the stage that adds it",
            ["pipeline", "run_id", "stage", "column", "bin"],
        ),
    )
}
#: Runs whose series stay exported (the most recently changed): Prometheus keeps the history.
EXPORTED_RUNS = 100


class RunExport:
    """Sets the per-run gauges, removes series a run no longer has, and forgets the oldest runs."""

    def __init__(self, keep: int = EXPORTED_RUNS) -> None:
        self.keep = keep
        self.exported: OrderedDict[str, set[tuple[str, tuple[tuple[str, str], ...]]]] = OrderedDict()

    def apply(self, run_id: str, series: list[Series]) -> None:
        new = {(s.metric, s.labels) for s in series}
        for metric, labels in self.exported.pop(run_id, set()) - new:
            RUN_GAUGES[metric].remove(*(value for _, value in labels))
        for s in series:
            RUN_GAUGES[s.metric].labels(*(value for _, value in s.labels)).set(s.value)
        self.exported[run_id] = new
        while len(self.exported) > self.keep:
            _, old = self.exported.popitem(last=False)
            for metric, labels in old:
                RUN_GAUGES[metric].remove(*(value for _, value in labels))


class CoordinatorService:
    def __init__(self, plan: PipelinePlan, serde: AvroSerde, kafka: KafkaSettings, settings: ServiceSettings):
        self.plan = plan
        self.spec = plan.spec
        self.serde = serde
        self.kafka = kafka
        self.settings = settings
        self.group_id = f"fd.{self.spec.name}.coordinator"
        # Stages inside an operator chain have no topic: their progress records carry their rows' stats.
        self.stage_of_topic = {self.spec.topic(s): s for s in self.spec.stages if plan.written(s)}
        self.unwritten = [s for s in self.spec.stages if not plan.written(s)]
        #: What the manifest hashes of a stage's rows: the columns its dataset files hold.
        self.released_columns = {stage: dataset_columns(plan.fields[stage]) for stage in self.spec.stages}
        self.expected_schema = {
            self.spec.progress_topic: PROGRESS_SCHEMA,
            self.spec.dlq_topic: DEAD_LETTER_SCHEMA,
            **{topic: plan.schema_name(stage) for topic, stage in self.stage_of_topic.items()},
        }
        self.runs: dict[str, RunState] = {}
        self.dirty: set[str] = set()
        #: runs that reached their limit since the last commit: their stop goes out with it
        self.stops: set[str] = set()
        #: run -> limit, from the control topic
        self.limits: dict[str, int] = {}
        #: undecodable records of the topics only the coordinator reads (progress, DLQ)
        self.dead_letters: list[dict[str, Any]] = []
        self.loop = PollLoop()
        self.layouts = plan.quality_layouts()
        self.export = RunExport()

    async def run(self) -> None:
        async with (
            serving(self.settings.metrics_host, self.settings.metrics_port, self.health, self.stop),
            watchdog("coordinator", loop_stall(lambda: self.loop.last_turn_at, self.settings.stall_limit_s)),
        ):
            member_id = f"{self.group_id}-{self.settings.instance_id}"
            self.producer = TransactionalProducer(self.kafka, member_id)
            topics = [
                *self.stage_of_topic,
                self.spec.progress_topic,
                self.spec.dlq_topic,
                self.spec.control_topic,
            ]
            self.group = GroupMember(self.kafka, self.group_id, member_id, topics, self)
            try:
                self.producer.init()
                self._restore()
                self.read_limits()
                self.partitions = {t: clients.partition_count(self.group.consumer, t) for t in topics}
                self.group.subscribe()
                await self.loop.run(self._turn, self._commit)
            finally:
                self.group.close()

    @property
    def consumer(self) -> Consumer:
        return self.group.consumer

    def _turn(self) -> None:
        for msg in self.group.consume(500, 0.1):
            self._on_message(msg)
        self._stop_limited()
        self._finish_drained()

    def stop(self) -> None:
        self.loop.stop()

    def health(self) -> dict[str, Any]:
        return {
            "ok": self.loop.stalled_for() < 30,
            "step": "coordinator",
            "runs": {r: s.status for r, s in self.runs.items()},
        }

    # -- state ---------------------------------------------------------------------------------
    def _restore(self) -> None:
        """The run states as last committed (all of them, or, if the topic cannot be read, the
        state is left as it was and the error raised)."""
        runs: dict[str, RunState] = {}
        for run_id, value in read_compacted(self.kafka, self.spec.runs_topic).items():
            try:
                runs[run_id] = RunState.from_json(json.loads(value)["snapshot"], self.layouts)
            except Exception as exc:
                # A foreign record must not stop every restart; it is re-read at every restore, so
                # a dead letter would repeat: logged only.
                log.warning(
                    "coordinator skips malformed state of run %r: %s: %s", run_id, type(exc).__name__, exc
                )
        self.runs = runs
        self.dirty.clear()
        self.dead_letters.clear()
        self.stops.clear()
        for state in self.runs.values():
            self._export_metrics(state)

    def read_limits(self) -> None:
        """The limits written before this start: a run first met on a stage topic gets its limit
        at once, in whatever order the topics are read."""
        for record in control.read_all(self.kafka, self.spec.control_topic):
            if record["limit"] is not None:
                self.limits[record["run_id"]] = record["limit"]

    def _run(self, run_id: str) -> RunState:
        if run_id not in self.runs:
            self.runs[run_id] = RunState.new(
                run_id,
                self.spec.stages,
                self._partitions_by_stage(),
                self.spec.primary_leaf,
                unwritten=self.unwritten,
                layouts=self.layouts,
            )
            if run_id in self.limits:
                self.runs[run_id].set_limit(self.limits[run_id])
        self.dirty.add(run_id)
        return self.runs[run_id]

    def _partitions_by_stage(self) -> dict[str, int]:
        # an unwritten stage has its chain's partitions: those of the topic the chain reads
        return {
            stage: self.partitions.get(self.spec.topic(stage), self.spec.partitions)
            for stage in self.spec.stages
        }

    # RebalanceListener: the state is re-read on every assignment, committed before a revoke.
    def on_assigned(self, partitions: list[tuple[str, int]]) -> None:
        self._restore()

    def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        self._commit()

    def on_lost(self, partitions: list[tuple[str, int]]) -> None:
        """Nothing may be committed; the next assignment re-reads the committed state."""

    # -- input ---------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        topic, partition, _ = clients.position(msg)  # group.consume hands over no error events
        if topic == self.spec.control_topic:
            record = control.parse(msg.value())
            if record is not None and record["limit"] is not None:
                self.limits[record["run_id"]] = record["limit"]
                state = self.runs.get(record["run_id"])
                if state is None or state.limit != record["limit"]:
                    self._run(record["run_id"]).set_limit(record["limit"])
            return
        expected = self.expected_schema.get(topic)
        try:
            schema, record = self.serde.decode(msg.value(), expect=expected)
            if schema != expected:
                raise UndecodableMessage(f"a {schema} record is not a {expected} record")
        except UndecodableMessage as exc:
            if topic in (self.spec.progress_topic, self.spec.dlq_topic):
                self._dead_letter(msg, exc)
            return  # on a stage topic the step reading it dead-letters it; nothing to count here
        if topic == self.spec.progress_topic and schema == PROGRESS_SCHEMA:
            self._run(record["run_id"]).add_progress(record)
        elif topic == self.spec.dlq_topic and schema == DEAD_LETTER_SCHEMA:
            if record["run_id"]:
                self._run(record["run_id"]).add_dead_letter(record)
        elif topic in self.stage_of_topic and schema == self.plan.schema_name(self.stage_of_topic[topic]):
            state = self._run(record["run_id"])
            stage = self.stage_of_topic[topic]
            origin = replay_origin(msg.headers())
            if origin is not None:
                replay_of, from_step = origin
                if from_step in self.spec.stages:
                    state.start_replay(*self.spec.replay_stages(from_step), replay_of, from_step)
            marker = record["end_of_run"]
            if marker is None:
                state.add_rows(stage, record["rows"], self.released_columns[stage])
            else:
                state.add_marker(stage, partition, marker)

    def _dead_letter(self, msg: Message, exc: UndecodableMessage) -> None:
        """Nobody else reads these topics; the record goes out in the next transaction."""
        source = clients.position(msg)
        log.warning("coordinator dead-letters %s[%s]@%s: %s", *source, exc)
        self.dead_letters.append(
            dead_letter(
                step="coordinator",
                error_type=type(exc).__name__,
                error_message=str(exc),
                raw=msg.value() or b"",
                source=source,
            )
        )

    def _stop_limited(self) -> None:
        """A limited run whose final stage has its N rows is stopped upstream (the stop record
        goes out in the transaction that also holds the run state saying so)."""
        for run_id in sorted(self.dirty):
            state = self.runs[run_id]
            if state.reached_limit():
                state.stopped_ms = int(time.time() * 1000)
                self.stops.add(run_id)
                log.info("run %s reached its limit of %s rows: stopping it", run_id, state.limit)

    def _finish_drained(self) -> None:
        """Progress can be the last word on a stage (a step whose final batch dropped every row),
        so drain is checked after any input, not only after stage rows."""
        for run_id in sorted(self.dirty):
            state = self.runs[run_id]
            if state.status == "running" and state.all_drained():
                self._finish(state)

    def _finish(self, state: RunState) -> None:
        gates = {stage: self.spec.gates_of(stage) for stage in self.spec.stages}
        state.finish(gates, int(time.time() * 1000), self.spec.leaves)
        verdict = state.verdict or {}
        GATE_VERDICTS.labels(self.spec.name, "pass" if verdict.get("passed") else "fail").inc()
        RUNS_FINISHED.labels(self.spec.name).inc()
        self._write_reports(state)
        log.info("run %s finished: gate %s %s", state.run_id, verdict.get("passed"), verdict.get("failures"))

    def _write_reports(self, state: RunState) -> None:
        """Reports beside the dataset; pure functions of the state, so rewriting them is harmless."""
        folder = Path(self.spec.sink.output_dir) / self.spec.name / state.run_id / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        reports = state.reports()
        for name, report in reports.items():
            (folder / f"{name}.json").write_text(json.dumps(report, indent=2, sort_keys=True))
        html = folder.parent / REPORT_HTML
        html.write_text(render_report(self.spec.name, state, reports), encoding="utf-8")

    # -- output --------------------------------------------------------------------------------
    def _commit(self) -> None:
        assignment = self.consumer.assignment()
        if not (self.dirty or self.dead_letters) or not assignment:
            return
        records: list[OutputRecord] = []
        for record in self.dead_letters:
            value = self.serde.encode(DEAD_LETTER_SCHEMA, record)
            records.append(OutputRecord(self.spec.dlq_topic, value))
        for run_id in sorted(self.stops):
            stop = control.stop_record(run_id, self.runs[run_id].limit or 0)
            records.append(OutputRecord(self.spec.control_topic, stop, run_id))
        for run_id in sorted(self.dirty):
            state = self.runs[run_id]
            snapshot = json.dumps(state.public() | {"snapshot": state.to_json()}, sort_keys=True)
            records.append(OutputRecord(self.spec.runs_topic, snapshot.encode(), run_id))
            if state.verdict is not None:
                verdict = json.dumps({"run_id": run_id, **state.verdict}).encode()
                records.append(OutputRecord(self.spec.gates_topic, verdict, run_id))
        try:
            positions = {
                (tp.topic, tp.partition): tp.offset
                for tp in self.consumer.position(assignment)
                if tp.offset >= 0
            }
            self.producer.transact(records, positions, self.consumer.consumer_group_metadata())
        except (TransactionAborted, KafkaException) as exc:
            log.warning("coordinator transaction aborted, re-reading from committed state: %s", exc)
            self._rewind(assignment)
            return
        for record in self.dead_letters:
            metrics.DLQ_RECORDS.labels(step="coordinator", error_type=record["error_type"]).inc()
        for run_id in self.dirty:
            self._export_metrics(self.runs[run_id])
        self.dirty.clear()
        self.dead_letters.clear()
        self.stops.clear()

    def _rewind(self, assignment: list[TopicPartition]) -> None:
        """Back to the committed state and offsets; while the broker is away that waits (the
        watchdog ends a coordinator that never gets there)."""
        for attempt in range(1, 1_000_000):
            try:
                self._restore()
                for tp in self.consumer.committed(assignment, timeout=10):
                    self.consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
                return
            except KafkaException as exc:
                log.warning("coordinator cannot re-read its state yet (attempt %d): %s", attempt, exc)
                time.sleep(min(5.0, 0.5 * attempt))

    def _export_metrics(self, state: RunState) -> None:
        self.export.apply(state.run_id, run_series(state, self.spec.name))
        if state.verdict is not None:
            GATE_PASSED.labels(self.spec.name, state.run_id).set(1 if state.verdict["passed"] else 0)
