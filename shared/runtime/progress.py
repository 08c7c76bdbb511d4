"""The progress record: what one service transaction did for one run (`schemas/envelope/progress.avsc`).

Written inside the transaction that commits the work it counts, so a reader summing progress
records counts every row exactly once. Services build it, the coordinator folds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shared.sketch import bucket_of

PROGRESS_SCHEMA = "progress"
#: Per-row latency samples kept per record; enough for percentiles, bounded in size.
MAX_ROW_SAMPLES = 512


@dataclass(slots=True)
class LatencyHistogram:
    """Per-row latencies in whole milliseconds, as `shared.sketch` buckets (exact count, sum, min,
    max; the coordinator merges the buckets into its run's sketch). Rows of one message share a
    latency, so a message adds its latency once with its row count as the weight."""

    count: int = 0
    sum_ms: int = 0
    min_ms: int = 0
    max_ms: int = 0
    #: rows whose latency was 0 ms (zero has no log bucket)
    zeros: int = 0
    #: bucket indexes (`shared.sketch.bucket_of`) and their row counts, index for index
    buckets: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def add(self, ms: int, rows: int) -> None:
        if rows <= 0:
            return
        ms = max(0, ms)  # clocks of two hosts may disagree by a little: never a negative latency
        self.min_ms = ms if self.count == 0 else min(self.min_ms, ms)
        self.max_ms = max(self.max_ms, ms)
        self.count += rows
        self.sum_ms += ms * rows
        if ms == 0:
            self.zeros += rows
            return
        index = bucket_of(ms)
        # A transaction's latencies fall in a few buckets: a list scan beats a dict round trip.
        for i, known in enumerate(self.buckets):
            if known == index:
                self.counts[i] += rows
                return
        self.buckets.append(index)
        self.counts.append(rows)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> LatencyHistogram | None:
        return None if record is None else cls(**record)


@dataclass(slots=True)
class Progress:
    run_id: str
    stage: str
    producer: str
    rows_in: int = 0
    rows_out: int = 0
    rows_dropped: int = 0
    rows_errored: int = 0
    #: rows dropped (and counted in rows_dropped) because their run was stopped by its limit
    rows_stopped: int = 0
    batches: int = 0
    #: processing time of each input message
    batch_seconds: list[float] = field(default_factory=list)
    #: per-row latency samples (asynchronous steps: request time)
    row_seconds: list[float] = field(default_factory=list)
    #: input partitions on which the run drained in this transaction
    partitions_ended: list[int] = field(default_factory=list)
    input_partitions: int = 0
    first_ms: int = 0
    last_ms: int = 0
    #: the stage's statistics (manifest and quality aggregates, JSON) when its topic is not
    #: written (an inner step of a chain); None when the coordinator reads the topic
    stats: str | None = None
    #: input rows by queue-to-commit latency: Kafka timestamp of their message to this commit
    queue_ms: LatencyHistogram | None = None
    #: output rows by end-to-end latency: their seeds' produce time (`origin_ms`) to this commit
    e2e_ms: LatencyHistogram | None = None

    def add_row_samples(self, samples: list[float]) -> None:
        room = MAX_ROW_SAMPLES - len(self.row_seconds)
        if room > 0:
            self.row_seconds.extend(samples[:room])

    def note_queue(self, ms: int, rows: int) -> None:
        if rows > 0:
            if self.queue_ms is None:
                self.queue_ms = LatencyHistogram()
            self.queue_ms.add(ms, rows)

    def note_e2e(self, ms: int, rows: int) -> None:
        if rows > 0:
            if self.e2e_ms is None:
                self.e2e_ms = LatencyHistogram()
            self.e2e_ms.add(ms, rows)

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Progress:
        """From a decoded record; fields an older writer did not have take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        progress = cls(**{k: v for k, v in record.items() if k in names and v is not None})
        progress.queue_ms = LatencyHistogram.from_record(record.get("queue_ms"))
        progress.e2e_ms = LatencyHistogram.from_record(record.get("e2e_ms"))
        return progress
