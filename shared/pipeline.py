"""The pipeline declaration (YAML): a DAG of steps, their params, topics and gates.

Each step reads the topics of the stages it names in `inputs` (default: the step before it,
the seeds for the first, so a plain list of steps is a chain). Several steps may read one
stage (fan-out, each its own consumer group); a step may read several (a join or a union); a
step's `route` decides which of its successors get each row. Topic names derive from the
pipeline name so two pipelines never share topics; runs of one pipeline share its topics
and are told apart by the run id in every batch.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

SEEDS_STAGE = "seeds"
#: Names a step id may not take: the seeds stage, the pipeline's own topics (`fd.<name>.<id>`)
#: and the services `serve` runs besides steps.
RESERVED_IDS = frozenset({SEEDS_STAGE, "dlq", "control", "runs", "progress", "gates", "sink", "coordinator"})


class ErrorPolicy(StrEnum):
    FAIL_FAST = "FAIL_FAST"
    IGNORE = "IGNORE"
    COLLECT = "COLLECT"


class Condition(BaseModel):
    """Which rows a route sends to one successor: a test on one field (absent reads as null)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        given = [name for name in ("equals", "not_equals", "in_", "not_in") if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("a route condition has exactly one of equals, not_equals, in, not_in")
        return self

    def holds(self, row: dict[str, Any]) -> bool:
        value = row.get(self.field)
        if "equals" in self.model_fields_set:
            return bool(value == self.equals)
        if "not_equals" in self.model_fields_set:
            return bool(value != self.not_equals)
        if self.in_ is not None:
            return value in self.in_
        return value not in (self.not_in or [])


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    step: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: The stages this step reads; None: the step listed before it (the seeds for the first).
    inputs: list[str] | None = Field(default=None, min_length=1)
    #: Which successors get each row: {successor id: condition}, or `package.module:function`
    #: taking a row and returning the successor ids. None: every successor gets every row.
    route: dict[str, Condition] | str | None = None
    error_policy: ErrorPolicy = ErrorPolicy.COLLECT
    #: Rows processed at once by an asynchronous step; a step with a concurrency of its own (an
    #: LLM step's endpoint limit) takes that one instead: set only one of the two.
    max_in_flight: int | None = Field(default=None, ge=1)
    #: Rows consumed but not yet committed downstream; partitions pause at this cap.
    max_buffered_rows: int = Field(default=2000, ge=1)
    #: Output rows are keyed (and so partitioned) by this field; None keeps the input partition.
    partition_by: str | None = None
    instances: int = Field(default=1, ge=1)
    #: Write this step's topic even inside a chain (to read it, or to replay from exactly here).
    materialize: bool = False


_DEFAULT_FORMATS: list[str | dict[str, dict[str, Any]]] = ["jsonl", "parquet"]


class SinkSpec(BaseModel):
    """What the sink releases of a run, and how (docs/datasets.md)."""

    model_config = ConfigDict(extra="forbid")

    output_dir: str = "out"
    #: Dataset formats (names of `fastdistill.sink_formats` entry points), each a name or a
    #: one-entry mapping `{name: {option: value}}`; checked when the pipeline loads.
    formats: list[str | dict[str, dict[str, Any]]] = Field(default_factory=lambda: _DEFAULT_FORMATS.copy())
    #: The stages released, each a named subset; None: the pipeline's leaves.
    stages: list[str] | None = Field(default=None, min_length=1)
    #: Which rows of a released stage are kept; None: those whose `keep` is not false (every
    #: row of a stage without a `keep` field). The others form the subset's `rejected` part.
    select: Condition | None = None
    #: A deterministic split of the kept rows by the hash of `split_by`: {split name: ratio},
    #: ratios summing to 1, e.g. {train: 0.9, valid: 0.05, test: 0.05}. None: no split.
    split: dict[str, float] | None = None
    split_by: str = "sample_id"
    #: A dataset card (README.md) and the pipeline's YAML beside the data.
    card: bool = True
    #: Wait for the coordinator's gate verdict before releasing a run's dataset.
    await_gate: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> SinkSpec:
        names = [name for name, _ in self.format_entries()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink formats named twice: {dupes}")
        if self.stages is not None and len(set(self.stages)) < len(self.stages):
            raise ValueError(f"sink stages named twice: {self.stages}")
        if self.split is not None:
            if not self.split:
                raise ValueError("sink split names no split")
            for name, ratio in self.split.items():
                if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name == "rejected":
                    raise ValueError(f"sink split {name!r}: a split is named [a-z][a-z0-9_]*, not 'rejected'")
                if not 0 < ratio <= 1:
                    raise ValueError(f"sink split {name!r}: ratio {ratio} is not in (0, 1]")
            if abs(sum(self.split.values()) - 1) > 1e-9:
                raise ValueError(f"sink split ratios sum to {sum(self.split.values())}, not 1")
        return self

    def format_entries(self) -> list[tuple[str, dict[str, Any]]]:
        """(format name, its options) in the order given."""
        entries: list[tuple[str, dict[str, Any]]] = []
        for entry in self.formats:
            if isinstance(entry, str):
                entries.append((entry, {}))
            elif len(entry) == 1:
                ((name, options),) = entry.items()
                entries.append((name, dict(options or {})))
            else:
                raise ValueError(f"a sink format is a name or {{name: {{options}}}}, not {entry!r}")
        return entries


class QualitySpec(BaseModel):
    """What the coordinator's quality reports compute beyond the generic numbers of every stage."""

    model_config = ConfigDict(extra="forbid")

    #: stage -> the quality metric sets to run there, instead of those its columns call for
    metric_sets: dict[str, list[str]] = Field(default_factory=dict)
    #: the score columns (histograms in the report and on the dashboards); None: every
    #: float/double column whose name ends in `score`
    score_columns: list[str] | None = None


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    #: Rows per batch message written by the seed producer.
    batch_size: int = Field(default=500, ge=1)
    #: Avro record of one seed row (under schemas/) and the pydantic model that validates seeds.
    seed_schema: str = "rows/seed.avsc"
    seed_model: str = "services.seeds.model:Seed"
    steps: list[StepSpec]
    sink: SinkSpec = Field(default_factory=SinkSpec)
    #: Operator chaining, a deployment choice: `none` (one service per step), `auto` (consecutive
    #: synchronous steps of a straight segment share one service: one decode, one encode, one
    #: transaction), or the groups spelled out, e.g. [[canonicalize, hash], [clean_sql, rule_filter]].
    chain: Literal["none", "auto"] | list[list[str]] = "none"
    #: Quality gates: `min_<metric>`/`max_<metric>` thresholds for the leaves, and per stage
    #: `<stage id>: {min_<metric>: x}` for any other.
    gates: dict[str, float | dict[str, float]] = Field(default_factory=dict)
    quality: QualitySpec = Field(default_factory=QualitySpec)

    @model_validator(mode="after")
    def _a_dag(self) -> PipelineSpec:
        ids = [s.id for s in self.steps]
        for step_id in ids:
            if step_id in RESERVED_IDS:
                raise ValueError(f"step id {step_id!r} is reserved; reserved ids: {sorted(RESERVED_IDS)}")
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique: {dupes}")
        known = {SEEDS_STAGE, *ids}
        for spec in self.steps:
            for stage in self.inputs(spec.id):
                if stage not in known:
                    raise ValueError(
                        f"step {spec.id!r}: input {stage!r} is no stage; stages: {sorted(known)}"
                    )
                if stage == spec.id:
                    raise ValueError(f"step {spec.id!r} reads itself")
            if isinstance(spec.route, dict):
                successors = set(self.successors(spec.id))
                named = set(spec.route)
                if named != successors:
                    raise ValueError(
                        f"step {spec.id!r}: route names {sorted(named)} but its successors are "
                        f"{sorted(successors)}; name each successor once"
                    )
        self.topological_order()  # raises on a cycle
        for stage, gate in self.gates.items():
            if isinstance(gate, dict) and stage not in known:
                raise ValueError(f"gates: {stage!r} is no stage; stages: {sorted(known)}")
        return self

    @classmethod
    def load(cls, path: str | Path) -> PipelineSpec:
        with open(path, encoding="utf-8") as fh:
            return cls.model_validate(yaml.safe_load(fh))

    # -- topic names -------------------------------------------------------------------------
    def topic(self, stage: str) -> str:
        """The data topic a stage writes (`seeds` or a step id)."""
        return f"fd.{self.name}.{stage}"

    @property
    def dlq_topic(self) -> str:
        return f"fd.{self.name}.dlq"

    @property
    def progress_topic(self) -> str:
        return f"fd.{self.name}.progress"

    @property
    def runs_topic(self) -> str:
        return f"fd.{self.name}.runs"

    @property
    def gates_topic(self) -> str:
        return f"fd.{self.name}.gates"

    @property
    def control_topic(self) -> str:
        """Run limits and stops (compacted, keyed by run id): see shared.kafka.control."""
        return f"fd.{self.name}.control"

    def state_topic_prefix(self, step_id: str) -> str:
        """State stores of a step live in `<prefix>.<store name>` (compacted)."""
        return f"fd.{self.name}.{step_id}.state"

    # -- the DAG -------------------------------------------------------------------------------
    @cached_property
    def stages(self) -> list[str]:
        """Every stage, upstream before downstream: the seeds, then the steps."""
        return [SEEDS_STAGE, *self.topological_order()]

    def step(self, step_id: str) -> StepSpec:
        for spec in self.steps:
            if spec.id == step_id:
                return spec
        raise KeyError(f"no step {step_id!r} in pipeline {self.name!r}; steps: {[s.id for s in self.steps]}")

    def inputs(self, step_id: str) -> list[str]:
        """The stages `step_id` reads."""
        spec = self.step(step_id)
        if spec.inputs is not None:
            return list(spec.inputs)
        position = [s.id for s in self.steps].index(step_id)
        return [self.steps[position - 1].id if position else SEEDS_STAGE]

    def successors(self, stage: str) -> list[str]:
        """The steps reading `stage`, in declaration order."""
        return [s.id for s in self.steps if stage in self.inputs(s.id)]

    @property
    def leaves(self) -> list[str]:
        """Stages nobody reads: what a run is for (released by the sink, gated by default)."""
        return [stage for stage in self.stages if not self.successors(stage)]

    @property
    def primary_leaf(self) -> str:
        """The last leaf in stage order (the final stage of a chain): what a run's limit counts and
        the sink releases first."""
        return self.leaves[-1]

    def replay_stages(self, from_step: str) -> tuple[list[str], list[str]]:
        """(stages a replay from `from_step` re-produces from the original run, stages it
        recomputes): the second are `from_step` and everything downstream of it, the first every
        other stage those read."""
        recomputed = self.downstream(from_step)
        sources = [
            stage
            for stage in self.stages
            if stage not in recomputed and any(stage in self.inputs(s) for s in recomputed)
        ]
        return sources, recomputed

    def downstream(self, step_id: str) -> list[str]:
        """`step_id` and every step fed by it, in stage order."""
        found = {step_id}
        for stage in self.stages:
            if stage != SEEDS_STAGE and any(i in found for i in self.inputs(stage)):
                found.add(stage)
        return [s for s in self.stages if s in found]

    def topological_order(self) -> list[str]:
        """Step ids, each after all its inputs (declaration order among equals); raises on a cycle."""
        done: list[str] = []
        placed = {SEEDS_STAGE}
        pending = [s.id for s in self.steps]
        while pending:
            ready = [i for i in pending if set(self.inputs(i)) <= placed]
            if not ready:
                raise ValueError(f"the steps form a cycle: {' -> '.join(pending)}")
            done.append(ready[0])
            placed.add(ready[0])
            pending.remove(ready[0])
        return done

    def gates_of(self, stage: str) -> dict[str, float]:
        """The gate thresholds on `stage`: its own entry, plus the top-level ones for a leaf."""
        own = self.gates.get(stage)
        gates = dict(own) if isinstance(own, dict) else {}
        if stage in self.leaves:
            gates |= {k: v for k, v in self.gates.items() if not isinstance(v, dict)}
        return gates
