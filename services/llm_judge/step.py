"""llm_judge: an LLM judges each row, by a rubric (a numeric rating and its rationale) or by
comparing candidates (a ranking, best first).

`mode: rating` renders `template` (Jinja2; UltraFeedback-style by default) with the row and
`min_score`/`max_score`, and reads `Rating: <n>` and a rationale back with a tolerant parser
(services/llm_judge/parse.py). `mode: pairwise` shows the list in `candidates_field` (e.g. the
answers of two teachers gathered by a join) as `[1] ... [2] ...` and reads `Ranking: 2 > 1`; the
row gets `ranking` (0-based indexes, best first) and `chosen` (the best candidate's text).

An answer that cannot be read is asked again (a fresh request, not the cache) up to
`max_parse_retries` times; then the row keeps a null rating and `judge_error` says why
(`on_unparsed: null`), or fails as a row error (`on_unparsed: error`). Only readable answers
enter the generation cache, so a replay never re-reads a bad one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from services.llm.machinery import Generation
from services.llm.step import LLMParams, LLMStep
from services.llm.templates import Template
from services.llm_judge.parse import Ranking, Rating, Unparsed, parse_ranking, parse_rating
from shared.llm import LLMRequest
from shared.step import Row, StepParams

RATING_TEMPLATE = """\
Evaluate the response to the instruction below on a scale of {{ min_score }} to {{ max_score }} \
({{ min_score }}: unhelpful or wrong, {{ max_score }}: fully correct, helpful and honest).

Instruction: {{ instruction }}
Response: {{ generation }}

Answer in the form:
Rating: <a number from {{ min_score }} to {{ max_score }}>
Rationale: <one short paragraph>"""

PAIRWISE_TEMPLATE = """\
Compare the candidate responses to the instruction below and rank them from best to worst \
(correctness first, then helpfulness and clarity).

Instruction: {{ instruction }}
{% for candidate in candidates %}
[{{ loop.index }}] {{ candidate }}
{%- endfor %}

Answer in the form:
Ranking: <candidate numbers, best first, e.g. 2 > 1>
Rationale: <one short paragraph>"""

#: names the step itself provides to the template (not row fields)
PROVIDED = frozenset({"min_score", "max_score", "candidates"})


class JudgeParams(LLMParams):
    mode: Literal["rating", "pairwise"] = "rating"
    template: str | None = Field(None, description="Jinja2 rubric; None: the mode's default")
    system_prompt: str | None = None
    min_score: float = 1
    max_score: float = 5
    #: pairwise: the list column holding the candidates
    candidates_field: str = "generations"
    max_parse_retries: int = Field(2, ge=0, description="fresh requests after an unreadable answer")
    on_unparsed: Literal["null", "error"] = "null"

    @model_validator(mode="after")
    def _scale(self) -> JudgeParams:
        if self.min_score >= self.max_score:
            raise ValueError("min_score must be below max_score")
        return self


class JudgeUnparsed(ValueError):
    """No readable verdict after every retry (`on_unparsed: error`)."""


class LLMJudgeStep(LLMStep[JudgeParams]):
    name: ClassVar[str] = "llm_judge"
    outputs: ClassVar[tuple[str, ...]] = (
        "rating",
        "ranking",
        "chosen",
        "rationale",
        "judgement",
        "judge_error",
        "judge_model",
        "judge_cached",
        "judge_latency_ms",
        "judge_prompt_tokens",
        "judge_completion_tokens",
    )
    meta_fields: ClassVar[dict[str, str]] = {
        "model": "judge_model",
        "cached": "judge_cached",
        "latency_ms": "judge_latency_ms",
        "prompt_tokens": "judge_prompt_tokens",
        "completion_tokens": "judge_completion_tokens",
    }

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        default = RATING_TEMPLATE if p.mode == "rating" else PAIRWISE_TEMPLATE
        self.template = Template(p.template or default, "template")
        self.system = Template(p.system_prompt, "system_prompt") if p.system_prompt else None

    def active_outputs(self) -> tuple[str, ...]:
        skip = {"ranking", "chosen"} if self.params.mode == "rating" else {"rating"}
        return tuple(o for o in self.outputs if o not in skip)

    def reads(self) -> set[str]:
        fields = set(self.template.variables) - PROVIDED
        if self.system is not None:
            fields |= self.system.variables - PROVIDED
        if self.params.mode == "pairwise":
            fields.add(self.params.candidates_field)
        return fields

    def candidates(self, row: Row) -> list[str]:
        value = row.get(self.params.candidates_field)
        if not isinstance(value, list) or not value:
            raise ValueError(f"{self.params.candidates_field} must be a non-empty list of candidates")
        return ["" if c is None else str(c) for c in value]

    def request(self, row: Row) -> LLMRequest:
        p = self.params
        extra: dict[str, Any] = {"min_score": f"{p.min_score:g}", "max_score": f"{p.max_score:g}"}
        if p.mode == "pairwise":
            extra["candidates"] = self.candidates(row)
        messages = [{"role": "user", "content": self.template.render(row, **extra)}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system.render(row, **extra)})
        return LLMRequest(messages, self.settings())

    def verdict(self, text: str, row: Row) -> Rating | Ranking:
        if self.params.mode == "rating":
            return parse_rating(text, self.params.min_score, self.params.max_score)
        return parse_ranking(text, len(self.candidates(row)))

    async def process_row_async(self, row: Row) -> Row:
        request = self.request(row)
        generations: list[Generation] = []
        error: Unparsed | None = None
        verdict: Rating | Ranking | None = None
        for attempt in range(self.params.max_parse_retries + 1):
            generation = await self.generate(request, fresh=attempt > 0, store=False)
            generations.append(generation)
            try:
                verdict = self.verdict(generation.text, row)
            except Unparsed as exc:
                error = exc
                continue
            self.machinery.remember(generation)
            break
        if verdict is None and self.params.on_unparsed == "error":
            raise JudgeUnparsed(f"{error} (after {len(generations)} answers)")
        return (
            row
            | self._fields(row, verdict, error if verdict is None else None)
            | {
                "judgement": generations[-1].text,
                **self.meta(generations),
            }
        )

    def _fields(self, row: Row, verdict: Rating | Ranking | None, error: Unparsed | None) -> Row:
        out: Row = {
            "rationale": verdict.rationale if verdict else None,
            "judge_error": str(error) if error else None,
        }
        if self.params.mode == "rating":
            out["rating"] = verdict.value if isinstance(verdict, Rating) else None
            return out
        order = verdict.order if isinstance(verdict, Ranking) else []
        out["ranking"] = order
        out["chosen"] = self.candidates(row)[order[0]] if order else None
        return out
