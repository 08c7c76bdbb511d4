"""End-of-run watermarks.

An upstream stage with S input partitions writes, for each of them, one EndOfRun marker
to every partition of its output topic once everything of the run from that input
partition precedes it. A downstream partition has therefore drained for the run when it
has seen the markers of all S upstream partitions; only then may the downstream service
forward its own marker. The tracker is pure and JSON-serialisable so a service can keep it
in a state store and resume after a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class MarkerTracker:
    #: (run_id, input partition) -> upstream source partitions seen, and how many there are
    seen: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    expected: dict[tuple[str, int], int] = field(default_factory=dict)

    def observe(self, run_id: str, partition: int, source_partition: int, source_partitions: int) -> bool:
        """Record a marker; True exactly once, when `partition` has drained for `run_id`."""
        key = (run_id, partition)
        got = self.seen.setdefault(key, set())
        if self.is_drained(run_id, partition):
            return False
        got.add(source_partition)
        self.expected[key] = source_partitions
        return self.is_drained(run_id, partition)

    def is_drained(self, run_id: str, partition: int) -> bool:
        key = (run_id, partition)
        return key in self.expected and len(self.seen.get(key, ())) >= self.expected[key]

    def drained_partitions(self, run_id: str) -> set[int]:
        return {p for (r, p) in self.seen if r == run_id and self.is_drained(r, p)}

    def entry(self, run_id: str, partition: int) -> bytes:
        key = (run_id, partition)
        return json.dumps(
            {"seen": sorted(self.seen.get(key, ())), "expected": self.expected.get(key)}
        ).encode()

    def restore(self, run_id: str, partition: int, value: bytes) -> None:
        data = json.loads(value)
        seen, expected = data["seen"], data["expected"]
        # Checked before anything is kept: a foreign entry raises here, not later in is_drained.
        if not all(type(p) is int for p in seen) or not (expected is None or type(expected) is int):
            raise TypeError(f"not a marker entry: {data!r:.200}")
        self.seen[(run_id, partition)] = set(seen)
        if expected is not None:
            self.expected[(run_id, partition)] = expected

    @staticmethod
    def key(run_id: str, partition: int) -> str:
        return f"{run_id}|{partition}"

    @staticmethod
    def parse_key(key: str) -> tuple[str, int]:
        run_id, _, partition = key.rpartition("|")
        return run_id, int(partition)
