"""The OpenAI Batch API over the OpenAI-compatible client's connection (same URL, key, headers).

Every SDK failure maps onto the outcomes of `shared.llm`, as online requests do, so the batcher
tells a passing outage (retry the call) from a refusal (the job cannot go on).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import openai

from services.llm.batch_api import BatchFound, BatchStatus
from services.llm.http_errors import connection_cause, retry_after_s
from services.llm.openai_client import OpenAIClient, status_error
from shared.llm import Overloaded, Retryable, Unreachable

CHAT_ENDPOINT: Final = "/v1/chat/completions"

T = TypeVar("T")


class OpenAIBatchAPI:
    def __init__(self, client: OpenAIClient) -> None:
        self.client = client

    def line(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": body}

    async def upload(self, jsonl: bytes) -> str:
        upload = ("batch.jsonl", jsonl, "application/jsonl")
        created = await _call(self.client.pool().files.create(file=upload, purpose="batch"))
        return str(created.id)

    async def create(self, input_file_id: str, completion_window: str, metadata: dict[str, str]) -> str:
        batch = await _call(
            self.client.pool().batches.create(
                input_file_id=input_file_id,
                endpoint=CHAT_ENDPOINT,
                completion_window=completion_window,  # type: ignore[arg-type]
                metadata=metadata,
            )
        )
        return str(batch.id)

    async def retrieve(self, batch_id: str) -> BatchStatus:
        batch = await _call(self.client.pool().batches.retrieve(batch_id))
        return BatchStatus(
            id=str(batch.id),
            status=str(batch.status),
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
        )

    async def recent(self) -> list[BatchFound]:
        page = await _call(self.client.pool().batches.list(limit=100))
        return [BatchFound(str(b.id), dict(b.metadata or {})) for b in page.data]

    async def content(self, file_id: str) -> bytes:
        response = await _call(self.client.pool().files.content(file_id))
        return bytes(response.content)


async def _call(call: Awaitable[T]) -> T:
    try:
        return await call
    except openai.RateLimitError as exc:
        raise Overloaded(f"HTTP 429: {exc.message}", retry_after=retry_after_s(exc.response.headers)) from exc
    except openai.APITimeoutError as exc:
        raise Retryable("batch API call timed out", "timeout") from exc
    except openai.APIConnectionError as exc:
        raise Unreachable(connection_cause(exc)) from exc
    except openai.APIStatusError as exc:
        raise status_error(exc.status_code, exc.message) from exc
    except ValueError as exc:
        raise Retryable(f"malformed batch API response: {exc}", "malformed") from exc
