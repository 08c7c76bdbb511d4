"""Where a step service reads and writes, and its limits: built by the composition root from the
pipeline, so the runtime itself never reads a pipeline file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.pipeline import ErrorPolicy
from shared.step import Row


@dataclass(frozen=True)
class Input:
    """One stage a step reads."""

    stage: str
    topic: str
    schema: str
    #: which rows of the stage are this step's (the upstream step's route); None: all of them
    accepts: Callable[[Row], bool] | None = None


@dataclass(frozen=True)
class Wiring:
    stage: str
    group_id: str
    inputs: tuple[Input, ...]
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
    #: Steps whose replays this step takes part in (itself and every step upstream of it): a
    #: replay from elsewhere re-produces stages this step reads for other steps' sake.
    replay_scope: frozenset[str] = frozenset()

    @property
    def input_topics(self) -> list[str]:
        return [i.topic for i in self.inputs]
