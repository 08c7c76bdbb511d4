"""What a commit contains: the output batches, dead letters, end markers and progress records
of the messages that are ready, as records for one transaction."""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from shared import metrics
from shared.runtime.batching import MESSAGE_OVERHEAD, fit, too_large_message
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.runtime.markers import MarkerTracker
from shared.runtime.pending import PendingMessage
from shared.runtime.progress import PROGRESS_SCHEMA, Progress
from shared.runtime.state import CURRENT_PARTITION, StateStore
from shared.runtime.transport import OutputRecord
from shared.runtime.wiring import Wiring
from shared.serde import AvroSerde
from shared.step import Row


class Emitter:
    def __init__(
        self,
        wiring: Wiring,
        serde: AvroSerde,
        *,
        signature: str,
        instance_id: str,
        max_message_bytes: int,
        input_partitions: int,
        output_partitions: int,
    ) -> None:
        self.w = wiring
        self.serde = serde
        self.signature = signature
        self.instance_id = instance_id
        self.max_message_bytes = max_message_bytes
        self.input_partitions = input_partitions
        self.output_partitions = output_partitions
        self._seq = 0
        self._labels = {"step": wiring.stage}

    def emit(
        self,
        ready: list[PendingMessage],
        tracker: MarkerTracker,
        markers: StateStore,
        finish: Callable[[str, int], tuple[list[Row], list[dict[str, Any]]]],
    ) -> list[OutputRecord]:
        """Records for `ready` in order: per message its dead letters, rows or marker; then one
        progress record per run. Marks drained partitions in `tracker` and `markers`; a partition
        that drains first gets the rows `finish(run, partition)` still holds (and its dead letters)."""
        out: list[OutputRecord] = []
        progress: dict[str, Progress] = {}
        now_ms = int(time.time() * 1000)
        for pm in ready:
            for record in pm.dead_letters:
                out.append(self._dead_letter_record(record))
            if pm.run_id is None:
                continue
            entry = progress.get(pm.run_id)
            if entry is None:
                entry = progress[pm.run_id] = Progress(
                    pm.run_id,
                    self.w.stage,
                    self.instance_id,
                    input_partitions=self.input_partitions,
                    first_ms=now_ms,
                    last_ms=now_ms,
                )
            if pm.marker is not None:
                self._marker(pm, entry, tracker, markers, finish, out)
                continue
            rows = pm.emitted()
            too_large = self._rows(pm, rows, out)
            produced = len(rows) - too_large
            dropped = sum(1 for slot in pm.outputs if not slot) - pm.errored
            entry.rows_in += pm.rows
            entry.rows_out += produced
            entry.rows_errored += pm.errored + too_large
            entry.rows_dropped += dropped
            entry.rows_stopped += pm.stopped
            entry.batches += 1
            if pm.stopped < pm.rows:  # a wholly stopped batch did no work worth timing
                entry.batch_seconds.append((pm.finished or pm.started) - pm.started)
            entry.add_row_samples(pm.row_seconds)
            metrics.ROWS_OUT.labels(**self._labels).inc(produced)
            metrics.ROWS_DROPPED.labels(**self._labels).inc(dropped)
            metrics.ROWS_STOPPED.labels(**self._labels).inc(pm.stopped)
        for entry in progress.values():
            value = self.serde.encode(PROGRESS_SCHEMA, entry.to_record())
            out.append(OutputRecord(self.w.progress_topic, value, entry.run_id))
        return out

    def _dead_letter_record(self, record: dict[str, Any]) -> OutputRecord:
        metrics.DLQ_RECORDS.labels(step=self.w.stage, error_type=record["error_type"]).inc()
        return OutputRecord(self.w.dlq_topic, self.serde.encode(DEAD_LETTER_SCHEMA, record), record["run_id"])

    def _rows(self, pm: PendingMessage, rows: list[Row], out: list[OutputRecord]) -> int:
        """Appends the row batches; returns how many rows were dead-lettered as too large."""
        if not rows or self.w.output_topic is None:
            return 0
        groups: dict[int, list[Row]] = defaultdict(list)
        for row in rows:
            groups[self._output_partition(pm.partition, row)].append(row)
        lineage = [*pm.lineage, self.signature]
        rejected: list[tuple[Row, str, str]] = []
        for partition, group in sorted(groups.items()):
            try:
                too_large = self._batch(pm.run_id or "", partition, lineage, group, None, out)
            except (ValueError, TypeError, OverflowError):
                # A row that does not fit the stage's schema: find it, so one bad row costs a dead
                # letter instead of a service that fails on the same input at every restart.
                group, violations = self._schema_violations(group)
                rejected += violations
                too_large = self._batch(pm.run_id or "", partition, lineage, group, None, out)
            rejected += [
                (row, "MessageTooLarge", too_large_message(size, self.max_message_bytes))
                for row, size in too_large
            ]
        for row, error_type, message in rejected:
            record = dead_letter(
                step=self.w.stage,
                error_type=error_type,
                error_message=message,
                run_id=pm.run_id,
                row=row,
                source=(pm.topic, pm.partition, pm.offset),
            )
            out.append(self._dead_letter_record(record))
        return len(rejected)

    def _schema_violations(self, rows: list[Row]) -> tuple[list[Row], list[tuple[Row, str, str]]]:
        """(rows that encode, [(row, error type, reason)] for those that do not)."""
        assert self.w.output_schema is not None
        good: list[Row] = []
        bad: list[tuple[Row, str, str]] = []
        for row in rows:
            record = {
                "run_id": "",
                "stage": self.w.stage,
                "producer": "",
                "batch_seq": 0,
                "lineage": [],
                "rows": [row],
                "end_of_run": None,
            }
            try:
                self.serde.encode(self.w.output_schema, record)
            except (ValueError, TypeError, OverflowError) as exc:
                reason = (
                    f"the row does not fit the schema of stage {self.w.stage!r}: {exc} "
                    "(a step declares what it adds in `outputs` and its .avsc)"
                )
                bad.append((row, "SchemaViolation", reason))
            else:
                good.append(row)
        return good, bad

    def _output_partition(self, input_partition: int, row: Row) -> int:
        if self.w.partition_by is None:
            return input_partition % self.output_partitions
        return zlib.crc32(str(row[self.w.partition_by]).encode()) % self.output_partitions

    def _marker(
        self,
        pm: PendingMessage,
        entry: Progress,
        tracker: MarkerTracker,
        markers: StateStore,
        finish: Callable[[str, int], tuple[list[Row], list[dict[str, Any]]]],
        out: list[OutputRecord],
    ) -> None:
        marker = pm.marker or {}
        run_id = pm.run_id or ""
        drained = tracker.observe(
            run_id, pm.partition, marker["source_partition"], marker["source_partitions"], pm.source
        )
        token = CURRENT_PARTITION.set(pm.partition)
        try:
            markers.put(MarkerTracker.key(run_id, pm.partition), tracker.entry(run_id, pm.partition))
        finally:
            CURRENT_PARTITION.reset(token)
        if not drained:
            return
        rows, letters = finish(run_id, pm.partition)
        out.extend(self._dead_letter_record(record) for record in letters)
        if rows:
            rejected = self._rows(pm, rows, out)
            entry.rows_out += len(rows) - rejected
            entry.rows_errored += rejected + len(letters)
            metrics.ROWS_OUT.labels(**self._labels).inc(len(rows) - rejected)
        entry.partitions_ended.append(pm.partition)
        metrics.RUNS_ENDED.labels(**self._labels).inc()
        if self.w.output_topic is None:
            return
        eor = {"source_partition": pm.partition, "source_partitions": self.input_partitions, "rows_before": 0}
        for partition in range(self.output_partitions):
            self._batch(run_id, partition, [*pm.lineage, self.signature], [], eor, out)

    def _batch(
        self,
        run_id: str,
        partition: int,
        lineage: list[str],
        rows: list[Row],
        eor: dict[str, Any] | None,
        out: list[OutputRecord],
    ) -> list[tuple[Row, int]]:
        """One message, or several where one would exceed the message size; returns the rows that
        fit in no message, with their size."""
        assert self.w.output_topic is not None and self.w.output_schema is not None
        schema, topic = self.w.output_schema, self.w.output_topic

        def encode(part: list[Row]) -> bytes:
            record = {
                "run_id": run_id,
                "stage": self.w.stage,
                "producer": self.instance_id,
                "batch_seq": self._seq,
                "lineage": lineage,
                "rows": part,
                "end_of_run": eor,
            }
            self._seq += 1
            return self.serde.encode(schema, record)

        values, too_large = fit(rows, encode, self.max_message_bytes - MESSAGE_OVERHEAD)
        out.extend(OutputRecord(topic, value, run_id, partition) for value in values)
        return too_large
