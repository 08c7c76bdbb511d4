"""The progress record: what one service transaction did for one run (`schemas/envelope/progress.avsc`).

Written inside the transaction that commits the work it counts, so a reader summing progress
records counts every row exactly once. Services build it, the coordinator folds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PROGRESS_SCHEMA = "progress"
#: Per-row latency samples kept per record; enough for percentiles, bounded in size.
MAX_ROW_SAMPLES = 512


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

    def add_row_samples(self, samples: list[float]) -> None:
        room = MAX_ROW_SAMPLES - len(self.row_seconds)
        if room > 0:
            self.row_seconds.extend(samples[:room])

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Progress:
        """From a decoded record; fields an older writer did not have take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names and v is not None})
