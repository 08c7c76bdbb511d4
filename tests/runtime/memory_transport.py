"""An in-memory broker and transport for unit tests of the runtime core (shared.runtime.runner).

It keeps what matters to the runner's correctness and nothing else: partitions as lists, a
group's committed offsets, transactions that land all or nothing, rebalances delivered from
inside `poll` as librdkafka does, and librdkafka's sticky pause (a partition's pause flag
survives a revoke and a re-assign, which is what once stalled a teacher for good).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shared.runtime.transport import (
    InputRecord,
    OutputRecord,
    RebalanceListener,
    TopicPartition,
    TransactionAborted,
    TransportFatal,
)


@dataclass
class Message:
    key: str | None
    value: bytes | None
    #: as Kafka's CreateTime: when it was produced (ms since the epoch)
    timestamp_ms: int = 0


@dataclass
class MemoryBroker:
    topics: dict[str, list[list[Message]]] = field(default_factory=dict)
    committed: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)

    def create(self, topic: str, partitions: int) -> None:
        self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def append(
        self, topic: str, partition: int | None, key: str | None, value: bytes | None, timestamp_ms: int = 0
    ) -> None:
        partitions = self.topics[topic]
        stamp = timestamp_ms or int(time.time() * 1000)
        partitions[partition if partition is not None else 0].append(Message(key, value, stamp))

    def values(self, topic: str) -> list[bytes]:
        return [m.value for p in self.topics.get(topic, []) for m in p if m.value is not None]

    # StateBackend: compacted topics read whole
    def ensure(self, topic: str, partitions: int) -> None:
        self.create(topic, partitions)

    def read(self, topic: str) -> dict[str, bytes]:
        data: dict[str, bytes] = {}
        for partition in self.topics.get(topic, []):
            for m in partition:
                if m.value is None:
                    data.pop(m.key or "", None)
                else:
                    data[m.key or ""] = m.value
        return data


class MemoryTransport:
    def __init__(self, broker: MemoryBroker, group: str, input_topics: list[str]) -> None:
        self.broker = broker
        self.group = group
        self.input_topics = input_topics
        self.listener: RebalanceListener | None = None
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}
        #: librdkafka's flags: kept per partition whether it is assigned or not
        self.paused: set[TopicPartition] = set()
        #: calls of flush_now (a step waiting for its immediate writes to be stored)
        self.flushes = 0
        self.events: list[Callable[[], None]] = []
        #: the next N transactions abort (nothing lands) / the next one is fatal
        self.abort_next = 0
        self.fatal_next = False
        self.transactions: list[tuple[list[OutputRecord], dict[TopicPartition, int]]] = []
        self.pause_calls: list[list[TopicPartition]] = []
        self.resume_calls: list[list[TopicPartition]] = []
        self.closed = False
        self.lag_unknown = False

    # -- scripting -------------------------------------------------------------------------------
    def all_partitions(self) -> list[TopicPartition]:
        return [(t, p) for t in self.input_topics for p in range(len(self.broker.topics[t]))]

    def rebalance(
        self, revoke: list[TopicPartition], assign: list[TopicPartition], lost: bool = False
    ) -> None:
        """Delivered at the next poll, as a group rebalance is."""

        def event() -> None:
            assert self.listener is not None
            if revoke:
                (self.listener.on_lost if lost else self.listener.on_revoked)(revoke)
                self.assigned = [tp for tp in self.assigned if tp not in revoke]
                for tp in revoke:
                    self.positions.pop(tp, None)
            if assign:
                self.assigned += [tp for tp in assign if tp not in self.assigned]
                for tp in assign:
                    self.positions[tp] = self.broker.committed.get((self.group, tp), 0)
                self.listener.on_assigned(assign)

        self.events.append(event)

    # -- Transport -------------------------------------------------------------------------------
    def start(self, listener: RebalanceListener) -> None:
        self.listener = listener
        self.rebalance([], self.all_partitions())

    def poll(self, max_records: int, timeout_s: float) -> list[InputRecord]:
        events, self.events = self.events, []
        for event in events:
            event()
        records: list[InputRecord] = []
        for tp in self.assigned:
            if tp in self.paused:
                continue
            partition = self.broker.topics[tp[0]][tp[1]]
            while self.positions[tp] < len(partition) and len(records) < max_records:
                offset = self.positions[tp]
                message = partition[offset]
                records.append(InputRecord(tp[0], tp[1], offset, message.value, (), message.timestamp_ms))
                self.positions[tp] = offset + 1
        return records

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        chosen = list(partitions)
        self.pause_calls.append(chosen)
        self.paused.update(chosen)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        chosen = list(partitions)
        self.resume_calls.append(chosen)
        self.paused.difference_update(chosen)

    def transact(self, records: list[OutputRecord], offsets: dict[TopicPartition, int]) -> None:
        if self.fatal_next:
            raise TransportFatal("fenced")
        if self.abort_next:
            self.abort_next -= 1
            raise TransactionAborted("scripted abort")
        for r in records:
            self.broker.append(r.topic, r.partition, r.key, r.value)
        for tp, offset in offsets.items():
            self.broker.committed[(self.group, tp)] = offset
        self.transactions.append((records, offsets))

    def produce_now(self, record: OutputRecord) -> None:
        self.broker.append(record.topic, record.partition, record.key, record.value)

    def flush_now(self, timeout_s: float) -> bool:
        self.flushes += 1  # produce_now appends at once: stored already
        return True

    def rewind(self) -> None:
        for tp in self.assigned:
            self.positions[tp] = self.broker.committed.get((self.group, tp), 0)

    def lag(self, fresh: bool = False) -> dict[TopicPartition, int] | None:
        if self.lag_unknown:
            return None
        return {tp: len(self.broker.topics[tp[0]][tp[1]]) - self.positions[tp] for tp in self.assigned}

    def partition_count(self, topic: str) -> int:
        return len(self.broker.topics[topic])

    def close(self) -> None:
        self.closed = True
