"""structured_generation: an answer as JSON that validates against a JSON schema.

The request carries `response_format: {type: json_schema, json_schema: {name, schema, strict}}`
(OpenAI's structured outputs; vLLM, SGLang and Ollama accept it too; the Anthropic client states
the schema in the system prompt). The answer is parsed (a ```json fence is tolerated) and
validated with `jsonschema`; an invalid answer is asked again, fresh, up to
`max_invalid_retries` times, then the row fails with the validation error (dead-lettered under
COLLECT, the error naming the path and the rule broken). The schema itself is checked when the
pipeline loads. Only valid answers enter the generation cache.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import jsonschema
from jsonschema.exceptions import best_match
from pydantic import Field, field_validator

from services.llm.machinery import Generation
from services.llm.step import LLMParams, LLMStep
from services.llm.templates import Template
from shared.llm import LLMRequest
from shared.step import Row, StepParams

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n\s*```\s*$", re.DOTALL | re.IGNORECASE)


class StructuredParams(LLMParams):
    template: str = Field("{{ instruction }}", description="Jinja2 template of the user prompt")
    system_prompt: str | None = None
    json_schema: dict[str, Any] = Field(description="the JSON schema every answer must satisfy")
    schema_name: str = Field("output", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    strict: bool = True
    max_invalid_retries: int = Field(2, ge=0, description="fresh requests after an invalid answer")
    decode_profile_field: str | None = None
    output: str = "structured_output"

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        validator = jsonschema.validators.validator_for(value)
        try:
            validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return value

    @field_validator("template", "system_prompt")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            Template(value)
        return value


class StructuredOutputInvalid(ValueError):
    """Every answer failed the JSON schema; the message carries the last validation error."""


class StructuredGenerationStep(LLMStep[StructuredParams]):
    name: ClassVar[str] = "structured_generation"
    outputs: ClassVar[tuple[str, ...]] = (
        "structured_output",
        "structured_attempts",
        "teacher_model",
        "teacher_cached",
        "teacher_latency_ms",
        "prompt_tokens",
        "completion_tokens",
    )

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self.template = Template(p.template, "template")
        self.system = Template(p.system_prompt, "system_prompt") if p.system_prompt else None
        self.validator = jsonschema.validators.validator_for(p.json_schema)(p.json_schema)

    def renamed(self) -> dict[str, str]:
        return {"structured_output": self.params.output}

    def reads(self) -> set[str]:
        fields = set(self.template.variables)
        if self.system is not None:
            fields |= self.system.variables
        return fields

    def request(self, row: Row) -> LLMRequest:
        p = self.params
        messages = [{"role": "user", "content": self.template.render(row)}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system.render(row)})
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": p.schema_name, "schema": p.json_schema, "strict": p.strict},
        }
        return LLMRequest(messages, self.settings(row, p.decode_profile_field), response_format)

    def validate(self, text: str) -> Any:
        """The answer's JSON value; raises ValueError saying what is wrong with it."""
        fenced = _FENCE.match(text)
        try:
            value = json.loads(fenced.group("body") if fenced else text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        error = best_match(self.validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ValueError(f"schema violation at {where}: {error.message}")
        return value

    async def process_row_async(self, row: Row) -> Row:
        request = self.request(row)
        generations: list[Generation] = []
        reason = ""
        for attempt in range(self.params.max_invalid_retries + 1):
            generation = await self.generate(request, fresh=attempt > 0, store=False)
            generations.append(generation)
            try:
                value = self.validate(generation.text)
            except ValueError as exc:
                reason = str(exc)
                continue
            self.machinery.remember(generation)
            return row | {
                self.params.output: json.dumps(value, ensure_ascii=False, separators=(",", ":")),
                "structured_attempts": len(generations),
                **self.meta(generations),
            }
        raise StructuredOutputInvalid(f"no valid answer in {len(generations)} attempts; the last: {reason}")
