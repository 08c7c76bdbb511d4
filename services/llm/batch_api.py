"""What batch mode asks of a provider: the OpenAI Batch API's four calls, and reading its files.

A job is a JSONL file of requests, each with a `custom_id`, uploaded (`POST /v1/files`), turned
into a batch (`POST /v1/batches`), polled (`GET /v1/batches/{id}`) until it ends, and its output
(and error) file downloaded (`GET /v1/files/{id}/content`). An output line is one request's
answer or failure, matched back to its row by `custom_id`. Pure here: the HTTP calls are the
client's (services/llm/openai_batch.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from shared.llm import LLMResponse

#: batch statuses after which nothing more will come
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchStatus:
    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class BatchFound:
    """A batch listed by the provider, with the metadata it was created with."""

    id: str
    metadata: dict[str, str]


@runtime_checkable
class BatchAPI(Protocol):
    """The Batch API of an endpoint. Failures raise `shared.llm` errors (Retryable, Rejected)."""

    def line(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One line of a job's input file."""
        ...

    async def upload(self, jsonl: bytes) -> str:
        """The id of the uploaded input file."""
        ...

    async def create(self, input_file_id: str, completion_window: str, metadata: dict[str, str]) -> str:
        """The id of the new batch."""
        ...

    async def retrieve(self, batch_id: str) -> BatchStatus: ...

    async def recent(self) -> list[BatchFound]:
        """The most recent batches (one page), to find one whose id was never recorded."""
        ...

    async def content(self, file_id: str) -> bytes: ...


@dataclass(frozen=True)
class RowFailure:
    """What the job said about a row it did not answer."""

    reason: str


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)


def read_output(blob: bytes, model: str) -> dict[str, LLMResponse | RowFailure]:
    """Answers and failures by custom_id, from an output or error file (OpenAI's line shape:
    `{custom_id, response: {status_code, body}, error}`). A line that cannot be read is skipped:
    its row then counts as missing from the job, which is a row failure, not a crash."""
    out: dict[str, LLMResponse | RowFailure] = {}
    for raw in blob.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            custom_id = line["custom_id"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(custom_id, str):
            out[custom_id] = _outcome(line, model)
    return out


def _outcome(line: dict[str, Any], model: str) -> LLMResponse | RowFailure:
    error = line.get("error")
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if error or status != 200 or not isinstance(body, dict):
        return RowFailure(_reason(error, status, body))
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("no text content")
    except (KeyError, IndexError, TypeError) as exc:
        return RowFailure(f"malformed answer in the batch output: {type(exc).__name__}: {exc}")
    usage = body.get("usage") or {}
    return LLMResponse(
        text=text,
        model=str(body.get("model") or model),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        finish_reason=choice.get("finish_reason"),
    )


def _reason(error: Any, status: Any, body: Any) -> str:
    if isinstance(error, dict):
        return f"batch row failed: {error.get('code') or 'error'}: {error.get('message') or ''}".strip()
    detail = body.get("error") if isinstance(body, dict) else None
    message = detail.get("message") if isinstance(detail, dict) else None
    return f"batch row failed: HTTP {status}" + (f": {message}" if message else "")
