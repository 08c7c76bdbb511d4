"""The pipeline declaration (YAML): steps, their params, topics and gates.

Steps form a chain: step i reads the topic step i-1 writes (the first reads the seeds
topic). Topic names derive from the pipeline name so two pipelines never share topics;
runs of one pipeline share its topics and are told apart by the run id in every batch.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

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


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    step: str
    params: dict[str, Any] = Field(default_factory=dict)
    error_policy: ErrorPolicy = ErrorPolicy.COLLECT
    #: Rows processed at once by an asynchronous step; a step with a concurrency of its own (an
    #: LLM step's endpoint limit) takes that one instead: set only one of the two.
    max_in_flight: int | None = Field(default=None, ge=1)
    #: Rows consumed but not yet committed downstream; partitions pause at this cap.
    max_buffered_rows: int = Field(default=2000, ge=1)
    #: Output rows are keyed (and so partitioned) by this field; None keeps the input partition.
    partition_by: str | None = None
    instances: int = Field(default=1, ge=1)


class SinkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output_dir: str = "out"
    formats: list[str] = Field(default_factory=lambda: ["jsonl", "parquet"])
    #: Wait for the coordinator's gate verdict before releasing a run's dataset.
    await_gate: bool = True


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
    gates: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineSpec:
        ids = [s.id for s in self.steps]
        for step_id in ids:
            if step_id in RESERVED_IDS:
                raise ValueError(f"step id {step_id!r} is reserved; reserved ids: {sorted(RESERVED_IDS)}")
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique: {dupes}")
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

    @property
    def stages(self) -> list[str]:
        return [SEEDS_STAGE, *(s.id for s in self.steps)]

    def step(self, step_id: str) -> StepSpec:
        for spec in self.steps:
            if spec.id == step_id:
                return spec
        raise KeyError(f"no step {step_id!r} in pipeline {self.name!r}; steps: {[s.id for s in self.steps]}")

    def input_stage(self, step_id: str) -> str:
        """The stage whose topic feeds `step_id` (the stage before it)."""
        stages = self.stages
        return stages[stages.index(step_id) - 1]

    @property
    def final_stage(self) -> str:
        return self.stages[-1]
