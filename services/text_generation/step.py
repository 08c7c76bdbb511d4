"""text_generation: a Jinja2 prompt per row, sent to an LLM endpoint; one or N generations.

The prompt is `template` rendered with the row's fields (StrictUndefined: a variable no input
field provides does not load, a null or absent value at row time is a row error naming it); the
system prompt is `system_prompt` (a template too) or the row's `system_prompt_field`; decode
settings are the endpoint's `generation_kwargs` with the row's `decode_profile_field` over them.
`num_generations: N` makes N children of the row (shared/fanout.py: ids `<sample_id>:<i>`), each
its own request; the child's index is part of its cache identity (child 0 shares the entry of a
single generation of the same prompt). The text-to-SQL teacher is this step with its template.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import Field, field_validator

from services.llm.step import LLMParams, LLMStep
from services.llm.templates import Template
from shared.fanout import CHILD_FIELDS, children, with_child_fields
from shared.llm import LLMRequest
from shared.step import Row, StepParams

DEFAULT_TEMPLATE = "{{ instruction }}"


class TextGenerationParams(LLMParams):
    template: str = Field(DEFAULT_TEMPLATE, description="Jinja2 template of the user prompt")
    system_prompt: str | None = Field(None, description="Jinja2 template of the system prompt")
    system_prompt_field: str | None = Field(
        "system_prompt", description="row field holding a system prompt (when `system_prompt` is unset)"
    )
    decode_profile_field: str | None = "decode_profile"
    output: str = "generation"
    num_generations: int = Field(1, ge=1, le=64)

    @field_validator("template", "system_prompt")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            Template(value)
        return value


class TextGenerationStep(LLMStep[TextGenerationParams]):
    name: ClassVar[str] = "text_generation"
    outputs: ClassVar[tuple[str, ...]] = (
        "generation",
        "teacher_model",
        "teacher_cached",
        "teacher_latency_ms",
        "prompt_tokens",
        "completion_tokens",
        *CHILD_FIELDS,
    )
    schema: ClassVar[dict[str, Any]] = with_child_fields("steps/text_generation.avsc")

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self.template = Template(p.template, "template")
        self.system = Template(p.system_prompt, "system_prompt") if p.system_prompt is not None else None

    def renamed(self) -> dict[str, str]:
        return {"generation": self.params.output}

    def active_outputs(self) -> tuple[str, ...]:
        if self.params.num_generations == 1:
            return tuple(o for o in self.outputs if o not in CHILD_FIELDS)
        return self.outputs

    def reads(self) -> set[str]:
        fields = set(self.template.variables)
        if self.system is not None:
            fields |= self.system.variables
        return fields

    def messages(self, row: Row) -> list[dict[str, Any]]:
        user = self.template.render(row)
        if self.system is not None:
            system: Any = self.system.render(row)
        else:
            field = self.params.system_prompt_field
            system = row.get(field) if field else None
        head = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
        return [*head, {"role": "user", "content": user}]

    def requests(self, row: Row) -> list[LLMRequest]:
        messages = self.messages(row)
        settings = self.settings(row, self.params.decode_profile_field)
        # Each child is its own request (sampling makes them differ, as the settings allow); its
        # index is part of its cache identity, so N answers do not collapse into one entry.
        return [LLMRequest(messages, settings, variant=i) for i in range(self.params.num_generations)]

    async def process_row_async(self, row: Row) -> Row | list[Row] | None:
        generations = await asyncio.gather(*(self.generate(r) for r in self.requests(row)))
        outputs = [{self.params.output: g.text, **self.meta([g])} for g in generations]
        if self.params.num_generations == 1:
            return row | outputs[0]
        return children(row, outputs)
