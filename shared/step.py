"""The contract between a pipeline step and the runtime that moves its rows.

A step is pure row logic: it never imports Kafka. The runtime calls `process_row` once per
row so that error policies (FAIL_FAST / IGNORE / COLLECT) can act on the one failing row.
State that must survive a restart (dedup keys, the generation cache) goes through a
`StateStore` the runtime hands over in `open`; the runtime decides where it lives.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

Row = dict[str, Any]


class StepParams(BaseModel):
    """Base for a step's parameters; unknown keys are a configuration error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StateStore(Protocol):
    """A durable key/value map owned by one step instance (keys are strings)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class StepContext(Protocol):
    """What the runtime offers a step when it opens."""

    def state_store(
        self, name: str, *, durable_immediately: bool = False, scope: Literal["run", "global"] = "run"
    ) -> StateStore:
        """A store backed by a compacted topic.

        `durable_immediately=False`: writes commit atomically with the step's output rows
        (exactly-once state, e.g. dedup keys). `True`: writes are flushed at once, outside
        the transaction, so work already paid for (teacher generations) survives an abort.
        `scope="run"`: keys are private to the run being processed (dedup: a second run of
        the same seeds is a new dataset, not a duplicate); `"global"`: shared by all runs
        (the generation cache, so a replay pays nothing twice).
        """
        ...


class Step(ABC):
    """A synchronous, per-row transformation."""

    name: ClassVar[str]
    Params: ClassVar[type[StepParams]] = StepParams
    #: Avro field declarations (list of dicts) this step adds to the row; see `output_fields`.
    is_async: ClassVar[bool] = False

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        self.params = params if params is not None else self.Params(**kwargs)

    def open(self, ctx: StepContext) -> None:  # noqa: B027 - optional hook
        """Acquire state stores or clients; called once before the first row."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `open` acquired."""

    def signature(self) -> str:
        """Identity of the step's behaviour: its name and params, stable across runs."""
        blob = json.dumps(
            {"step": self.name, "params": self.params.model_dump(mode="json")},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def output_fields(self) -> list[dict[str, Any]]:
        """Avro fields (name, type, default) this step adds to each row it emits."""
        return []

    @abstractmethod
    def process_row(self, row: Row) -> Row | None:
        """Return the transformed row, or None to drop it. Raise to report a row error."""


class AsyncStep(Step):
    """A per-row step that awaits I/O (the teacher); the runtime runs many rows at once."""

    is_async: ClassVar[bool] = True

    def process_row(self, row: Row) -> Row | None:
        raise TypeError(f"{self.name} is asynchronous: call process_row_async")

    @abstractmethod
    async def process_row_async(self, row: Row) -> Row | None:
        """Like `process_row`, awaited concurrently up to the service's in-flight cap."""
