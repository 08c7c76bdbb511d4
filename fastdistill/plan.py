"""The pipeline made concrete: step instances, each topic's Avro schema, each service's wiring."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from services.coordinator.gates import parse_gates
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA
from shared.runtime.progress import PROGRESS_SCHEMA
from shared.runtime.wiring import Wiring
from shared.schemas import load_avsc
from shared.serde import AvroSerde
from shared.step import AsyncStep, Step, build_step
from shared.topic_schema import batch_schema, row_fields

#: Rows in flight for an asynchronous step that sets no concurrency of its own.
DEFAULT_MAX_IN_FLIGHT = 32


@dataclass
class PipelinePlan:
    spec: PipelineSpec
    steps: dict[str, Step]
    #: stage -> the Avro fields of a row on that stage's topic
    fields: dict[str, list[dict[str, Any]]]

    @classmethod
    def build(cls, spec: PipelineSpec) -> PipelinePlan:
        parse_gates(spec.gates)  # a misspelt gate fails every command at once, not at the run's end
        steps = {s.id: build_step(s.step, s.params) for s in spec.steps}
        for step_spec in spec.steps:
            own = steps[step_spec.id].concurrency() if isinstance(steps[step_spec.id], AsyncStep) else None
            if own is not None and step_spec.max_in_flight is not None:
                raise ValueError(
                    f"step {step_spec.id!r}: max_in_flight and the step's own concurrency ({own}) are both "
                    "set; keep only the step's (e.g. max_concurrency)"
                )
        fields = {SEEDS_STAGE: row_fields(load_avsc(spec.seed_schema)["fields"])}
        added: list[list[dict[str, Any]]] = []
        for step_spec in spec.steps:
            added.append(steps[step_spec.id].output_fields())
            fields[step_spec.id] = row_fields(load_avsc(spec.seed_schema)["fields"], *added)
        return cls(spec, steps, fields)

    @staticmethod
    def schema_name(stage: str) -> str:
        return f"batch:{stage}"

    def serde(self, registry: Any = None) -> AvroSerde:
        # Registry subjects follow Confluent's TopicNameStrategy (`<topic>-value`): each schema is
        # written to one topic, so compatibility is checked per topic as registry tools expect.
        spec = self.spec
        serde = AvroSerde(registry=registry)
        for stage, stage_fields in self.fields.items():
            serde.add(self.schema_name(stage), batch_schema(stage_fields), f"{spec.topic(stage)}-value")
        serde.add(DEAD_LETTER_SCHEMA, load_avsc("envelope/dead_letter.avsc"), f"{spec.dlq_topic}-value")
        serde.add(PROGRESS_SCHEMA, load_avsc("envelope/progress.avsc"), f"{spec.progress_topic}-value")
        return serde

    def wiring(self, step_id: str) -> Wiring:
        spec = self.spec.step(step_id)
        upstream = self.spec.input_stage(step_id)
        return Wiring(
            stage=step_id,
            group_id=f"fd.{self.spec.name}.{step_id}",
            input_topic=self.spec.topic(upstream),
            input_schema=self.schema_name(upstream),
            output_topic=self.spec.topic(step_id),
            output_schema=self.schema_name(step_id),
            dlq_topic=self.spec.dlq_topic,
            progress_topic=self.spec.progress_topic,
            control_topic=self.spec.control_topic,
            state_topic_prefix=self.spec.state_topic_prefix(step_id),
            error_policy=spec.error_policy,
            max_in_flight=self.max_in_flight(step_id),
            max_buffered_rows=spec.max_buffered_rows,
            partition_by=spec.partition_by,
        )

    def max_in_flight(self, step_id: str) -> int:
        """One knob: the step's own concurrency, else the pipeline's max_in_flight, else 32."""
        step = self.steps[step_id]
        own = step.concurrency() if isinstance(step, AsyncStep) else None
        return own or self.spec.step(step_id).max_in_flight or DEFAULT_MAX_IN_FLIGHT

    def seed_model(self) -> type[BaseModel]:
        model = _import(self.spec.seed_model)
        assert issubclass(model, BaseModel)
        return model


def _import(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)
