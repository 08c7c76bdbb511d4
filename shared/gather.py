"""What group_generations and join share: rows held in a state store under a key until all of
the key's parts are in, then emitted as one row; when a partition drains, the keys still short
are emitted with what arrived or dead-lettered, by `on_missing`.

The store is committed with the consumed offsets, so a killed instance resumes with exactly the
parts it had. Keys are prefixed by the partition the parts came from: a partition's drain
settles its own keys and no other's.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from shared import rowjson
from shared.step import Finished, Row, StateStore, Step, StepContext, StepParams


class GatherParams(StepParams):
    #: field -> name of the list gathering it from the parts, e.g. {generation: generations}
    collect: dict[str, str] = Field(default_factory=dict)
    on_missing: Literal["emit_partial", "drop"] = "emit_partial"


G = TypeVar("G", bound=GatherParams)


class GatherStep(Step[G]):
    #: name of its state store
    store: ClassVar[str]

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._ctx: StepContext | None = None
        self._store: StateStore | None = None

    def open(self, ctx: StepContext) -> None:
        self._ctx = ctx
        self._store = ctx.state_store(self.store)

    @property
    def ctx(self) -> StepContext:
        assert self._ctx is not None, "used before open()"
        return self._ctx

    def hold(self, key: str, part: str, row: Row, parts: int) -> Row | None:
        """`row` as part `part` of `key`; the assembled row once `parts` parts are in."""
        assert self._store is not None
        key = f"{self.ctx.current_partition()}|{key}"
        blob = self._store.get(key)
        held: dict[str, Row] = rowjson.loads(blob) if blob is not None else {}
        held[part] = row
        if len(held) < parts:
            self._store.put(key, rowjson.dumps(held))
            return None
        if blob is not None:
            self._store.delete(key)
        return self.assemble(held)

    def finish(self, run_id: str, partition: int) -> Finished:
        assert self._store is not None
        done = Finished()
        for key, blob in self._store.scan(f"{partition}|"):
            self._store.delete(key)
            row = self.assemble(rowjson.loads(blob))
            if self.params.on_missing == "emit_partial":
                done.rows.append(row)
            else:
                done.rejected.append((row, *self.incomplete(row, key.split("|", 1)[1])))
        return done

    @abstractmethod
    def assemble(self, held: dict[str, Row]) -> Row:
        """One row of the parts held (all of them, or what arrived when a partition drained)."""

    @abstractmethod
    def incomplete(self, row: Row, key: str) -> tuple[str, str]:
        """The error type and the reason a short `row` of `key` is dead-lettered with."""
