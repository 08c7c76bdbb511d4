"""The step catalogue and the step contract: names, construction, readable errors, declared
outputs checked against schemas, signatures that ignore operational params."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from services.text_generation.step import TextGenerationStep
from shared.pipeline import PipelineSpec
from shared.registry import Registry, UnknownName
from shared.step import STEPS, Row, Step, StepContractError, StepParams, build_step, operational, step_class

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "text2sql" / "pipeline.yaml"
CATALOGUE = {
    "canonicalize", "hash", "dedup", "text_generation", "clean_sql", "rule_filter",
    "filter_by_bool", "sql_eval", "score", "keep_by_score", "chat_generation", "llm_judge",
    "structured_generation", "evol_instruct", "self_instruct",
}  # fmt: skip


def test_catalogue_names_come_from_entry_points() -> None:
    assert set(STEPS.names()) >= CATALOGUE
    assert STEPS.get("text_generation") is TextGenerationStep
    assert "teacher" not in STEPS  # the text-to-SQL teacher is a configuration of text_generation
    for name in CATALOGUE:
        cls = STEPS.get(name)
        assert issubclass(cls, Step) and cls.name == name
        cls.schema_fields()  # every built-in step's outputs agree with its schema


def test_build_step_validates_params() -> None:
    step = build_step("rule_filter", {"field": "sql", "min_chars": 8})
    assert step.params.model_dump()["min_chars"] == 8
    with pytest.raises(ValueError):
        build_step("rule_filter", {"field": "sql", "min_char": 8})


def test_unknown_step_lists_known_ones() -> None:
    with pytest.raises(UnknownName) as info:
        build_step("xyzzy", {})
    message = str(info.value)
    assert message.startswith("unknown step 'xyzzy'; known: canonicalize, chat_generation, clean_sql")
    assert "text_generation" in message


def test_a_misspelled_step_names_the_likely_one() -> None:
    with pytest.raises(UnknownName) as info:
        build_step("sql_evaluate", {})
    assert str(info.value) == "unknown step 'sql_evaluate'; did you mean 'sql_eval'?"


def test_a_dotted_path_must_name_a_step() -> None:
    with pytest.raises(TypeError, match=r"is not a shared\.step\.Step"):
        step_class("shared.step:StepParams")


def test_example_pipeline_builds_with_these_params() -> None:
    spec = yaml.safe_load(PIPELINE.read_text())
    for entry in spec["steps"]:
        step = build_step(entry["step"], entry.get("params") or {})
        for field in step.output_fields():
            assert {"name", "type"} <= set(field)


def test_a_registry_takes_decorated_items_and_refuses_a_second_owner() -> None:
    registry: Registry[type] = Registry("fastdistill.tests-nothing", "widget")

    @registry.register("w")
    class W:
        pass

    assert registry.get("w") is W and "w" in registry and registry.names() == ["w"]
    registry.add("w", W)  # the same thing again is fine
    with pytest.raises(ValueError, match="widget 'w' is registered twice"):
        registry.add("w", int)
    with pytest.raises(UnknownName, match="unknown widget 'x'; known: w"):
        registry.get("x")


class EchoParams(StepParams):
    output: str = "echo"
    workers: int = operational(4, ge=1)


class Echo(Step[EchoParams]):
    name: ClassVar[str] = "echo"
    outputs: ClassVar[tuple[str, ...]] = ("echo",)
    schema: ClassVar[dict[str, Any]] = {
        "type": "record",
        "name": "EchoFields",
        "fields": [{"name": "echo", "type": "string"}],
    }

    def renamed(self) -> dict[str, str]:
        return {"echo": self.params.output}

    def process_row(self, row: Row) -> Row:
        return row | {self.params.output: str(row)}


def test_params_follow_the_type_argument_and_outputs_are_renamed() -> None:
    assert Echo.Params is EchoParams
    step = Echo(output="copy")
    assert step.params.output == "copy"
    assert step.output_fields() == [{"name": "copy", "type": "string"}]


def test_operational_params_do_not_change_the_signature() -> None:
    assert Echo(workers=1).signature() == Echo(workers=16).signature()
    assert Echo(output="a").signature() != Echo(output="b").signature()
    assert EchoParams.operational_fields() == {"workers"}
    # an LLM step's endpoint is a nested model: its operational fields are left out too
    slow = TextGenerationStep(llm={"max_concurrency": 2, "max_retries": 0, "api_key_env": "A"})
    fast = TextGenerationStep(llm={"max_concurrency": 64, "request_timeout_s": 5, "give_up_after_s": 1})
    assert slow.signature() == fast.signature() == TextGenerationStep(cache=False).signature()
    assert TextGenerationStep(llm={"model": "m2"}).signature() != slow.signature()
    assert TextGenerationStep(llm={"generation_kwargs": {"temperature": 1}}).signature() != slow.signature()


def test_outputs_and_schema_must_agree_both_ways() -> None:
    class Undeclared(Echo):
        name: ClassVar[str] = "undeclared"
        outputs: ClassVar[tuple[str, ...]] = ()
        schema: ClassVar[dict[str, Any]] = Echo.schema

    assert Undeclared().output_fields() == []  # declares nothing: adds nothing

    class Untyped(Echo):
        name: ClassVar[str] = "untyped"
        outputs: ClassVar[tuple[str, ...]] = ("echo", "extra")

    with pytest.raises(StepContractError, match=r"not in the schema: \['extra'\]"):
        Untyped().output_fields()

    class Missing(Echo):
        name: ClassVar[str] = "no_such_schema_file"
        schema: ClassVar[None] = None

    with pytest.raises(StepContractError, match=r"schemas/steps/no_such_schema_file.avsc does not exist"):
        Missing().output_fields()

    class Extra(Echo):
        name: ClassVar[str] = "extra"
        schema: ClassVar[dict[str, Any]] = {
            "type": "record",
            "name": "X",
            "fields": [{"name": "echo", "type": "string"}, {"name": "more", "type": "int"}],
        }

    with pytest.raises(StepContractError, match=r"not declared in `outputs`: \['more'\]"):
        Extra().output_fields()


@pytest.mark.parametrize(
    "reserved", ["seeds", "dlq", "control", "runs", "progress", "gates", "sink", "coordinator"]
)
def test_reserved_step_ids_are_refused(reserved: str) -> None:
    with pytest.raises(ValueError, match=f"step id {reserved!r} is reserved"):
        PipelineSpec.model_validate({"name": "p", "steps": [{"id": reserved, "step": "score"}]})


def test_an_llm_provider_is_checked_by_name_when_the_pipeline_loads() -> None:
    from fastdistill.plan import PipelinePlan, PlanError
    from shared.llm import LLM_CLIENTS

    def pipeline(provider: str) -> PipelineSpec:
        llm = {"provider": provider}
        return PipelineSpec.model_validate(
            {"name": "p", "steps": [{"id": "t", "step": "text_generation", "params": {"llm": llm}}]}
        )

    # Found by `fastdistill validate`, not when the step's service opens and builds its client.
    with pytest.raises(PlanError) as caught:
        PipelinePlan.build(pipeline("opena1"))
    (problem,) = caught.value.problems
    expected = "step 't' (text_generation): llm.provider: unknown LLM client 'opena1'; known: "
    assert problem.startswith(expected)
    assert "anthropic" in problem and "openai" in problem
    # A client registered by decorator is known as well as one by entry point.
    LLM_CLIENTS.add("tests_decorated_client", LLM_CLIENTS.get("openai"))
    PipelinePlan.build(pipeline("tests_decorated_client"))
