"""End-of-run watermarks.

An upstream stage with S input partitions writes, for each of them, one EndOfRun marker
to every partition of its output topic once everything of the run from that input
partition precedes it. A downstream partition has therefore drained for the run when it
has seen the markers of all S upstream partitions of every stage it reads (a join reads
several); only then may the downstream service forward its own marker. The tracker is pure
and JSON-serialisable so a service can keep it in a state store and resume after a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class MarkerTracker:
    #: how many input stages must each report their markers before a partition drains
    inputs: int = 1
    #: (run_id, partition) -> per input stage: upstream source partitions seen, and how many there are
    seen: dict[tuple[str, int], dict[str, set[int]]] = field(default_factory=dict)
    expected: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)

    def observe(
        self, run_id: str, partition: int, source_partition: int, source_partitions: int, source: str = ""
    ) -> bool:
        """Record a marker of input stage `source`; True exactly once, when `partition` has
        drained for `run_id` on every input."""
        key = (run_id, partition)
        if self.is_drained(run_id, partition):
            return False
        self.seen.setdefault(key, {}).setdefault(source, set()).add(source_partition)
        self.expected.setdefault(key, {})[source] = source_partitions
        return self.is_drained(run_id, partition)

    def is_drained(self, run_id: str, partition: int) -> bool:
        key = (run_id, partition)
        expected = self.expected.get(key)
        if expected is None or len(expected) < self.inputs:
            return False
        seen = self.seen.get(key, {})
        return all(len(seen.get(source, ())) >= count for source, count in expected.items())

    def drained_partitions(self, run_id: str) -> set[int]:
        return {p for (r, p) in self.seen if r == run_id and self.is_drained(r, p)}

    def entry(self, run_id: str, partition: int) -> bytes:
        key = (run_id, partition)
        seen = {source: sorted(parts) for source, parts in sorted(self.seen.get(key, {}).items())}
        return json.dumps(
            {"seen": seen, "expected": dict(sorted(self.expected.get(key, {}).items()))}
        ).encode()

    def restore(self, run_id: str, partition: int, value: bytes) -> None:
        data = json.loads(value)
        seen, expected = data["seen"], data["expected"]
        if isinstance(seen, list):  # written before joins: one unnamed input
            seen = {"": seen}
            expected = {} if expected is None else {"": expected}
        # Checked before anything is kept: a foreign entry raises here, not later in is_drained.
        valid = (
            isinstance(seen, dict)
            and isinstance(expected, dict)
            and all(isinstance(parts, list) and all(type(p) is int for p in parts) for parts in seen.values())
            and all(type(n) is int for n in expected.values())
        )
        if not valid:
            raise TypeError(f"not a marker entry: {data!r:.200}")
        self.seen[(run_id, partition)] = {str(source): set(parts) for source, parts in seen.items()}
        if expected:
            self.expected[(run_id, partition)] = {str(source): n for source, n in expected.items()}

    @staticmethod
    def key(run_id: str, partition: int) -> str:
        return f"{run_id}|{partition}"

    @staticmethod
    def parse_key(key: str) -> tuple[str, int]:
        run_id, _, partition = key.rpartition("|")
        return run_id, int(partition)
