"""self_instruct: new user instructions generated from a context, Self-Instruct style.

The scheme of Wang et al., "Self-Instruct: Aligning Language Models with Self-Generated
Instructions" (arXiv:2212.10560, ACL 2023), as distilabel adapted it for a given application and
context: one request asks for `num_instructions` diverse queries an AI application
(`application_description`) could receive about the row's context (`input_field`); the numbered
or bulleted answer is split into instructions, and the paper's filters drop those a language
model cannot answer or that are not instructions: fewer than 3 or more than 150 words, a keyword
about images, graphs, pictures, files, maps, drawing, plotting or going somewhere, a start with
punctuation or a non-ASCII character, and repeats. (The paper's ROUGE-L < 0.7 filter against
the growing task pool needs the whole pool: a downstream dedup step plays that part here.)
`explode: true` makes one child row per instruction (shared/fanout.py) in `generated_instruction`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field

from services.llm.step import LLMParams, LLMStep
from services.llm.templates import Template
from shared.fanout import CHILD_FIELDS, children, with_child_fields
from shared.llm import LLMRequest
from shared.step import Row, StepParams

PROMPT = """\
# Task Description
Develop {{ num_instructions }} user queries that can be received by the given AI application and \
applicable to the provided context. Emphasize diversity in verbs and linguistic structures within \
the model's textual capabilities.

# Criteria for Queries
{{ criteria }}

# AI Application
{{ application_description }}

# Context
{{ context }}

# Output
"""

CRITERIA = """\
Incorporate a diverse range of verbs, avoiding repetition.
Ensure queries are compatible with AI model's text generation functions and are limited to 1-2 \
sentences.
Design queries to be self-contained and standalone.
Blend interrogative (e.g., "What is the significance of x?") and imperative (e.g., "Detail the \
process of x.") styles.
Write each query on its own line, numbered."""

#: the paper's keyword filter: tasks a language model cannot do
_UNSUITABLE = re.compile(
    r"\b(?:image|images|graph|graphs|picture|pictures|file|files|map|maps|draw|plot|go to|video|audio)\b",
    re.I,
)
_ITEM = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•])\s*")


def split_instructions(text: str) -> list[str]:
    """The instructions of a numbered or bulleted answer (unmarked lines count as items too)."""
    items = []
    for line in text.splitlines():
        item = _ITEM.sub("", line).strip().strip('"').strip()
        if item and not item.startswith("#"):
            items.append(item)
    return items


def kept(instruction: str) -> bool:
    """The Self-Instruct filters that need no pool."""
    words = instruction.split()
    if not 3 <= len(words) <= 150:
        return False
    if _UNSUITABLE.search(instruction):
        return False
    first = instruction[0]
    return first.isascii() and (first.isalnum() or first in "\"'(")


class SelfInstructParams(LLMParams):
    input_field: str = "input"
    num_instructions: int = Field(5, ge=1, le=50)
    application_description: str = "An AI assistant that answers questions and follows instructions."
    criteria: str = CRITERIA
    #: one child row per instruction instead of a list column
    explode: bool = False


class SelfInstructStep(LLMStep[SelfInstructParams]):
    name: ClassVar[str] = "self_instruct"
    outputs: ClassVar[tuple[str, ...]] = (
        "instructions",
        "generated_instruction",
        "teacher_model",
        "teacher_cached",
        "teacher_latency_ms",
        "prompt_tokens",
        "completion_tokens",
        *CHILD_FIELDS,
    )
    schema: ClassVar[dict[str, Any]] = with_child_fields("steps/self_instruct.avsc")

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.prompt = Template(PROMPT, "self_instruct prompt")

    def active_outputs(self) -> tuple[str, ...]:
        if self.params.explode:
            return tuple(o for o in self.outputs if o != "instructions")
        return tuple(o for o in self.outputs if o != "generated_instruction" and o not in CHILD_FIELDS)

    def reads(self) -> set[str]:
        return {self.params.input_field}

    def request(self, row: Row) -> LLMRequest:
        p = self.params
        context = row.get(p.input_field)
        if context is None or not str(context).strip():
            raise ValueError(f"{p.input_field} is empty: no context to write instructions about")
        content = self.prompt.render(
            {},
            num_instructions=p.num_instructions,
            criteria=p.criteria,
            application_description=p.application_description,
            context=str(context),
        )
        return LLMRequest([{"role": "user", "content": content}], self.settings())

    async def process_row_async(self, row: Row) -> Row | list[Row]:
        generation = await self.generate(self.request(row))
        instructions: list[str] = []
        for item in split_instructions(generation.text):
            if kept(item) and item not in instructions:
                instructions.append(item)
        instructions = instructions[: self.params.num_instructions]
        meta = self.meta([generation])
        if not self.params.explode:
            return row | {"instructions": instructions, **meta}
        # An answer with no usable instruction makes no child: the row is dropped.
        return children(row, [{"generated_instruction": i, **meta} for i in instructions])
