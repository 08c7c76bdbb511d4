"""evol_instruct: Evol-Instruct, an instruction rewritten into a harder one, round by round.

The published scheme of Xu et al., "WizardLM: Empowering Large Language Models to Follow Complex
Instructions" (arXiv:2304.12244, ICLR 2024): each round applies one mutation to the instruction,
in depth (add constraints, deepen, concretize, increase reasoning steps; the "Prompt Rewriter"
prompt) or in breadth (a new, rarer prompt of the same domain; the "Prompt Creator" prompt), with
the prompts of the paper's released code. An evolution fails, and the instruction stays as it
was for the next round, by the paper's elimination rules that need no second model: an empty
answer, one of only punctuation and stop words, one that copies the prompt's scaffolding
("#Rewritten Prompt#", "given prompt", ...), or a short refusal ("sorry" in under 80 words).
The mutation of each round is chosen by a hash of (seed, instruction, round): the same row
evolves the same way in every run, so the requests, and the cache, are reproducible.
"""

from __future__ import annotations

import hashlib
import re
from typing import ClassVar, Literal

from pydantic import Field

from services.llm.machinery import Generation
from services.llm.step import LLMParams, LLMStep
from shared.llm import LLMRequest
from shared.step import Row

Mutation = Literal["constraints", "deepen", "concretizing", "reasoning", "breadth"]
MUTATIONS: tuple[Mutation, ...] = ("constraints", "deepen", "concretizing", "reasoning", "breadth")

DEPTH_PROMPT = """\
I want you act as a Prompt Rewriter.
Your objective is to rewrite a given prompt into a more complex version to make those famous AI \
systems (e.g., ChatGPT and GPT4) a bit harder to handle.
But the rewritten prompt must be reasonable and must be understood and responded by humans.
Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#:. \
Also, please do not omit the input in #The Given Prompt#.
You SHOULD complicate the given prompt using the following method:
{method}
You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can \
only add 10 to 20 words into #The Given Prompt#.
'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed \
to appear in #Rewritten Prompt#
#The Given Prompt#:
{prompt}
#Rewritten Prompt#:
"""

BREADTH_PROMPT = """\
I want you act as a Prompt Creator.
Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.
This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.
The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.
The #Created Prompt# must be reasonable and must be understood and responded by humans.
'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to \
appear in #Created Prompt#
#Given Prompt#:
{prompt}
#Created Prompt#:
"""

METHODS: dict[str, str] = {
    "constraints": "Please add one more constraints/requirements into #The Given Prompt#'",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth "
    "of the inquiry can be increased.",
    "concretizing": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you "
    "can rewrite it to explicitly request multiple-step reasoning.",
}

_SCAFFOLD = re.compile(r"#?(?:the\s+)?(?:given|rewritten|created)\s+prompt#?", re.IGNORECASE)
_STOP_WORDS = frozenset(
    {"a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by", "is", "are"}
    | {"was", "were", "be", "been", "it", "this", "that", "these", "those", "as", "from", "not", "no"}
)


def prompt_for(mutation: str, instruction: str) -> str:
    if mutation == "breadth":
        return BREADTH_PROMPT.format(prompt=instruction)
    return DEPTH_PROMPT.format(method=METHODS[mutation], prompt=instruction)


def failed(evolved: str) -> str | None:
    """Why an evolution is eliminated (the paper's rules that need no judge), or None."""
    words = re.findall(r"[A-Za-z0-9']+", evolved.lower())
    if not evolved.strip():
        return "empty"
    if all(w in _STOP_WORDS for w in words):
        return "only punctuation and stop words"
    if _SCAFFOLD.search(evolved):
        return "copies the prompt's scaffolding"
    if "sorry" in words and len(words) < 80:
        return "a refusal"
    return None


class EvolParams(LLMParams):
    instruction_field: str = "instruction"
    num_evolutions: int = Field(1, ge=1, le=10)
    mutations: tuple[Mutation, ...] = Field(MUTATIONS, min_length=1)
    seed: int = 0
    output: str = "evolved_instruction"


class EvolInstructStep(LLMStep[EvolParams]):
    name: ClassVar[str] = "evol_instruct"
    outputs: ClassVar[tuple[str, ...]] = (
        "evolved_instruction",
        "evolved_instructions",
        "evolutions",
        "teacher_model",
        "teacher_cached",
        "teacher_latency_ms",
        "prompt_tokens",
        "completion_tokens",
    )

    def renamed(self) -> dict[str, str]:
        return {"evolved_instruction": self.params.output}

    def reads(self) -> set[str]:
        return {self.params.instruction_field}

    def mutation(self, instruction: str, round_: int) -> str:
        digest = hashlib.sha256(f"{self.params.seed}\x1f{round_}\x1f{instruction}".encode()).digest()
        return self.params.mutations[int.from_bytes(digest[:8], "big") % len(self.params.mutations)]

    async def process_row_async(self, row: Row) -> Row:
        instruction = row.get(self.params.instruction_field)
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"{self.params.instruction_field} must be a non-empty string")
        history: list[str] = []
        applied: list[str] = []
        generations: list[Generation] = []
        for round_ in range(self.params.num_evolutions):
            mutation = self.mutation(instruction, round_)
            request = LLMRequest(
                [{"role": "user", "content": prompt_for(mutation, instruction)}], self.settings()
            )
            generation = await self.generate(request)
            generations.append(generation)
            evolved = generation.text.strip()
            why = failed(evolved)
            applied.append(mutation if why is None else f"{mutation} (failed: {why})")
            if why is None:
                instruction = evolved
            history.append(instruction)
        return row | {
            self.params.output: instruction,
            "evolved_instructions": history,
            "evolutions": applied,
            **self.meta(generations),
        }
