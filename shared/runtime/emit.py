"""What a commit contains: the output batches, dead letters, end markers and progress records
of the messages that are ready, as records for one transaction.

A service runs one step, or a chain of them. Each step keeps its own accounting: a progress
record per (run, step), dead letters naming the step, its own topic where it is written (the
last step of the service, an inner one only when materialized), and otherwise its stage's
statistics carried in its progress record, so the coordinator still reports every stage.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared import metrics
from shared.runtime.batching import MESSAGE_OVERHEAD, fit, too_large_message
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.runtime.markers import MarkerTracker
from shared.runtime.pending import PendingMessage
from shared.runtime.progress import PROGRESS_SCHEMA, Progress
from shared.runtime.state import CURRENT_PARTITION, StateStore
from shared.runtime.transport import OutputRecord
from shared.runtime.wiring import Member, Wiring
from shared.serde import AvroSerde
from shared.step import Row


class StageStats(Protocol):
    """A mergeable summary of a stage's rows (manifest and quality aggregates), for a stage whose
    topic is not written; the coordinator merges what progress records carry."""

    def add_rows(self, rows: list[Row]) -> None: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass
class Settled:
    """What one step of the service yields when a partition drains: rows it still held (or got
    from an earlier step's release), dead letters, and how many released rows it took in."""

    rows: list[Row]
    dead_letters: list[dict[str, Any]]
    rows_in: int = 0


#: (run, partition) -> per step of the service, what it settles when that partition drains
Finisher = Callable[[str, int], list[Settled]]


class Emitter:
    def __init__(
        self,
        wiring: Wiring,
        serde: AvroSerde,
        *,
        signatures: list[str],
        instance_id: str,
        max_message_bytes: int,
        input_partitions: int,
        output_partitions: dict[str, int],
        stage_stats: Callable[[str], StageStats] | None = None,
    ) -> None:
        self.w = wiring
        self.serde = serde
        self.signatures = signatures
        self.instance_id = instance_id
        self.max_message_bytes = max_message_bytes
        self.input_partitions = input_partitions
        #: topic -> its partition count
        self.output_partitions = output_partitions
        self.stage_stats = stage_stats
        self._seq = 0

    def keeps_rows(self, k: int) -> bool:
        """Whether the k-th step's emitted rows are needed at commit time."""
        member = self.w.members[k]
        return k < len(self.w.members) - 1 and (member.topic is not None or self.stage_stats is not None)

    def emit(
        self, ready: list[PendingMessage], tracker: MarkerTracker, markers: StateStore, finish: Finisher
    ) -> list[OutputRecord]:
        """Records for `ready` in order: per message its dead letters, rows or markers; then one
        progress record per (run, step). Marks drained partitions in `tracker` and `markers`; a
        partition that drains first yields what `finish(run, partition)` still holds."""
        out: list[OutputRecord] = []
        progress: dict[tuple[str, str], Progress] = {}
        stats: dict[tuple[str, str], StageStats] = {}
        now_ms = int(time.time() * 1000)

        def entry(run_id: str, stage: str) -> Progress:
            found = progress.get((run_id, stage))
            if found is None:
                found = progress[(run_id, stage)] = Progress(
                    run_id,
                    stage,
                    self.instance_id,
                    input_partitions=self.input_partitions,
                    first_ms=now_ms,
                    last_ms=now_ms,
                )
            return found

        for pm in ready:
            for record in pm.dead_letters:
                out.append(self._dead_letter_record(record))
            if pm.run_id is None:
                continue
            if pm.marker is not None:
                self._marker(pm, entry, stats, tracker, markers, finish, out)
                continue
            for k, member in enumerate(self.w.members):
                tally = pm.tallies[k]
                rows = pm.emitted() if k == len(self.w.members) - 1 else tally.rows
                rejected = self._write(pm, k, rows, out, stats)
                e = entry(pm.run_id, member.stage)
                e.rows_in += tally.rows_in
                e.rows_out += tally.rows_out - rejected
                e.rows_errored += tally.errored + rejected
                e.rows_dropped += tally.dropped
                e.rows_stopped += tally.stopped
                e.batches += 1
                # Per row (MarkTime): every step of a chain commits in this transaction.
                if pm.timestamp_ms:
                    e.note_queue(now_ms - pm.timestamp_ms, tally.rows_in - tally.stopped)
                if pm.origin_ms:
                    e.note_e2e(now_ms - pm.origin_ms, tally.rows_out - rejected)
                labels = {"step": member.stage}
                metrics.ROWS_OUT.labels(**labels).inc(tally.rows_out - rejected)
                metrics.ROWS_DROPPED.labels(**labels).inc(tally.dropped)
                metrics.ROWS_STOPPED.labels(**labels).inc(tally.stopped)
            last = entry(pm.run_id, self.w.tail.stage)
            if pm.rows > (pm.tallies[0].stopped if pm.tallies else 0):  # a stopped batch did no work
                last.batch_seconds.append((pm.finished or pm.started) - pm.started)
            last.add_row_samples(pm.row_seconds)
        for (run_id, stage), summary in stats.items():
            entry(run_id, stage).stats = json.dumps(summary.to_json(), separators=(",", ":"))
        for e in progress.values():
            out.append(
                OutputRecord(
                    self.w.progress_topic, self.serde.encode(PROGRESS_SCHEMA, e.to_record()), e.run_id
                )
            )
        return out

    # -- rows ------------------------------------------------------------------------------------
    def _write(
        self,
        pm: PendingMessage,
        k: int,
        rows: list[Row],
        out: list[OutputRecord],
        stats: dict[tuple[str, str], StageStats],
    ) -> int:
        """The k-th step's rows: to its topic where it is written, else into its stage statistics.
        Returns how many were dead-lettered instead (too large, or not fitting the schema)."""
        member = self.w.members[k]
        if member.topic is None:
            if self.stage_stats is not None and rows:
                key = (pm.run_id or "", member.stage)
                if key not in stats:
                    stats[key] = self.stage_stats(member.stage)
                stats[key].add_rows(rows)
            return 0
        if not rows:
            return 0
        partitions = self.output_partitions[member.topic]
        groups: dict[int, list[Row]]
        if member.partition_by is None:
            groups = {pm.partition % partitions: rows}  # the input partition's rows stay together
        else:
            groups = defaultdict(list)
            for row in rows:
                groups[zlib.crc32(str(row[member.partition_by]).encode()) % partitions].append(row)
        lineage = [*pm.lineage, *self.signatures[: k + 1]]
        rejected: list[tuple[Row, str, str]] = []
        for partition, group in sorted(groups.items()):
            try:
                too_large = self._batch(
                    member, pm.run_id or "", partition, lineage, group, None, out, pm.origin_ms
                )
            except (ValueError, TypeError, OverflowError):
                # A row that does not fit the stage's schema: find it, so one bad row costs a dead
                # letter instead of a service that fails on the same input at every restart.
                group, violations = self._schema_violations(member, group)
                rejected += violations
                too_large = self._batch(
                    member, pm.run_id or "", partition, lineage, group, None, out, pm.origin_ms
                )
            rejected += [
                (row, "MessageTooLarge", too_large_message(size, self.max_message_bytes))
                for row, size in too_large
            ]
        for row, error_type, message in rejected:
            record = dead_letter(
                step=member.stage,
                error_type=error_type,
                error_message=message,
                run_id=pm.run_id,
                row=row,
                source=(pm.topic, pm.partition, pm.offset),
            )
            out.append(self._dead_letter_record(record))
        return len(rejected)

    def _schema_violations(
        self, member: Member, rows: list[Row]
    ) -> tuple[list[Row], list[tuple[Row, str, str]]]:
        """(rows that encode, [(row, error type, reason)] for those that do not)."""
        assert member.schema is not None
        good: list[Row] = []
        bad: list[tuple[Row, str, str]] = []
        for row in rows:
            record = {
                "run_id": "",
                "stage": member.stage,
                "producer": "",
                "batch_seq": 0,
                "lineage": [],
                "rows": [row],
                "end_of_run": None,
                "origin_ms": 0,
            }
            try:
                self.serde.encode(member.schema, record)
            except (ValueError, TypeError, OverflowError) as exc:
                reason = (
                    f"the row does not fit the schema of stage {member.stage!r}: {exc} "
                    "(a step declares what it adds in `outputs` and its .avsc)"
                )
                bad.append((row, "SchemaViolation", reason))
            else:
                good.append(row)
        return good, bad

    def _dead_letter_record(self, record: dict[str, Any]) -> OutputRecord:
        metrics.DLQ_RECORDS.labels(step=record["step"], error_type=record["error_type"]).inc()
        return OutputRecord(self.w.dlq_topic, self.serde.encode(DEAD_LETTER_SCHEMA, record), record["run_id"])

    # -- end of run ------------------------------------------------------------------------------
    def _marker(
        self,
        pm: PendingMessage,
        entry: Callable[[str, str], Progress],
        stats: dict[tuple[str, str], StageStats],
        tracker: MarkerTracker,
        markers: StateStore,
        finish: Finisher,
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
        settled = finish(run_id, pm.partition)
        for k, member in enumerate(self.w.members):
            rows, letters = settled[k].rows, settled[k].dead_letters
            out.extend(self._dead_letter_record(record) for record in letters)
            rejected = self._write(pm, k, rows, out, stats)
            e = entry(run_id, member.stage)
            e.rows_in += settled[k].rows_in
            e.rows_out += len(rows) - rejected
            e.rows_errored += rejected + len(letters)
            e.partitions_ended.append(pm.partition)
            if pm.origin_ms:  # rows held to the drain: their origin is the marker's (the run's)
                e.note_e2e(e.last_ms - pm.origin_ms, len(rows) - rejected)
            metrics.ROWS_OUT.labels(step=member.stage).inc(len(rows) - rejected)
            metrics.RUNS_ENDED.labels(step=member.stage).inc()
            if member.topic is None:
                continue
            eor = {
                "source_partition": pm.partition,
                "source_partitions": self.input_partitions,
                "rows_before": 0,
            }
            lineage = [*pm.lineage, *self.signatures[: k + 1]]
            for partition in range(self.output_partitions[member.topic]):
                self._batch(member, run_id, partition, lineage, [], eor, out, pm.origin_ms)

    def _batch(
        self,
        member: Member,
        run_id: str,
        partition: int,
        lineage: list[str],
        rows: list[Row],
        eor: dict[str, Any] | None,
        out: list[OutputRecord],
        origin_ms: int = 0,
    ) -> list[tuple[Row, int]]:
        """One message, or several where one would exceed the message size; returns the rows that
        fit in no message, with their size."""
        assert member.topic is not None and member.schema is not None
        schema, topic = member.schema, member.topic

        def encode(part: list[Row]) -> bytes:
            record = {
                "run_id": run_id,
                "stage": member.stage,
                "producer": self.instance_id,
                "batch_seq": self._seq,
                "lineage": lineage,
                "rows": part,
                "end_of_run": eor,
                "origin_ms": origin_ms,
            }
            self._seq += 1
            return self.serde.encode(schema, record)

        values, too_large = fit(rows, encode, self.max_message_bytes - MESSAGE_OVERHEAD)
        out.extend(OutputRecord(topic, value, run_id, partition) for value in values)
        return too_large
