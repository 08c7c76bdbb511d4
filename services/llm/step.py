"""The base of every LLM step: an `llm:` endpoint, the shared machinery, and the fields every
LLM step adds about its generation (model, cached, latency, tokens)."""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from services.llm.machinery import Generation, LLMMachinery
from shared.llm import RESERVED_KEYS, LLMEndpoint, LLMRequest
from shared.step import AsyncStep, Row, StepContext, StepParams, operational


def _endpoint() -> LLMEndpoint:
    return LLMEndpoint()


class LLMParams(StepParams):
    llm: LLMEndpoint = Field(default_factory=_endpoint)
    cache: bool = operational(
        True, description="False: never answer from the generation cache (answers are still stored)"
    )


LP = TypeVar("LP", bound=LLMParams)


class RowSettingsError(ValueError):
    """A row's decode profile cannot be used."""


class LLMStep(AsyncStep[LP]):
    #: what each kind of metadata is called in this step's rows
    meta_fields: ClassVar[dict[str, str]] = {
        "model": "teacher_model",
        "cached": "teacher_cached",
        "latency_ms": "teacher_latency_ms",
        "prompt_tokens": "prompt_tokens",
        "completion_tokens": "completion_tokens",
    }

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.machinery = LLMMachinery(self.name, self.params.llm)
        self._ctx: StepContext | None = None

    def open(self, ctx: StepContext) -> None:
        self._ctx = ctx
        self.machinery.open(ctx)

    def close(self) -> None:
        self.machinery.close()

    async def aclose(self) -> None:
        await self.machinery.aclose()

    def concurrency(self) -> int:
        llm = self.params.llm
        if llm.mode == "batch":
            # A row waits in its job: as many in flight as the jobs in flight hold (the HTTP
            # concurrency of online fallbacks is still the limiter's max_concurrency).
            return llm.batch.max_rows * llm.batch.max_jobs
        return llm.max_concurrency

    def ready(self) -> str | None:
        return self.machinery.ready()

    def reads_cache(self) -> bool:
        """The step's `cache` param, and the run's own option (`produce --no-cache`)."""
        return self.params.cache and (self._ctx is None or self._ctx.cache_enabled())

    async def generate(self, request: LLMRequest, *, fresh: bool = False, store: bool = True) -> Generation:
        """The machinery's answer; `fresh` skips the cache look-up (a retry of an answer that
        failed validation), `store=False` leaves storing to the step (after it validated)."""
        use_cache = self.reads_cache() and not fresh
        return await self.machinery.generate(request, use_cache=use_cache, store=store)

    def settings(self, row: Row | None = None, field: str | None = None) -> dict[str, Any]:
        """Decode settings: the endpoint's generation_kwargs, then the row's profile in `field`
        (a dict, or its JSON text) over them; nulls are left out."""
        settings = dict(self.params.llm.generation_kwargs)
        profile = row.get(field) if row is not None and field else None
        if isinstance(profile, str):  # Avro rows may carry the profile as a JSON string
            try:
                profile = json.loads(profile) if profile.strip() else None
            except json.JSONDecodeError as exc:
                raise RowSettingsError(f"{field} is not JSON: {exc}") from None
        if profile:
            if not isinstance(profile, dict):
                raise RowSettingsError(f"{field} must be an object, got {type(profile).__name__}")
            clash = RESERVED_KEYS & profile.keys()
            if clash:
                raise RowSettingsError(f"{field} may not set {sorted(clash)}")
            settings |= profile
        return {k: v for k, v in settings.items() if v is not None}

    def meta(self, generations: list[Generation]) -> Row:
        """The metadata fields for the generations behind one output row: the last model, cached
        only if all were, latency and tokens summed (what the row cost)."""
        f = self.meta_fields

        def total(name: str) -> int | None:
            counts = [getattr(g.response, name) for g in generations]
            return None if any(c is None for c in counts) else sum(counts)

        return {
            f["model"]: generations[-1].response.model,
            f["cached"]: all(g.cached for g in generations),
            f["latency_ms"]: sum(g.latency_ms for g in generations),
            f["prompt_tokens"]: total("prompt_tokens"),
            f["completion_tokens"]: total("completion_tokens"),
        }
