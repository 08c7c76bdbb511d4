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
class Member:
    """One step of a service: the only one, or one of a chain (operator chaining: consecutive
    synchronous steps in one process, one decode, one encode, one transaction)."""

    stage: str
    error_policy: ErrorPolicy = ErrorPolicy.COLLECT
    #: the topic its rows are written to: always for the last step of a service, for an inner
    #: step of a chain only when something reads it (materialize: true); None: not written
    topic: str | None = None
    schema: str | None = None
    #: output rows are keyed (partitioned) by this field; None keeps the input partition
    partition_by: str | None = None
    #: its state stores live in `<prefix>.<store name>`
    state_topic_prefix: str = ""


@dataclass(frozen=True)
class Wiring:
    #: the service's name: its step's id (a chain's first step)
    stage: str
    group_id: str
    inputs: tuple[Input, ...]
    members: tuple[Member, ...]
    dlq_topic: str
    progress_topic: str
    #: where the service's own stores live (its end-of-run markers)
    state_topic_prefix: str
    #: Run limits and stops (shared.kafka.control); None: rows are never stopped.
    control_topic: str | None = None
    max_in_flight: int = 32
    max_buffered_rows: int = 2000
    #: Steps whose replays this step takes part in (itself and every step upstream of it): a
    #: replay from elsewhere re-produces stages this step reads for other steps' sake.
    replay_scope: frozenset[str] = frozenset()

    @property
    def input_topics(self) -> list[str]:
        return [i.topic for i in self.inputs]

    @property
    def tail(self) -> Member:
        return self.members[-1]

    @property
    def output_topic(self) -> str | None:
        return self.tail.topic
