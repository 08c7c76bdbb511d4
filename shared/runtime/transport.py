"""What the step runtime needs from a message broker, and nothing more.

The runner (`shared.runtime.runner`) decides what to consume, what a commit contains and
when partitions pause; a transport only moves bytes: it polls records, applies pause and
resume, and writes one transaction (output records plus consumed offsets) atomically.
`shared.kafka.transport.KafkaTransport` is the real one; the unit tests drive the runner
through an in-memory one. Nothing here imports Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

#: (topic, partition)
TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    #: the broker's timestamp of the message (ms since the epoch; 0: unknown): where a row's
    #: queue-to-commit latency starts
    timestamp_ms: int = 0

    @property
    def source(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name and value is not None:  # a header without a value says nothing
                return value.decode(errors="replace")
        return None


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One message to write (inside a transaction unless said otherwise)."""

    topic: str
    value: bytes | None
    key: str | None = None
    partition: int | None = None


class TransactionAborted(Exception):
    """The transaction did not commit and nothing of it is visible: the runner forgets its
    uncommitted work and re-reads from the last committed offsets."""


class TransportFatal(Exception):
    """The transport cannot go on in this process (e.g. fenced by a newer instance with the same
    id): the runner stops, and only a new process may continue."""


class RebalanceListener(Protocol):
    """Called by the transport from inside `poll`, as the group's assignment changes."""

    def on_assigned(self, partitions: list[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions about to go, gracefully: work on them may still be committed here."""

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """Partitions already gone (session expired, consumer rebuilt): nothing may be committed."""


class Transport(Protocol):
    def start(self, listener: RebalanceListener) -> None:
        """Initialise transactions and subscribe to the input topic."""

    def poll(self, max_records: int, timeout_s: float) -> list[InputRecord]:
        """Up to `max_records` records (rebalance callbacks run in here)."""

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def transact(self, records: list[OutputRecord], offsets: dict[TopicPartition, int]) -> None:
        """Write `records` and commit `offsets` (next offset to read) in one transaction.

        Raises TransactionAborted (nothing visible; the caller rewinds) or TransportFatal."""

    def produce_now(self, record: OutputRecord) -> None:
        """Write outside any transaction, as soon as possible (work already paid for)."""

    def flush_now(self, timeout_s: float) -> bool:
        """Wait until every `produce_now` write so far is stored; False if not within timeout_s."""

    def rewind(self) -> None:
        """Seek every assigned partition back to its committed offset."""

    def lag(self, fresh: bool = False) -> dict[TopicPartition, int] | None:
        """Records readable and not yet read, per assigned partition. `fresh` asks the broker
        (may block briefly; call it off the loop); None when the broker did not answer."""

    def partition_count(self, topic: str) -> int: ...

    def close(self) -> None: ...
