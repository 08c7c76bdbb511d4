"""Consumed messages waiting for their rows, per input partition, in offset order.

A message's outcome is held until every earlier message of its partition is complete, so
a commit always covers a gap-free prefix of each partition: the committed offset never
passes a message whose effects are not in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from shared.runtime.transport import TopicPartition
from shared.step import Row


@dataclass(slots=True)
class Tally:
    """What one step of the service (a chain has several) did with a message's rows."""

    rows_in: int = 0
    rows_out: int = 0
    dropped: int = 0
    errored: int = 0
    #: rows dropped unprocessed because the run was stopped (counted in `dropped` too)
    stopped: int = 0
    #: the rows it emitted, kept for an inner step of a chain whose topic is written or whose
    #: stage statistics are kept (the last step's rows are the message's `outputs`)
    rows: list[Row] = field(default_factory=list)


@dataclass(slots=True)
class PendingMessage:
    topic: str
    partition: int
    offset: int
    started: float
    run_id: str | None = None
    lineage: list[str] = field(default_factory=list)
    #: the stage the message came from
    source: str = ""
    #: the end-of-run marker this message carries (it then has no rows)
    marker: dict[str, Any] | None = None
    #: one slot per input row: its output rows ([] when dropped), in input order
    outputs: list[list[Row]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    row_seconds: list[float] = field(default_factory=list)
    remaining: int = 0
    #: one per step of the service, in chain order
    tallies: list[Tally] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    finished: float | None = None
    #: the broker's timestamp of the message and the origin of its batch (ms since the epoch;
    #: 0: unknown), for the per-row latencies of the progress record
    timestamp_ms: int = 0
    origin_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def rows(self) -> int:
        return len(self.outputs)

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def emitted(self) -> list[Row]:
        return [row for slot in self.outputs for row in slot]

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


class PartitionQueues:
    def __init__(self) -> None:
        self._queues: dict[TopicPartition, deque[PendingMessage]] = defaultdict(deque)

    def append(self, pm: PendingMessage) -> None:
        self._queues[pm.tp].append(pm)

    def buffered_rows(self) -> int:
        return sum(pm.rows for queue in self._queues.values() for pm in queue)

    def any_done(self) -> bool:
        return any(queue and queue[0].done for queue in self._queues.values())

    def take_ready(self) -> tuple[list[PendingMessage], dict[TopicPartition, int]]:
        """The complete prefix of every partition, and the offsets a commit of it covers."""
        ready: list[PendingMessage] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, queue in self._queues.items():
            while queue and queue[0].done:
                pm = queue.popleft()
                ready.append(pm)
                offsets[tp] = pm.offset + 1
        return ready, offsets

    def drop(self, partitions: list[TopicPartition]) -> None:
        """Forget the uncommitted messages of `partitions`, cancelling their rows in flight."""
        for tp in partitions:
            for pm in self._queues.pop(tp, ()):
                pm.cancel()

    def drop_all(self) -> None:
        self.drop(list(self._queues))
