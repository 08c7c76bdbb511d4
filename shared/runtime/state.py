"""State stores (the `StateStore` a step gets in `open`), kept by the runtime in compacted topics.

A store holds its whole map in memory and is rebuilt from its topic on start and on every
partition assignment. Transactional writes go out in the service's next transaction, so the
state commits atomically with the rows that caused it; a key is written to the input
partition being processed, so it lives where its rows do. Immediate writes (work already
paid for, such as teacher generations) go out at once, outside any transaction.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Protocol

from shared.runtime.transport import OutputRecord

#: The input partition and the run whose rows are being processed (set by the runner per message).
CURRENT_PARTITION: contextvars.ContextVar[int] = contextvars.ContextVar("fd_current_partition", default=0)
CURRENT_RUN: contextvars.ContextVar[str] = contextvars.ContextVar("fd_current_run", default="")
#: The stage the message being processed came from (a step reading several tells them apart).
CURRENT_INPUT: contextvars.ContextVar[str] = contextvars.ContextVar("fd_current_input", default="")


class StateBackend(Protocol):
    """Where store topics live (shared.kafka.state.KafkaStateBackend, or memory in unit tests)."""

    def ensure(self, topic: str, partitions: int) -> None:
        """Create the compacted topic if it is missing."""

    def read(self, topic: str) -> dict[str, bytes]:
        """The latest value of every key (tombstones remove the key)."""


class StateStore:
    def __init__(
        self,
        topic: str,
        *,
        durable_immediately: bool,
        write_now: Callable[[OutputRecord], None],
        per_run: bool = True,
        flush_now: Callable[[float], bool] | None = None,
    ) -> None:
        self.topic = topic
        self.durable_immediately = durable_immediately
        self.per_run = per_run
        self._write_now = write_now
        self._flush_now = flush_now
        self.data: dict[str, bytes] = {}
        self._pending: list[OutputRecord] = []

    def _key(self, key: str) -> str:
        return f"{CURRENT_RUN.get()}|{key}" if self.per_run else key

    def get(self, key: str) -> bytes | None:
        return self.data.get(self._key(key))

    def put(self, key: str, value: bytes) -> None:
        key = self._key(key)
        self.data[key] = value
        record = OutputRecord(self.topic, value, key, CURRENT_PARTITION.get())
        if self.durable_immediately:
            self._write_now(record)
        else:
            self._pending.append(record)

    def delete(self, key: str) -> None:
        """Remove a key (a tombstone in the topic, committed like a write)."""
        key = self._key(key)
        self.data.pop(key, None)
        record = OutputRecord(self.topic, None, key, CURRENT_PARTITION.get())
        if self.durable_immediately:
            self._write_now(record)
        else:
            self._pending.append(record)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Immediate writes: wait until they are stored (False if not within `timeout_s`).
        Transactional writes are stored with the next transaction: nothing to wait for here."""
        if not self.durable_immediately or self._flush_now is None:
            return True
        return self._flush_now(timeout_s)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        """(key, value) of the current run's keys (every key for a global store) under `prefix`,
        sorted by key so what a step does with them does not depend on arrival order."""
        full = self._key(prefix)
        strip = len(self._key(""))
        return sorted((k[strip:], v) for k, v in self.data.items() if k.startswith(full))

    def drain(self) -> list[OutputRecord]:
        """The writes to commit with the next transaction."""
        pending, self._pending = self._pending, []
        return pending

    def reload(self, backend: StateBackend) -> None:
        self._pending.clear()
        self.data = backend.read(self.topic)
