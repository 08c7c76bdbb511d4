"""The sink: turns a run's rows on the final topic into dataset files, released by the gate.

The final topic is the durable staging area. Rows are appended to a per-run staging file
as they arrive; offsets are committed only up to the first message of the oldest run not
yet written, so after a crash the sink wipes the staging of unfinished runs and re-reads
them whole. A run is written once its end markers arrived on every partition, sorted by
source index (so the files are deterministic), into `<out>/<pipeline>/<run>/.pending/`,
and moved into place when the coordinator's gate verdict passes (or marked rejected).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from fastdistill.plan import PipelinePlan
from fastdistill.runs import REJECTED, RELEASED
from services.sink.writer import StagedRows
from shared import metrics
from shared.config import KafkaSettings, ServiceSettings
from shared.kafka import clients
from shared.kafka.control import ControlView
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.runtime.health import serving
from shared.runtime.markers import MarkerTracker
from shared.runtime.poll_loop import PollLoop
from shared.serde import AvroSerde, UndecodableMessage
from shared.topic_schema import dataset_columns

log = logging.getLogger(__name__)


@dataclass
class OpenRun:
    run_id: str
    staged: StagedRows
    first_offsets: dict[int, int] = field(default_factory=dict)
    rows: int = 0
    #: file name -> sha256, once the dataset is written to `.pending`
    files: dict[str, str] | None = None


class SinkService:
    def __init__(self, plan: PipelinePlan, serde: AvroSerde, kafka: KafkaSettings, settings: ServiceSettings):
        self.plan = plan
        self.spec = plan.spec
        self.serde = serde
        self.kafka = kafka
        self.settings = settings
        self.stage = self.spec.primary_leaf
        self.topic = self.spec.topic(self.stage)
        self.schema = plan.schema_name(self.stage)
        self.root = Path(self.spec.sink.output_dir) / self.spec.name
        self.staging = self.root / ".staging"
        self.tracker = MarkerTracker()
        self.runs: dict[str, OpenRun] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.loop = PollLoop()

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        # Arrow's default pool (mimalloc) keeps freed row groups' memory; the system allocator
        # hands it back, which keeps a long-lived sink's RSS flat from run to run.
        pa.set_memory_pool(pa.system_memory_pool())
        async with serving(self.settings.metrics_host, self.settings.metrics_port, self.health, self.stop):
            # Everything not finished is re-read from the committed offsets, so its staging must go.
            shutil.rmtree(self.staging, ignore_errors=True)
            self.consumer: Consumer = clients.consumer(self.kafka, f"fd.{self.spec.name}.sink")
            self.gates: Consumer = clients.consumer(self.kafka, f"fd.{self.spec.name}.sink-gates")
            # Dead letters are flushed before the offsets past them are committed: at least once.
            self.dlq = clients.producer(self.kafka)
            # A run's limit is written with its seeds, long before its rows drain here; reading
            # the topic to its end first covers a restart that finds drained runs at once.
            self.control = ControlView(self.kafka, self.spec.control_topic)
            self.control.catch_up()
            try:
                self.partitions = clients.partition_count(self.consumer, self.topic)
                committed = self.consumer.committed(
                    [TopicPartition(self.topic, p) for p in range(self.partitions)], timeout=30
                )
                self.consumer.assign(
                    [
                        TopicPartition(
                            tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                        )
                        for tp in committed
                    ]
                )
                self.gates.assign([TopicPartition(self.spec.gates_topic, 0, OFFSET_BEGINNING)])
                await self.loop.run(self._turn, self._commit)
            finally:
                self.consumer.close()
                self.gates.close()
                self.control.close()

    def _turn(self) -> None:
        for msg in self.consumer.consume(num_messages=100, timeout=0.05):
            self._on_message(msg)
        for msg in self.gates.consume(num_messages=100, timeout=0):
            self._on_verdict(msg)
        self.control.poll()
        self._release_ready()

    def stop(self) -> None:
        self.loop.stop()

    def health(self) -> dict[str, Any]:
        return {"ok": self.loop.stalled_for() < 30, "step": "sink", "open_runs": len(self.runs)}

    # -- data ----------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise RuntimeError(str(err))
            return
        _, partition, offset = clients.position(msg)
        try:
            schema, record = self.serde.decode(msg.value(), expect=self.schema)
            if schema != self.schema:
                raise UndecodableMessage(
                    f"a {schema} record is not input of the sink (expected {self.schema})"
                )
        except UndecodableMessage as exc:
            self._dead_letter(msg, exc)
            return
        run_id = record["run_id"]
        if self._finished(run_id):
            return
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = OpenRun(run_id, StagedRows(self.staging / run_id))
        run.first_offsets.setdefault(partition, offset)
        marker = record["end_of_run"]
        if marker is not None:
            self.tracker.observe(run_id, partition, marker["source_partition"], marker["source_partitions"])
            return
        run.staged.append(partition, record["rows"])
        run.rows += len(record["rows"])

    def _dead_letter(self, msg: Message, exc: UndecodableMessage) -> None:
        source = clients.position(msg)
        log.warning("sink dead-letters %s[%s]@%s: %s", *source, exc)
        record = dead_letter(
            step="sink",
            error_type=type(exc).__name__,
            error_message=str(exc),
            raw=msg.value() or b"",
            source=source,
        )
        clients.produce(self.dlq, self.spec.dlq_topic, self.serde.encode(DEAD_LETTER_SCHEMA, record), None)
        metrics.DLQ_RECORDS.labels(step="sink", error_type=record["error_type"]).inc()

    def _finished(self, run_id: str) -> bool:
        run_dir = self.root / run_id
        return (run_dir / RELEASED).exists() or (run_dir / REJECTED).exists()

    def _write_pending(self, run: OpenRun) -> None:
        # Early stop: of the rows that passed before the run drained, the N first by source
        # index; a function of that set alone, whatever order they arrived in.
        limit = self.control.limits.get(run.run_id)
        if limit is not None:
            run.rows = min(run.rows, limit)
        columns = dataset_columns(self.plan.fields[self.stage])
        pending = self.root / run.run_id / ".pending" / self.stage
        shutil.rmtree(pending, ignore_errors=True)
        run.files = run.staged.write_dataset(pending, columns, self.spec.sink.formats, limit)
        log.info("run %s: %d rows staged for release", run.run_id, run.rows)

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

    def _release_ready(self) -> None:
        for run_id, run in list(self.runs.items()):
            if len(self.tracker.drained_partitions(run_id)) < self.partitions:
                continue
            if run.files is None:
                self._write_pending(run)
            verdict = self.verdicts.get(run_id)
            if self.spec.sink.await_gate and verdict is None:
                continue
            self._finish(run, verdict)

    def _finish(self, run: OpenRun, verdict: dict[str, Any] | None) -> None:
        run_dir = self.root / run.run_id
        pending = run_dir / ".pending" / self.stage
        passed = verdict is None or verdict["passed"]
        target = run_dir / (self.stage if passed else f"rejected-{self.stage}")
        shutil.rmtree(target, ignore_errors=True)
        pending.rename(target)
        shutil.rmtree(run_dir / ".pending", ignore_errors=True)
        status = {
            "run_id": run.run_id,
            "stage": self.stage,
            "rows": run.rows,
            "files": run.files,
            "gate": verdict,
            "limit": self.control.limits.get(run.run_id),
        }
        (run_dir / (RELEASED if passed else REJECTED)).write_text(
            json.dumps(status, indent=2, sort_keys=True)
        )
        shutil.rmtree(self.staging / run.run_id, ignore_errors=True)
        del self.runs[run.run_id]
        log.info("run %s %s: %s", run.run_id, "released" if passed else "rejected", target)

    def _commit(self) -> None:
        if self.dlq.flush(30):
            log.warning("sink dead letters not yet delivered; offsets stay where they are")
            return
        offsets = []
        for tp in self.consumer.position(self.consumer.assignment()):
            if tp.offset < 0:
                continue
            open_firsts = [
                r.first_offsets[tp.partition] for r in self.runs.values() if tp.partition in r.first_offsets
            ]
            offsets.append(TopicPartition(tp.topic, tp.partition, min([tp.offset, *open_firsts])))
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # retried on the next round; the offsets only grow
                log.warning("sink commit: %s", exc)
