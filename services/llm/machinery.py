"""What every LLM step shares, in one place: the client, an AIMD concurrency limit, retries that
honour Retry-After, the generation cache, endpoint health and metrics by step/endpoint/model.

A step builds an `LLMRequest` and awaits `generate`; everything between that and an answer (or a
row error) happens here. Retries are the machinery's own (the clients make one attempt each), so
every attempt is counted and an outage can be told from a row's bad luck: an attempt that fails
while the endpoint is down (services/llm/health.py) is not a retry spent, the row waits.

Generations are cached in a durable store under SHA-256 of the endpoint and the wire body
(`shared.llm.cache_key`): a replay, or a restart after an aborted transaction, pays for no row
twice, and another server or another prompt is asked afresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass

from services.llm import metrics
from services.llm.batch import JOB_STORE, Batcher, BatchRowFailed, Observer
from services.llm.batch_api import BatchAPI
from services.llm.health import EndpointHealth
from services.llm.limiter import AimdLimiter
from shared.llm import (
    LLMClient,
    LLMEndpoint,
    LLMRequest,
    LLMResponse,
    Overloaded,
    Rejected,
    Retryable,
    build_client,
    cache_key,
)
from shared.step import StateStore, StepContext

log = logging.getLogger(__name__)

CACHE_STORE = "generation_cache"


class GenerationFailed(RuntimeError):
    """A row the endpoint could not answer (rejected, or retries exhausted); dead-lettered."""


@dataclass
class Generation:
    response: LLMResponse
    cached: bool
    #: time spent in HTTP attempts for this generation, retries included; 0 when cached
    latency_ms: float
    #: the generation cache key (what was asked, and of whom)
    key: str

    @property
    def text(self) -> str:
        return self.response.text


class LLMMachinery:
    def __init__(self, step: str, endpoint: LLMEndpoint, client: LLMClient | None = None) -> None:
        if endpoint.min_concurrency > endpoint.max_concurrency:
            raise ValueError("llm.min_concurrency must not exceed llm.max_concurrency")
        self.step = step
        self.settings = endpoint
        self._client = client
        self.limiter = AimdLimiter(
            endpoint.max_concurrency,
            min_limit=endpoint.min_concurrency,
            increase_every=endpoint.increase_every,
        )
        self.cache: StateStore | None = None
        self._ctx: StepContext | None = None
        self._labels: dict[str, str] | None = None
        self._health: EndpointHealth | None = None
        #: batch mode's job manager (None online)
        self.batcher: Batcher | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self, ctx: StepContext) -> None:
        """Take the generation cache and build the client (a key named but unset fails here, when
        the service starts, not on every row)."""
        self._ctx = ctx
        self.cache = ctx.state_store(CACHE_STORE, durable_immediately=True, scope="global")
        _ = self.client
        if self.settings.mode == "batch":
            # Jobs are paid for when submitted: their records are written at once, like the cache.
            jobs = ctx.state_store(JOB_STORE, durable_immediately=True, scope="global")
            self.batcher = Batcher(
                self.settings.batch,
                batch_api(self.client),
                jobs,
                self._remember_batched,
                self.settings.model,
                self._batch_observer(),
            )

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self._client = build_client(self.settings)
        return self._client

    @property
    def labels(self) -> dict[str, str]:
        if self._labels is None:
            self._labels = {"step": self.step, "endpoint": self.client.endpoint, "model": self.settings.model}
            metrics.CONCURRENCY_LIMIT.labels(**self._labels).set(self.limiter.limit)
            metrics.ENDPOINT_UP.labels(**self._labels).set(1)
        return self._labels

    @property
    def health(self) -> EndpointHealth:
        if self._health is None:
            s = self.settings
            self._health = EndpointHealth(
                self.client.endpoint,
                self.client.probe,
                server_errors_to_open=s.server_errors_to_open,
                probe_every_s=s.probe_every_s,
                give_up_after_s=s.give_up_after_s,
                on_change=lambda up: metrics.ENDPOINT_UP.labels(**self.labels).set(int(up)),
            )
        return self._health

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self._health is not None:
            self._health.close()

    async def aclose(self) -> None:
        self.close()
        if self._client is not None:
            await self._client.aclose()

    def ready(self) -> str | None:
        """Why the step should take no rows now (the endpoint is down), or None."""
        return None if self._health is None else self._health.hold_reason()

    # -- generating ------------------------------------------------------------------------------
    def key(self, request: LLMRequest) -> str:
        return cache_key(self.client.endpoint, self.client.body(request), request.variant)

    async def generate(
        self, request: LLMRequest, *, use_cache: bool = True, store: bool = True
    ) -> Generation:
        """An answer to `request`: from the cache when `use_cache` and it is there, else from the
        endpoint (stored in the cache when `store`; a step that validates answers stores only
        those that pass, with `remember`)."""
        key = self.key(request)
        if use_cache:
            cached = self._cache_get(key)
            if cached is not None:
                metrics.CACHE_HITS.labels(**self.labels).inc()
                return Generation(cached, cached=True, latency_ms=0.0, key=key)
        if self.batcher is not None:
            batched = await self._batched(request, key)
            if batched is not None:
                return batched
        spent: list[float] = []
        response = await self._with_retries(request, spent)
        generation = Generation(response, cached=False, latency_ms=sum(spent) * 1000, key=key)
        if store:
            self.remember(generation)
        return generation

    def remember(self, generation: Generation) -> None:
        if self.cache is None or generation.cached:
            return
        r = generation.response
        usage = {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}
        value = {"generation": r.text, "model": r.model, "usage": usage}
        self.cache.put(generation.key, json.dumps(value).encode())

    # -- batch mode ------------------------------------------------------------------------------
    async def _batched(self, request: LLMRequest, key: str) -> Generation | None:
        """The answer of the row's batch job (already in the cache), or None when the job failed
        the row and `on_row_failure: online` asks for it online."""
        assert self.batcher is not None
        started = time.perf_counter()
        try:
            response = await self.batcher.answer(key, self.client.body(request))
        except BatchRowFailed as exc:
            if self.settings.batch.on_row_failure == "dead_letter":
                raise GenerationFailed(str(exc)) from exc
            log.debug("%s: asking online: %s", key, exc)
            return None
        return Generation(response, cached=False, latency_ms=(time.perf_counter() - started) * 1000, key=key)

    def _remember_batched(self, key: str, response: LLMResponse) -> None:
        for kind, count in (("prompt", response.prompt_tokens), ("completion", response.completion_tokens)):
            if count:
                metrics.TOKENS.labels(**self.labels, kind=kind).inc(count)
        self.remember(Generation(response, cached=False, latency_ms=0.0, key=key))

    def _batch_observer(self) -> Observer:
        def job(event: str) -> None:
            metrics.BATCH_JOBS.labels(**self.labels, event=event).inc()

        def rows(outcome: str, n: int) -> None:
            metrics.BATCH_ROWS.labels(**self.labels, outcome=outcome).inc(n)

        def waiting(n: int) -> None:
            metrics.BATCH_ROWS_WAITING.labels(**self.labels).set(n)

        return Observer(job, rows, waiting)

    def _cache_get(self, key: str) -> LLMResponse | None:
        if self.cache is None:
            return None
        blob = self.cache.get(key)
        if blob is None:
            return None
        try:
            value = json.loads(blob)
            usage = value.get("usage") or {}
            if not isinstance(value["generation"], str):
                raise TypeError("generation is not a string")
            return LLMResponse(
                text=value["generation"],
                model=str(value.get("model") or self.settings.model),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged entry costs one request, not the row.
            log.warning("ignoring unreadable generation cache entry %s: %s", key, exc)
            return None

    # -- attempts --------------------------------------------------------------------------------
    async def _with_retries(self, request: LLMRequest, spent: list[float]) -> LLMResponse:
        failures = 0
        while True:
            await self.health.wait_up()
            try:
                return await self._attempt(request, spent)
            except Rejected as exc:
                raise GenerationFailed(f"endpoint rejected the request: {exc}") from exc
            except Retryable as exc:
                if self.health.down:
                    continue  # an outage, not this row's failure: it waits, no retry spent
                failures += 1
                if failures > self.settings.max_retries:
                    raise GenerationFailed(f"gave up after {failures} attempts: {exc}") from exc
                metrics.RETRIES.labels(**self.labels).inc()
                await asyncio.sleep(self._wait(exc, failures))

    def _wait(self, exc: Retryable, failures: int) -> float:
        s = self.settings
        if exc.retry_after is not None:
            # At least what the server asked, plus jitter so the rejected herd does not return at once.
            asked = min(exc.retry_after, s.max_retry_after_s)
            return asked * (1 + random.uniform(0, 0.25)) + random.uniform(0, 0.05)
        # Full jitter exponential backoff (tenacity's wait_random_exponential).
        return random.uniform(0, min(s.backoff_max_s, s.backoff_base_s * 2**failures))

    async def _attempt(self, request: LLMRequest, spent: list[float]) -> LLMResponse:
        labels = self.labels
        outcome = "ok"
        async with self.limiter as epoch:
            metrics.INFLIGHT.labels(**labels).inc()
            started = time.perf_counter()
            try:
                response = await self.client.complete(request)
            except Overloaded as exc:
                outcome = exc.outcome
                if self.limiter.on_overload(epoch):
                    metrics.CONCURRENCY_LIMIT.labels(**labels).set(self.limiter.limit)
                raise
            except (Retryable, Rejected) as exc:
                outcome = exc.outcome
                self.health.on_failure(exc)
                raise
            finally:
                elapsed = time.perf_counter() - started
                spent.append(elapsed)
                metrics.INFLIGHT.labels(**labels).dec()
                metrics.REQUEST_SECONDS.labels(**labels).observe(elapsed)
                metrics.REQUESTS.labels(**labels, outcome=outcome).inc()
        self.health.on_success()
        self.limiter.on_success()
        metrics.CONCURRENCY_LIMIT.labels(**labels).set(self.limiter.limit)
        for kind, count in (("prompt", response.prompt_tokens), ("completion", response.completion_tokens)):
            if count:
                metrics.TOKENS.labels(**labels, kind=kind).inc(count)
        return response


def batch_api(client: LLMClient) -> BatchAPI:
    """The Batch API of `client`'s endpoint: the client itself if it is one, else what its
    `batch_api()` gives (the OpenAI-compatible client's); other providers cannot run in batch mode."""
    if isinstance(client, BatchAPI):
        return client
    make = getattr(client, "batch_api", None)
    if callable(make):
        api = make()
        if isinstance(api, BatchAPI):
            return api
    raise ValueError(f"llm.mode batch: the {type(client).__name__} endpoint has no Batch API here")
