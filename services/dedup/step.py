"""dedup: the first row with a key wins; later ones are dropped or flagged.

Keys seen go to a durable state store so a restarted instance still knows them. The pipeline
partitions by the key so that every copy of a key reaches the same instance.

With a store, the store is the only memory: the runtime scopes its keys to the run being
processed and rebuilds it from its topic when a transaction aborts. A process-local set in
front would survive both, so a second run of the same seeds, or the replay of an aborted
batch, would find its own keys there and lose every row. (The runtime's store is an
in-memory map already, so the set would save nothing.) Without `open`, a set stands in.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from shared.step import Row, StateStore, Step, StepContext, StepParams

SEEN = b"1"


class DedupParams(StepParams):
    field: str = "sample_id"
    #: "flag" keeps duplicates and marks them `is_duplicate`, for auditing what would be dropped.
    mode: Literal["drop", "flag"] = "drop"


class DedupStep(Step[DedupParams]):
    name: ClassVar[str] = "dedup"
    outputs: ClassVar[tuple[str, ...]] = ("is_duplicate",)

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._seen: set[str] = set()
        self._store: StateStore | None = None

    def open(self, ctx: StepContext) -> None:
        self._store = ctx.state_store("dedup_keys")

    def close(self) -> None:
        self._store = None

    def active_outputs(self) -> tuple[str, ...]:
        return self.outputs if self.params.mode == "flag" else ()

    def reads(self) -> set[str]:
        return {self.params.field}

    def process_row(self, row: Row) -> Row | None:
        key = row.get(self.params.field)
        if key is None:
            raise ValueError(f"dedup: row has no {self.params.field!r}")
        duplicate = self._check_and_mark(str(key))
        if self.params.mode == "flag":
            return {**row, "is_duplicate": duplicate}
        return None if duplicate else row

    def _check_and_mark(self, key: str) -> bool:
        """True if the key was seen before; records it otherwise."""
        if self._store is None:
            if key in self._seen:
                return True
            self._seen.add(key)
            return False
        if self._store.get(key) is not None:
            return True
        self._store.put(key, SEEN)
        return False
