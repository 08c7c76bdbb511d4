"""The teacher step: one chat completion per row from an OpenAI-compatible server.

The step owns retries (the client's own are off) so that every attempt is counted, a 429's
Retry-After is honoured, and an AIMD limiter shrinks concurrency when the server pushes back.

Generations are cached in a durable store under the hash of what was asked and of whom: the
endpoint's base URL and the full request body (model, messages, decode params) — see
`cache_key`. A replay, or a restart after an aborted transaction, pays for no row twice; another
server (OPENAI_BASE_URL switched, same model name) or another prompt is asked afresh. The step's
`cache: false`, or a run produced with `--no-cache`, skips the look-up (every row asks the
server); the answers are still stored, so a later replay of that run pays nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import string
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx2
import openai
import pydantic
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.types.chat import ChatCompletion
from pydantic import Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from services.teacher import metrics
from services.teacher.limiter import AimdLimiter
from shared.step import AsyncStep, Row, StateStore, StepContext, StepParams, operational

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "Schema: {schema}\nQuestion: {instruction}\nSQL:"
#: Request keys a row's decode profile may not override.
RESERVED_KEYS = frozenset({"model", "messages", "stream", "n"})


class TeacherError(RuntimeError):
    """A row the teacher could not answer; the runtime dead-letters it."""


class _Retryable(Exception):
    """One failed attempt worth another; `outcome` is its metrics label."""

    def __init__(self, message: str, outcome: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.retry_after = retry_after


@dataclass
class Generation:
    text: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None


class TeacherParams(StepParams):
    model: str = "teacher-sim"
    base_url: str | None = Field(None, description="None: OPENAI_BASE_URL from the environment")
    prompt_template: str = DEFAULT_TEMPLATE
    system_prompt_field: str | None = "system_prompt"
    decode_profile_field: str | None = "decode_profile"
    output: str = "generation"
    # How fast and how robustly rows are fetched, never what they become: out of the signature.
    max_concurrency: int = operational(32, ge=1)
    min_concurrency: int = operational(1, ge=1)
    increase_every: int = operational(8, ge=1, description="successes per +1 of the concurrency limit")
    max_retries: int = operational(6, ge=0, description="retries after the first attempt")
    request_timeout_s: float = operational(30.0, gt=0)
    backoff_base_s: float = operational(0.5, gt=0)
    backoff_max_s: float = operational(20.0, gt=0)
    max_retry_after_s: float = operational(60.0, ge=0, description="cap on a server's Retry-After")
    cache: bool = operational(
        True, description="False: never answer from the generation cache (answers are still stored)"
    )


def resolved_base_url(base_url: str | None) -> str:
    """The endpoint a client of `base_url` talks to: the param, else OPENAI_BASE_URL, else the
    OpenAI SDK's own default; without a trailing slash, so spellings of one URL are one cache."""
    url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    return url.rstrip("/")


def cache_key(base_url: str, body: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of {base_url, body}: what was asked (the whole request
    body: model, messages, decode params) and of whom. Rows asking the same thing of the same
    endpoint share an answer, whatever their sample_id."""
    blob = json.dumps(
        {"base_url": base_url, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def retry_after_s(headers: Any) -> float | None:
    """Seconds a 429 asks us to wait: `retry-after-ms`, else `Retry-After` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class TeacherStep(AsyncStep[TeacherParams]):
    name: ClassVar[str] = "teacher"
    outputs: ClassVar[tuple[str, ...]] = (
        "generation",
        "teacher_model",
        "teacher_cached",
        "teacher_latency_ms",
        "prompt_tokens",
        "completion_tokens",
    )

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        if p.min_concurrency > p.max_concurrency:
            raise ValueError("min_concurrency must not exceed max_concurrency")
        self.limiter = AimdLimiter(
            p.max_concurrency, min_limit=p.min_concurrency, increase_every=p.increase_every
        )
        self.cache: StateStore | None = None
        self._ctx: StepContext | None = None
        self.base_url = resolved_base_url(p.base_url)
        self._client: AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._backoff = wait_random_exponential(multiplier=p.backoff_base_s, max=p.backoff_max_s)
        self._labels = {"model": p.model}
        metrics.CONCURRENCY_LIMIT.labels(**self._labels).set(self.limiter.limit)

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self, ctx: StepContext) -> None:
        self._ctx = ctx
        self.cache = ctx.state_store("generation_cache", durable_immediately=True, scope="global")

    def close(self) -> None:
        # The runtime calls this synchronously as its loop ends; the pool dies with the loop.
        self._client = None
        self._client_loop = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        self.close()

    def renamed(self) -> dict[str, str]:
        return {"generation": self.params.output}

    def concurrency(self) -> int:
        return self.params.max_concurrency

    # -- rows ------------------------------------------------------------------------------------
    async def process_row_async(self, row: Row) -> Row | None:
        body = self.request_body(row)
        key = cache_key(self.base_url, body)
        cached = self._cache_get(key) if self.reads_cache() else None
        if cached is not None:
            metrics.CACHE_HITS.labels(**self._labels).inc()
            return self._emit(row, cached, cached=True, latency_ms=0.0)
        spent: list[float] = []
        generation = await self._generate(body, spent)
        if self.cache is not None:
            usage = {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
            }
            value = {"generation": generation.text, "model": generation.model, "usage": usage}
            self.cache.put(key, json.dumps(value).encode())
        return self._emit(row, generation, cached=False, latency_ms=sum(spent) * 1000)

    def reads(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.params.prompt_template) if name}

    def request_body(self, row: Row) -> dict[str, Any]:
        """The chat completion request for `row` (what is sent, and what the cache key covers)."""
        return {"model": self.params.model, "messages": self.messages(row), **self.decode_settings(row)}

    def reads_cache(self) -> bool:
        """Whether this row may be answered from the cache: the step's `cache` param, and the
        run's own option (`produce --no-cache`), asked of the runtime for the row's run."""
        return self.params.cache and (self._ctx is None or self._ctx.cache_enabled())

    def messages(self, row: Row) -> list[dict[str, str]]:
        try:
            user = self.params.prompt_template.format_map(row)
        except KeyError as exc:
            raise TeacherError(f"prompt_template needs field {exc.args[0]!r}, which the row lacks") from None
        field = self.params.system_prompt_field
        system = row.get(field) if field else None
        messages = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
        return [*messages, {"role": "user", "content": user}]

    def decode_settings(self, row: Row) -> dict[str, Any]:
        """Request body keys from the row's decode profile (server-specific ones like top_k pass too)."""
        field = self.params.decode_profile_field
        profile = row.get(field) if field else None
        if isinstance(profile, str):  # Avro rows may carry the profile as a JSON string
            try:
                profile = json.loads(profile) if profile.strip() else None
            except json.JSONDecodeError as exc:
                raise TeacherError(f"{field} is not JSON: {exc}") from None
        if not profile:
            return {}
        if not isinstance(profile, dict):
            raise TeacherError(f"{field} must be an object, got {type(profile).__name__}")
        clash = RESERVED_KEYS & profile.keys()
        if clash:
            raise TeacherError(f"{field} may not set {sorted(clash)}")
        return {k: v for k, v in profile.items() if v is not None}

    def _emit(self, row: Row, gen: Generation, *, cached: bool, latency_ms: float) -> Row:
        out = dict(row)
        out[self.params.output] = gen.text
        out["teacher_model"] = gen.model
        out["teacher_cached"] = cached
        out["teacher_latency_ms"] = latency_ms
        out["prompt_tokens"] = gen.prompt_tokens
        out["completion_tokens"] = gen.completion_tokens
        return out

    # -- cache -----------------------------------------------------------------------------------
    def _cache_get(self, key: str) -> Generation | None:
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
            return Generation(
                text=value["generation"],
                model=str(value.get("model") or self.params.model),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged entry costs one request, not the row.
            log.warning("ignoring unreadable generation cache entry %s: %s", key, exc)
            return None

    # -- HTTP ------------------------------------------------------------------------------------
    def client(self) -> AsyncOpenAI:
        """One client per event loop: its connection pool cannot outlive the loop it was made on."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = AsyncOpenAI(
                # The same URL as the cache key's: the cache is that endpoint's answers.
                base_url=self.base_url,
                api_key=os.environ.get("OPENAI_API_KEY") or "sk-local",
                max_retries=0,
                timeout=self.params.request_timeout_s,
                # As many idle connections kept as requests may be in flight: the default keeps
                # 100, so above that every request beyond opens (and later drops) a connection.
                http_client=DefaultAsyncHttpxClient(
                    limits=httpx2.Limits(
                        max_connections=None, max_keepalive_connections=self.params.max_concurrency
                    ),
                    timeout=self.params.request_timeout_s,
                ),
            )
            self._client_loop = loop
        return self._client

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            # At least what the server asked, plus jitter so the rejected herd does not return at once.
            asked = min(exc.retry_after, self.params.max_retry_after_s)
            return asked * (1 + random.uniform(0, 0.25)) + random.uniform(0, 0.05)
        return backoff

    async def _generate(self, body: dict[str, Any], spent: list[float]) -> Generation:
        attempts = self.params.max_retries + 1
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=lambda _: metrics.RETRIES.labels(**self._labels).inc(),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(body, spent)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise TeacherError(f"teacher gave up after {attempts} attempts: {last}") from last
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(self, body: dict[str, Any], spent: list[float]) -> Generation:
        p = self.params
        outcome = "ok"
        async with self.limiter as epoch:
            metrics.INFLIGHT.labels(**self._labels).inc()
            started = time.perf_counter()
            try:
                # `post` rather than `chat.completions.create`: the typed method re-walks the params
                # against its TypedDicts (~0.5 ms a request, a quarter of the client's CPU at 32 in
                # flight) to produce the plain JSON `body` already is. Same auth, errors and parsing.
                response = await self.client().post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    body=body,
                    options={"timeout": p.request_timeout_s},
                )
                generation = self._read(response)
            except _Retryable as exc:
                outcome = exc.outcome
                raise
            except openai.RateLimitError as exc:
                outcome = "http_429"
                if self.limiter.on_overload(epoch):
                    metrics.CONCURRENCY_LIMIT.labels(**self._labels).set(self.limiter.limit)
                wait = retry_after_s(exc.response.headers)
                raise _Retryable(f"HTTP 429: {exc.message}", outcome, wait) from exc
            except openai.APITimeoutError as exc:
                outcome = "timeout"
                raise _Retryable(f"no answer within {p.request_timeout_s:g}s", outcome) from exc
            except openai.APIConnectionError as exc:
                outcome = "connection"
                raise _Retryable(f"connection failed: {exc.__cause__ or exc}", outcome) from exc
            except openai.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code == 408:
                    outcome = "http_5xx" if exc.status_code >= 500 else "timeout"
                    raise _Retryable(f"HTTP {exc.status_code}: {exc.message}", outcome) from exc
                outcome = "http_4xx"
                raise TeacherError(
                    f"teacher rejected the request: HTTP {exc.status_code}: {exc.message}"
                ) from exc
            except (ValueError, openai.APIResponseValidationError, pydantic.ValidationError) as exc:
                # json.JSONDecodeError is a ValueError: a body cut short arrives as one.
                outcome = "malformed"
                raise _Retryable(f"malformed response: {type(exc).__name__}: {exc}", outcome) from exc
            finally:
                elapsed = time.perf_counter() - started
                spent.append(elapsed)
                metrics.INFLIGHT.labels(**self._labels).dec()
                metrics.REQUEST_SECONDS.labels(**self._labels).observe(elapsed)
                metrics.REQUESTS.labels(model=p.model, outcome=outcome).inc()
        self.limiter.on_success()
        metrics.CONCURRENCY_LIMIT.labels(**self._labels).set(self.limiter.limit)
        for kind, count in (
            ("prompt", generation.prompt_tokens),
            ("completion", generation.completion_tokens),
        ):
            if count:
                metrics.TOKENS.labels(model=p.model, kind=kind).inc(count)
        return generation

    def _read(self, response: Any) -> Generation:
        if not isinstance(response, ChatCompletion):
            raise _Retryable(
                f"malformed response: expected a chat completion, got {type(response).__name__}", "malformed"
            )
        if not response.choices:
            raise _Retryable("empty response: no choices", "empty")
        try:
            content = response.choices[0].message.content
        except AttributeError:
            content = None
        if not isinstance(content, str):
            raise _Retryable("malformed response: first choice has no text content", "malformed")
        usage = getattr(response, "usage", None)
        return Generation(
            text=content,
            model=str(getattr(response, "model", None) or self.params.model),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
        )
