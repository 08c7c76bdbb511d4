"""The contract between a pipeline step and the runtime that moves its rows.

A step is pure row logic: it never imports Kafka. The runtime calls `process_row` once per
row so that error policies (FAIL_FAST / IGNORE / COLLECT) can act on the one failing row; a
step returns the row (changed or not), None to drop it, or a list of rows (one-to-many).
State that must survive a restart (dedup keys, the generation cache) goes through a
`StateStore` the runtime hands over in `open`; the runtime decides where it lives.

What a step adds to a row is declared next to its code: `outputs` names the fields, and the
Avro record at `schema` (by default `schemas/steps/<name>.avsc`) types them. The two are
checked against each other when a pipeline loads, and rows are written strictly, so a field
a step emits without declaring it is an error, never a column silently lost.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from shared.registry import Registry
from shared.schemas import load_avsc, load_avsc_file
from shared.topic_schema import row_fields, union_fields

Row = dict[str, Any]

#: Marks a param that changes how fast or how robustly a step works, not what it outputs.
OPERATIONAL = "operational"


def operational(default: Any = ..., **kwargs: Any) -> Any:
    """A params field that never changes a step's signature (concurrency, timeouts, retries):
    changing it must not make `replay --from auto` recompute, nor pay a teacher again."""
    if "default_factory" in kwargs:
        return Field(json_schema_extra={OPERATIONAL: True}, **kwargs)
    return Field(default, json_schema_extra={OPERATIONAL: True}, **kwargs)


def _is_operational(info: Any) -> bool:
    return isinstance(info.json_schema_extra, dict) and bool(info.json_schema_extra.get(OPERATIONAL))


def behaviour(model: BaseModel) -> dict[str, Any]:
    """`model`'s fields that decide output, as JSON: operational fields left out, also those of
    nested models (an LLM step's `llm:` endpoint carries its own concurrency and timeouts)."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        if _is_operational(info):
            continue
        value = getattr(model, name)
        out[name] = behaviour(value) if isinstance(value, BaseModel) else _dumped(model, name)
    return out


def _dumped(model: BaseModel, name: str) -> Any:
    return model.model_dump(mode="json", include={name})[name]


class StepParams(BaseModel):
    """Base for a step's parameters; unknown keys are a configuration error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def operational_fields(cls) -> set[str]:
        return {name for name, info in cls.model_fields.items() if _is_operational(info)}


class StateStore(Protocol):
    """A durable key/value map owned by one step instance (keys are strings)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        """(key, value) under `prefix`, sorted by key."""
        ...

    def flush(self, timeout_s: float = 10.0) -> bool:
        """A `durable_immediately` store: block until its writes so far are stored (before
        spending money that only they record); False if not within `timeout_s`."""
        ...


class StepContext(Protocol):
    """What the runtime offers a step when it opens."""

    #: the stages the step reads, in the pipeline's order (a join lists its sides this way)
    inputs: list[str]

    def current_input(self) -> str:
        """The stage the row being processed came from."""
        ...

    def current_partition(self) -> int:
        """The input partition of the row being processed (keys of one partition live together)."""
        ...

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

    def cache_enabled(self) -> bool:
        """Whether the run of the row being processed may be answered from caches: False for a
        run produced with `fastdistill produce --no-cache` (its run-control record says so).
        Asked while processing a row; the runtime knows which run that row belongs to."""
        ...


@dataclass
class Finished:
    """What a step settles when a partition drains: rows to emit, and rows it gives up on as
    (row, error type, reason), which are dead-lettered."""

    rows: list[Row] = field(default_factory=list)
    rejected: list[tuple[Row, str, str]] = field(default_factory=list)


class StepContractError(ValueError):
    """A step's declared outputs and its schema disagree (found when a pipeline loads)."""


P = TypeVar("P", bound=StepParams)


class Step(ABC, Generic[P]):
    """A synchronous, per-row transformation. Subclass as `Step[MyParams]`."""

    name: ClassVar[str]
    Params: ClassVar[type[StepParams]] = StepParams
    #: The fields this step adds to a row, named as in its schema (`renamed` maps them to the
    #: names its params choose).
    outputs: ClassVar[tuple[str, ...]] = ()
    #: The Avro record typing `outputs`: a path, an inline record, or None for
    #: `schemas/steps/<name>.avsc`.
    schema: ClassVar[Path | dict[str, Any] | None] = None
    is_async: ClassVar[bool] = False
    params: P

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # `class X(Step[XParams])` is enough: Params follows from the type argument.
        if "Params" not in cls.__dict__:
            for base in getattr(cls, "__orig_bases__", ()):
                origin = get_origin(base)
                if isinstance(origin, type) and issubclass(origin, Step):
                    (params,) = get_args(base)
                    if isinstance(params, type) and issubclass(params, StepParams):
                        cls.Params = params

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        self.params = params if params is not None else self.Params(**kwargs)  # type: ignore[assignment]

    def open(self, ctx: StepContext) -> None:
        """Acquire state stores or clients; called once before the first row."""

    def close(self) -> None:
        """Release what `open` acquired."""

    def ready(self) -> str | None:
        """None when the step can take rows; else why not (e.g. its endpoint is unreachable).
        The runtime asks before consuming: while a reason is given it takes no input, commits
        and dead-letters nothing new, reports the reason in /healthz and does not count the wait
        as a stall. Rows already taken are the step's to finish (or to hold on to)."""
        return None

    def signature(self) -> str:
        """Identity of the step's behaviour: its name and the params that decide its output,
        stable across runs (operational params are left out)."""
        params = behaviour(self.params)
        blob = json.dumps({"step": self.name, "params": params}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    # -- outputs ---------------------------------------------------------------------------------
    def renamed(self) -> dict[str, str]:
        """Output names chosen by params: {declared name: name in the row}."""
        return {}

    def active_outputs(self) -> tuple[str, ...]:
        """The declared outputs this configuration adds (a mode may add fewer)."""
        return self.outputs

    def reads(self) -> set[str]:
        """Fields this step reads from its input rows (checked against the input stages' schemas
        when a pipeline loads: a misspelt field is a load-time error, not a wrong result)."""
        return set()

    def row_fields(self, inputs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The fields of this stage's rows, given those of its input stages (in `inputs` order):
        all of theirs, then its own outputs (a re-declared name is replaced)."""
        return row_fields([], union_fields(self.name, inputs), self.output_fields())

    def finish(self, run_id: str, partition: int) -> Finished | list[Row]:
        """Rows still held for (`run_id`, `partition`) once that partition has drained on every
        input: emitted before the end marker goes on. Steps that wait for more input (a join, a
        grouping) release or settle what never completed here; the run and partition are also
        current for the state stores."""
        return []

    @classmethod
    def schema_fields(cls) -> list[dict[str, Any]]:
        """The fields of the step's schema, checked against `outputs` both ways."""
        if not cls.outputs:
            return []
        where: str
        if isinstance(cls.schema, dict):
            record, where = cls.schema, "its inline schema"
        elif cls.schema is not None:
            record, where = load_avsc_file(cls.schema), str(cls.schema)
        else:
            where = f"schemas/steps/{cls.name}.avsc"
            try:
                record = load_avsc(f"steps/{cls.name}.avsc")
            except FileNotFoundError:
                raise StepContractError(
                    f"step {cls.name!r} declares outputs {list(cls.outputs)} but {where} does not exist"
                ) from None
        fields: list[dict[str, Any]] = record.get("fields", [])
        names = [f["name"] for f in fields]
        undeclared = sorted(set(names) - set(cls.outputs))
        untyped = sorted(set(cls.outputs) - set(names))
        if undeclared or untyped:
            raise StepContractError(
                f"step {cls.name!r}: outputs {list(cls.outputs)} and {where} disagree"
                + (f"; not in the schema: {untyped}" if untyped else "")
                + (f"; not declared in `outputs`: {undeclared}" if undeclared else "")
            )
        return fields

    def output_fields(self) -> list[dict[str, Any]]:
        """Avro fields (name, type, default) this step adds to each row it emits."""
        active = self.active_outputs()
        rename = self.renamed()
        out = []
        for declared in self.schema_fields():
            if declared["name"] in active:
                out.append(declared | {"name": rename.get(declared["name"], declared["name"])})
        return out

    @abstractmethod
    def process_row(self, row: Row) -> Row | list[Row] | None:
        """The transformed row, None to drop it, or several rows. Raise to report a row error."""


class AsyncStep(Step[P]):
    """A per-row step that awaits I/O (the teacher); the runtime runs many rows at once."""

    is_async: ClassVar[bool] = True

    def process_row(self, row: Row) -> Row | list[Row] | None:
        raise TypeError(f"{self.name} is asynchronous: call process_row_async")

    def concurrency(self) -> int | None:
        """Rows the step wants in flight at once (its own limit, e.g. an endpoint's), or None to
        leave it to the pipeline's `max_in_flight`."""
        return None

    @abstractmethod
    async def process_row_async(self, row: Row) -> Row | list[Row] | None:
        """Like `process_row`, awaited concurrently up to the service's in-flight cap."""


#: The step catalogue: entry points of group `fastdistill.steps`, and `@STEPS.register(name)`.
STEPS: Registry[type[Step[Any]]] = Registry("fastdistill.steps", "step")


def step_class(name: str) -> type[Step[Any]]:
    """A catalogue step by name, or a user's own `package.module:StepClass`."""
    if ":" in name:
        module, _, attr = name.partition(":")
        found = getattr(importlib.import_module(module), attr)
        if not (isinstance(found, type) and issubclass(found, Step)):
            raise TypeError(f"{name} is not a shared.step.Step")
        return found
    return STEPS.get(name)


def build_step(name: str, params: dict[str, Any] | None = None) -> Step[Any]:
    """A step configured with `params` (validated by the step's own Params model)."""
    return step_class(name)(**(params or {}))
