"""The OpenAI-compatible client: OpenAI, vLLM, SGLang, Ollama, llama.cpp server, LiteLLM, TGI.

It owns the AsyncOpenAI setup (one per event loop: a connection pool cannot outlive its loop),
the key (`llm.api_key_env`, else OPENAI_API_KEY; a SecretStr, never logged) and the mapping of
the SDK's errors onto the outcomes of `shared.llm`. The SDK's own retries are off: the machinery
retries, so that every attempt is counted and an outage is told from a row's failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import httpx2
import openai
import pydantic
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.types.chat import ChatCompletion

from services.llm.endpoint_client import EndpointClient
from services.llm.http_errors import connection_cause, retry_after_s
from shared.llm import (
    LLMRequest,
    LLMResponse,
    Overloaded,
    Rejected,
    Retryable,
    ServerFailure,
    Unreachable,
)

if TYPE_CHECKING:
    from services.llm.openai_batch import OpenAIBatchAPI

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_ENV = "OPENAI_API_KEY"
#: how long a health probe may take
PROBE_TIMEOUT_S = 5.0


class OpenAIClient(EndpointClient[AsyncOpenAI]):
    url_env: ClassVar[str] = "OPENAI_BASE_URL"
    default_url: ClassVar[str] = DEFAULT_BASE_URL
    key_env: ClassVar[str] = KEY_ENV

    def body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": request.messages, **request.settings}
        if request.response_format is not None:
            body["response_format"] = request.response_format
        return body

    def _connect(self) -> AsyncOpenAI:
        s = self.settings
        return AsyncOpenAI(
            base_url=self.endpoint,
            # The SDK insists on a key; local servers ignore it.
            api_key=self._key.get_secret_value() if self._key is not None else "sk-local",
            max_retries=0,
            timeout=s.request_timeout_s,
            default_headers=dict(s.headers) or None,
            # As many idle connections kept as requests may be in flight: the default keeps
            # 100, so above that every request beyond opens (and later drops) a connection.
            http_client=DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=s.max_concurrency),
                timeout=s.request_timeout_s,
            ),
        )

    async def _disconnect(self, pool: AsyncOpenAI) -> None:
        await pool.close()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        timeout = self.settings.request_timeout_s
        try:
            # `post` rather than `chat.completions.create`: the typed method re-walks the params
            # against its TypedDicts (~0.5 ms a request, a quarter of the client's CPU at 32 in
            # flight) to produce the plain JSON `body` already is. Same auth, errors and parsing.
            response = await self.pool().post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body=self.body(request),
                options={"timeout": timeout},
            )
        except openai.RateLimitError as exc:
            raise Overloaded(
                f"HTTP 429: {exc.message}", retry_after=retry_after_s(exc.response.headers)
            ) from exc
        except openai.APITimeoutError as exc:
            if isinstance(exc.__cause__, httpx2.ConnectTimeout):
                raise Unreachable("connect timeout") from exc
            raise Retryable(f"no answer within {timeout:g}s", "timeout") from exc
        except openai.APIConnectionError as exc:
            raise Unreachable(connection_cause(exc)) from exc
        except openai.APIStatusError as exc:
            raise status_error(exc.status_code, exc.message) from exc
        except (ValueError, openai.APIResponseValidationError, pydantic.ValidationError) as exc:
            # json.JSONDecodeError is a ValueError: a body cut short arrives as one.
            raise Retryable(f"malformed response: {type(exc).__name__}: {exc}", "malformed") from exc
        return self._read(response)

    def _read(self, response: Any) -> LLMResponse:
        if not isinstance(response, ChatCompletion):
            raise Retryable(
                f"malformed response: expected a chat completion, got {type(response).__name__}", "malformed"
            )
        if not response.choices:
            raise Retryable("empty response: no choices", "empty")
        choice = response.choices[0]
        content = getattr(choice.message, "content", None)
        if not isinstance(content, str):
            raise Retryable("malformed response: first choice has no text content", "malformed")
        usage = response.usage
        return LLMResponse(
            text=content,
            model=str(response.model or self.model),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            finish_reason=choice.finish_reason,
        )

    def batch_api(self) -> OpenAIBatchAPI:
        """The endpoint's Batch API (`llm.mode: batch`), on this client's connection."""
        from services.llm.openai_batch import OpenAIBatchAPI

        return OpenAIBatchAPI(self)

    async def probe(self) -> None:
        """GET /models: any answer below 500 means the server is there (even a 401 or a 404)."""
        try:
            await self.pool().get("/models", cast_to=httpx2.Response, options={"timeout": PROBE_TIMEOUT_S})
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise ServerFailure(f"HTTP {exc.status_code}: {exc.message}") from exc
        except openai.APIConnectionError as exc:  # APITimeoutError included
            raise Unreachable(connection_cause(exc)) from exc


def status_error(status: int, message: str) -> Exception:
    if status >= 500:
        return ServerFailure(f"HTTP {status}: {message}")
    if status == 408:
        return Retryable(f"HTTP 408: {message}", "timeout")
    if status == 429:
        return Overloaded(f"HTTP 429: {message}")
    return Rejected(f"HTTP {status}: {message}")
