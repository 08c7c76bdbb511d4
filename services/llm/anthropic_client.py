"""A native Anthropic Messages API client (POST {base_url}/v1/messages), plain httpx.

The second implementation of `shared.llm.LLMClient`: the request is reshaped for the Messages
API (system messages go to `system`, `max_tokens` is required, `stop` becomes
`stop_sequences`), the key travels as `x-api-key` (`llm.api_key_env`, else ANTHROPIC_API_KEY),
and 429 / 529 (overloaded) are the overload outcome. The Messages API has no `response_format`:
a JSON schema asked for is stated in the system prompt instead, and the answer is validated by
the step as any other.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx

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

DEFAULT_BASE_URL = "https://api.anthropic.com"
KEY_ENV = "ANTHROPIC_API_KEY"
API_VERSION = "2023-06-01"
#: the Messages API requires max_tokens; what is sent when neither the row nor the endpoint says
DEFAULT_MAX_TOKENS = 1024
PROBE_TIMEOUT_S = 5.0


class AnthropicClient(EndpointClient[httpx.AsyncClient]):
    url_env: ClassVar[str] = "ANTHROPIC_BASE_URL"
    default_url: ClassVar[str] = DEFAULT_BASE_URL
    key_env: ClassVar[str] = KEY_ENV

    def body(self, request: LLMRequest) -> dict[str, Any]:
        system = [m["content"] for m in request.messages if m.get("role") == "system" and m.get("content")]
        if request.response_format is not None:
            schema = request.response_format.get("json_schema", {}).get("schema", request.response_format)
            system.append(
                "Answer with one JSON value and nothing else, matching this JSON schema:\n"
                + json.dumps(schema, sort_keys=True)
            )
        settings = dict(request.settings)
        if "stop" in settings:
            stop = settings.pop("stop")
            settings["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.pop("max_tokens", DEFAULT_MAX_TOKENS),
            "messages": [m for m in request.messages if m.get("role") != "system"],
            **settings,
        }
        if system:
            body["system"] = "\n\n".join(system)
        return body

    def _connect(self) -> httpx.AsyncClient:
        headers = {"anthropic-version": API_VERSION, **self.settings.headers}
        if self._key is not None:
            headers["x-api-key"] = self._key.get_secret_value()
        return httpx.AsyncClient(
            base_url=self.endpoint,
            headers=headers,
            timeout=self.settings.request_timeout_s,
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=self.settings.max_concurrency
            ),
        )

    async def _disconnect(self, pool: httpx.AsyncClient) -> None:
        await pool.aclose()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            response = await self.pool().post("/v1/messages", json=self.body(request))
        except httpx.ConnectTimeout as exc:
            raise Unreachable("connect timeout") from exc
        except httpx.TimeoutException as exc:
            raise Retryable(f"no answer within {self.settings.request_timeout_s:g}s", "timeout") from exc
        except httpx.TransportError as exc:
            raise Unreachable(connection_cause(exc)) from exc
        if response.status_code != 200:
            raise _status_error(response)
        try:
            payload = response.json()
            texts = [part["text"] for part in payload["content"] if part.get("type") == "text"]
            usage = payload.get("usage") or {}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise Retryable(f"malformed response: {type(exc).__name__}: {exc}", "malformed") from exc
        if not texts:
            raise Retryable("empty response: no text content", "empty")
        return LLMResponse(
            text="".join(texts),
            model=str(payload.get("model") or self.model),
            prompt_tokens=usage.get("input_tokens"),
            completion_tokens=usage.get("output_tokens"),
            finish_reason=payload.get("stop_reason"),
        )

    async def probe(self) -> None:
        try:
            response = await self.pool().get("/v1/models", timeout=PROBE_TIMEOUT_S)
        except httpx.TransportError as exc:
            raise Unreachable(connection_cause(exc)) from exc
        if response.status_code >= 500:
            raise ServerFailure(f"HTTP {response.status_code}")


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("message") or response.text[:200])
    except (ValueError, AttributeError):
        return response.text[:200]


def _status_error(response: httpx.Response) -> Exception:
    status, message = response.status_code, _message(response)
    if status in (429, 529):
        return Overloaded(f"HTTP {status}: {message}", "http_429", retry_after_s(response.headers))
    if status >= 500:
        return ServerFailure(f"HTTP {status}: {message}")
    if status == 408:
        return Retryable(f"HTTP 408: {message}", "timeout")
    return Rejected(f"HTTP {status}: {message}")
