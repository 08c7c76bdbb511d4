"""The pipeline made concrete: step instances, each topic's Avro schema, each service's wiring.

Building a plan is where a pipeline is validated as a whole, before any topic or process
exists: every step and its params, every field a step reads against what its inputs carry,
the schemas of stages that merge several inputs, routes and gates. All problems are
collected and reported together, one line each, naming the step.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from services.coordinator.gates import GateConfigError, parse_gates
from services.coordinator.layout import QualityLayout, stage_layouts
from services.coordinator.quality import QualityAgg
from services.coordinator.stage_stats import StageSummary
from services.sink.checks import sink_problems
from shared.pipeline import SEEDS_STAGE, Condition, PipelineSpec
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA
from shared.runtime.progress import PROGRESS_SCHEMA
from shared.runtime.wiring import Input, Member, Wiring
from shared.schemas import load_avsc
from shared.serde import AvroSerde
from shared.step import AsyncStep, Row, Step, build_step, step_class
from shared.topic_schema import batch_schema, dataset_columns, row_fields

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
    #: the step ids each service runs, in stage order: one each, or an operator chain
    chains: list[list[str]] = field(default_factory=list)
    _layouts: dict[str, QualityLayout] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.chains:
            self.chains = [[step_id] for step_id in self.spec.topological_order()]

    @classmethod
    def build(cls, spec: PipelineSpec) -> PipelinePlan:
        problems: list[str] = []
        steps: dict[str, Step[Any]] = {}
        for step_spec in spec.steps:
            try:
                steps[step_spec.id] = build_step(step_spec.step, step_spec.params)
            except ValidationError as exc:
                params = step_class(step_spec.step).Params
                problems += [
                    f"step {step_spec.id!r} ({step_spec.step}): {_error(e, params)}" for e in exc.errors()
                ]
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
        problems += sink_problems(spec, fields)
        for step_spec in spec.steps:
            if isinstance(step_spec.route, str):
                try:
                    _import(step_spec.route)
                except Exception as exc:
                    problems.append(
                        f"step {step_spec.id!r}: route {step_spec.route!r} does not import: {exc}"
                    )
        chains: list[list[str]] = []
        if not problems:
            chains, chain_problems = chain_groups(spec, steps)
            problems += chain_problems
        problems += _check_quality(spec, fields)
        if problems:
            raise PlanError(problems)
        return cls(spec, steps, fields, chains)

    def quality_layouts(self) -> dict[str, QualityLayout]:
        """What each stage's quality report computes (checked when the plan was built)."""
        if self._layouts is None:
            self._layouts = stage_layouts(self.spec, self.fields)[0]
        return self._layouts

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

    # -- services ------------------------------------------------------------------------------
    @property
    def services(self) -> list[str]:
        """The step services to run: one per chain, named after its first step."""
        return [chain[0] for chain in self.chains]

    def chain_of(self, step_id: str) -> list[str]:
        for chain in self.chains:
            if step_id in chain:
                return chain
        raise KeyError(f"no step {step_id!r} in pipeline {self.spec.name!r}")

    def written(self, stage: str) -> bool:
        """Whether a stage's topic is written: the seeds, the last step of every service, and an
        inner step of a chain only when materialized."""
        if stage == SEEDS_STAGE:
            return True
        chain = self.chain_of(stage)
        return chain[-1] == stage or self.spec.step(stage).materialize

    def service_steps(self, service: str) -> list[Step[Any]]:
        return [self.steps[step_id] for step_id in self.chain_of(service)]

    def stage_stats(self, stage: str) -> StageSummary:
        """The statistics a chain keeps of a stage whose topic it does not write."""
        return StageSummary(
            dataset_columns(self.fields[stage]), quality=QualityAgg(self.quality_layouts()[stage])
        )

    def wiring(self, service: str) -> Wiring:
        """How the service named `service` (a step id; a chain's first step) reads and writes."""
        chain = self.chain_of(service)
        if chain[0] != service:
            raise KeyError(f"step {service!r} runs in the chain of {chain[0]!r}: serve {chain[0]!r}")
        head = self.spec.step(service)
        inputs = tuple(
            Input(stage, self.spec.topic(stage), self.schema_name(stage), self.route_test(stage, service))
            for stage in self.spec.inputs(service)
        )
        members = tuple(
            Member(
                stage=step_id,
                error_policy=self.spec.step(step_id).error_policy,
                topic=self.spec.topic(step_id) if self.written(step_id) else None,
                schema=self.schema_name(step_id),
                partition_by=self.spec.step(step_id).partition_by,
                state_topic_prefix=self.spec.state_topic_prefix(step_id),
            )
            for step_id in chain
        )
        order = self.spec.topological_order()
        return Wiring(
            stage=service,
            group_id=f"fd.{self.spec.name}.{service}",
            inputs=inputs,
            members=members,
            dlq_topic=self.spec.dlq_topic,
            progress_topic=self.spec.progress_topic,
            control_topic=self.spec.control_topic,
            state_topic_prefix=self.spec.state_topic_prefix(service),
            max_in_flight=self.max_in_flight(service),
            max_buffered_rows=head.max_buffered_rows,
            replay_scope=frozenset(s for s in order if service in self.spec.downstream(s)),
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


def chain_groups(spec: PipelineSpec, steps: dict[str, Step[Any]]) -> tuple[list[list[str]], list[str]]:
    """The step ids each service runs (operator chaining, the pipeline's `chain:`), and any
    problem with explicit groups. A step can follow another in a chain when it reads that step
    alone, is that step's only successor, both are synchronous, and the first neither routes
    nor re-partitions its rows (a chain ends at a step with partition_by)."""

    def follows(prev: str, step_id: str) -> str | None:
        """Why `step_id` cannot follow `prev` in a chain (None: it can)."""
        if spec.inputs(step_id) != [prev]:
            return f"{step_id!r} does not read {prev!r} alone"
        if spec.successors(prev) != [step_id]:
            return f"{prev!r} feeds other steps too"
        if spec.step(prev).route is not None:
            return f"{prev!r} routes its rows"
        if spec.step(prev).partition_by is not None:
            return f"{prev!r} re-partitions its rows (partition_by)"
        if isinstance(steps[prev], AsyncStep) or isinstance(steps[step_id], AsyncStep):
            return "asynchronous steps run alone"
        if spec.step(prev).instances != spec.step(step_id).instances:
            return f"{prev!r} and {step_id!r} ask for different instances"
        return None

    order = spec.topological_order()
    if spec.chain == "none":
        return [[s] for s in order], []
    if spec.chain == "auto":
        groups: list[list[str]] = []
        for step_id in order:
            if groups and follows(groups[-1][-1], step_id) is None:
                groups[-1].append(step_id)
            else:
                groups.append([step_id])
        return groups, []
    problems = []
    for group in spec.chain:
        unknown = [s for s in group if s not in steps]
        problems += [f"chain {group}: no step {s!r}" for s in unknown]
        for prev, step_id in itertools.pairwise(group):
            why = None if unknown else follows(prev, step_id)
            if why is not None:
                problems.append(f"chain {group}: {step_id!r} cannot follow {prev!r}: {why}")
    listed = [s for group in spec.chain for s in group]
    problems += [
        f"chain: step {s!r} is in two chains" for s in sorted({s for s in listed if listed.count(s) > 1})
    ]
    groups = [list(g) for g in spec.chain] + [[s] for s in order if s not in listed]
    position = {s: i for i, s in enumerate(order)}
    groups.sort(key=lambda g: position.get(g[0], 0))
    return groups, problems


def _check_quality(spec: PipelineSpec, fields: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The `quality:` section and every stage's gates against the metrics of that stage (a
    misspelt gate fails at once, not at the run's end). Stages without fields were reported."""
    layouts, problems = stage_layouts(spec, fields)
    for stage in spec.stages:
        layout = layouts.get(stage)
        if layout is None:
            continue
        try:
            parse_gates(spec.gates_of(stage), layout.metrics(), stage=stage, described=layout.describe())
        except GateConfigError as exc:
            problems.append(f"gates of {stage}: {exc}")
    return problems


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


def _error(error: Any, params: type[BaseModel] | None = None) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden" and params is not None:
        return f"unknown param {where!r}; {_param_hint(params, error['loc'])}"
    # pydantic's prefix of a validator's ValueError says nothing to whoever wrote the YAML.
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _param_hint(params: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The params a misspelled one probably meant, at its own level (`llm.modle` -> llm's)."""
    import difflib

    model = params
    for part in loc[:-1]:
        field_info = model.model_fields.get(str(part))
        annotation = field_info.annotation if field_info is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    names = list(model.model_fields)
    near = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f"did you mean {near[0]!r}?" if near else f"params: {', '.join(names)}"


def _import(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)
