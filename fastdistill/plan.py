"""The pipeline made concrete: step instances, each topic's Avro schema, each service's wiring.

Building a plan is where a pipeline is validated as a whole, before any topic or process
exists: every step and its params, every field a step reads against what its inputs carry,
the schemas of stages that merge several inputs, routes and gates. All problems are
collected and reported together, one line each, naming the step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from services.coordinator.gates import GateConfigError, parse_gates
from shared.pipeline import SEEDS_STAGE, Condition, PipelineSpec
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA
from shared.runtime.progress import PROGRESS_SCHEMA
from shared.runtime.wiring import Input, Wiring
from shared.schemas import load_avsc
from shared.serde import AvroSerde
from shared.step import AsyncStep, Row, Step, build_step
from shared.topic_schema import batch_schema, row_fields

#: Rows in flight for an asynchronous step that sets no concurrency of its own.
DEFAULT_MAX_IN_FLIGHT = 32


class PlanError(ValueError):
    """A pipeline that cannot run, with every problem found (one line each)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class PipelinePlan:
    spec: PipelineSpec
    steps: dict[str, Step[Any]]
    #: stage -> the Avro fields of a row on that stage's topic
    fields: dict[str, list[dict[str, Any]]]

    @classmethod
    def build(cls, spec: PipelineSpec) -> PipelinePlan:
        problems: list[str] = []
        for stage in spec.stages:
            try:
                parse_gates(spec.gates_of(stage))  # a misspelt gate fails at once, not at the run's end
            except GateConfigError as exc:
                problems.append(f"gates of {stage}: {exc}")
        steps: dict[str, Step[Any]] = {}
        for step_spec in spec.steps:
            try:
                steps[step_spec.id] = build_step(step_spec.step, step_spec.params)
            except ValidationError as exc:
                problems += [f"step {step_spec.id!r} ({step_spec.step}): {_error(e)}" for e in exc.errors()]
            except Exception as exc:  # unknown step, a dotted path that does not import, a bad file
                problems.append(f"step {step_spec.id!r} ({step_spec.step}): {exc}")
        fields: dict[str, list[dict[str, Any]]] = {
            SEEDS_STAGE: row_fields(load_avsc(spec.seed_schema)["fields"])
        }
        for step_id in spec.topological_order():
            step = steps.get(step_id)
            inputs = [fields[i] for i in spec.inputs(step_id) if i in fields]
            if step is None or len(inputs) < len(spec.inputs(step_id)):
                continue  # already reported, or fed by a stage that was
            problems += _check_step(spec, step_id, step, inputs)
            try:
                fields[step_id] = step.row_fields(inputs)
            except ValueError as exc:
                problems.append(f"step {step_id!r}: {exc}")
                continue
            partition_by = spec.step(step_id).partition_by
            if partition_by is not None and partition_by not in {f["name"] for f in fields[step_id]}:
                problems.append(f"step {step_id!r}: partition_by {partition_by!r} is not a field of its rows")
        for step_spec in spec.steps:
            if isinstance(step_spec.route, str):
                try:
                    _import(step_spec.route)
                except Exception as exc:
                    problems.append(
                        f"step {step_spec.id!r}: route {step_spec.route!r} does not import: {exc}"
                    )
        if problems:
            raise PlanError(problems)
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
        inputs = tuple(
            Input(stage, self.spec.topic(stage), self.schema_name(stage), self.route_test(stage, step_id))
            for stage in self.spec.inputs(step_id)
        )
        return Wiring(
            stage=step_id,
            group_id=f"fd.{self.spec.name}.{step_id}",
            inputs=inputs,
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
            replay_scope=frozenset(
                s for s in self.spec.topological_order() if step_id in self.spec.downstream(s)
            ),
        )

    def route_test(self, stage: str, step_id: str) -> Callable[[Row], bool] | None:
        """Which rows of `stage` are for `step_id` (the route of the step writing `stage`)."""
        if stage == SEEDS_STAGE:
            return None
        route = self.spec.step(stage).route
        if route is None:
            return None
        if isinstance(route, dict):
            condition: Condition = route[step_id]
            return condition.holds
        choose = _import(route)

        def chosen(row: Row) -> bool:
            picked = choose(row)
            return step_id == picked if isinstance(picked, str) else step_id in picked

        return chosen

    def max_in_flight(self, step_id: str) -> int:
        """One knob: the step's own concurrency, else the pipeline's max_in_flight, else 32."""
        step = self.steps[step_id]
        own = step.concurrency() if isinstance(step, AsyncStep) else None
        return own or self.spec.step(step_id).max_in_flight or DEFAULT_MAX_IN_FLIGHT

    def seed_model(self) -> type[BaseModel]:
        model = _import(self.spec.seed_model)
        assert isinstance(model, type) and issubclass(model, BaseModel), f"{self.spec.seed_model} is no model"
        return model


def _check_step(
    spec: PipelineSpec, step_id: str, step: Step[Any], inputs: list[list[dict[str, Any]]]
) -> list[str]:
    problems = []
    own = step.concurrency() if isinstance(step, AsyncStep) else None
    if own is not None and spec.step(step_id).max_in_flight is not None:
        problems.append(
            f"step {step_id!r}: max_in_flight and the step's own concurrency ({own}) are both set; "
            "keep only the step's (e.g. max_concurrency)"
        )
    try:
        step.output_fields()
    except ValueError as exc:
        problems.append(f"step {step_id!r}: {exc}")
    available = {f["name"] for fields in inputs for f in fields}
    missing = sorted(step.reads() - available)
    if missing:
        sources = ", ".join(spec.inputs(step_id))
        problems.append(
            f"step {step_id!r} reads {', '.join(map(repr, missing))}, which its input ({sources}) does not "
            f"carry; it has: {', '.join(sorted(available))}"
        )
    return problems


def _error(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _import(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)
