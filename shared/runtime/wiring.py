"""Where a step service reads and writes, and its limits: built by the composition root from the
pipeline, so the runtime itself never reads a pipeline file."""

from __future__ import annotations

from dataclasses import dataclass

from shared.pipeline import ErrorPolicy


@dataclass(frozen=True)
class Wiring:
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
