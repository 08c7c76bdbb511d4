"""The LLM client protocol: what an LLM step asks of an endpoint, and how failures are told apart.

A client turns an `LLMRequest` into the wire body of its API (`body`), sends it (`complete`) and
maps every failure onto one of four outcomes the shared machinery (services/llm/machinery.py)
acts on:

- `Overloaded`: the server pushes back (HTTP 429, Anthropic's 529); retried after its
  Retry-After, and the concurrency limit is cut.
- `Unreachable`: no answer at the connection level (refused, reset, DNS); the endpoint's health
  turns "unreachable", the step stops taking rows and probes until it answers.
- `ServerFailure`: an HTTP 5xx (and 408); retried, and a burst of them counts as an outage too.
- `Retryable`: anything else worth another attempt (timeouts, malformed or empty bodies).
- `Rejected`: the request itself is wrong (4xx: bad key, unknown model, bad params); never retried.

`endpoint` is the client's identity in generation cache keys (its base URL, normalised): the
cache key is SHA-256 of the endpoint and the wire body, so the same question asked of another
server, or in another API's shape, is asked afresh. Implementations are registered in
`LLM_CLIENTS` (entry point group `fastdistill.llm_clients`) and built from an `LLMEndpoint`.
No Kafka, no HTTP library here: steps and the machinery depend on this protocol only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from shared.registry import Registry
from shared.step import operational

Message = dict[str, Any]


@dataclass(frozen=True)
class LLMRequest:
    """One chat request: the conversation, the decode settings and an optional response format
    (OpenAI's `response_format`, e.g. a JSON schema)."""

    messages: list[Message]
    #: decode settings sent as they are (temperature, max_tokens, top_p, server-specific keys)
    settings: dict[str, Any] = field(default_factory=dict)
    response_format: dict[str, Any] | None = None
    #: which of several answers to the same request this is (num_generations): part of its cache
    #: identity, never sent; 0 is the plain request
    variant: int = 0


@dataclass(frozen=True)
class LLMResponse:
    text: str
    #: the model the server says answered
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class LLMError(RuntimeError):
    """A failed attempt; `outcome` is its metrics label."""

    outcome: ClassVar[str] = "error"


class Retryable(LLMError):
    outcome = "retryable"

    def __init__(self, message: str, outcome: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        if outcome is not None:
            self.outcome = outcome  # type: ignore[misc]
        #: seconds the server asked to wait, if it said
        self.retry_after = retry_after


class Overloaded(Retryable):
    outcome = "http_429"


class ServerFailure(Retryable):
    outcome = "http_5xx"


class Unreachable(Retryable):
    outcome = "connection"


class Rejected(LLMError):
    """The endpoint refused this request (4xx); asking again changes nothing."""

    outcome = "http_4xx"


@runtime_checkable
class LLMClient(Protocol):
    #: identity of the endpoint in cache keys and metrics (normalised base URL)
    endpoint: str
    #: the model asked for
    model: str

    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body this client sends for `request` (what the cache key covers)."""
        ...

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """One attempt; raises an `LLMError` subclass on failure."""
        ...

    async def probe(self) -> None:
        """Whether the endpoint answers at all (any HTTP status below 500); raises `Unreachable`
        or `ServerFailure` if not. Costs no tokens."""
        ...

    async def aclose(self) -> None: ...


class BatchSettings(BaseModel):
    """`llm.batch:` how rows are grouped into Batch API jobs when `llm.mode` is `batch`
    (services/llm/batch.py). All operational: a row answered in a batch is the same generation,
    under the same cache key, as one answered online."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int = Field(1000, ge=1, le=50_000, description="rows per job (the Batch API takes 50,000)")
    window_s: float = Field(
        30.0, gt=0, description="a job is submitted this long after its first row, if not full before"
    )
    max_jobs: int = Field(2, ge=1, description="jobs in flight at once (rows held: max_rows x max_jobs)")
    poll_every_s: float = Field(30.0, gt=0, description="how often a running job's status is asked")
    completion_window: str = "24h"
    on_row_failure: Literal["online", "dead_letter"] = Field(
        "online", description="a row the job failed: asked again online, or dead-lettered"
    )


class LLMEndpoint(BaseModel):
    """`llm:` of an LLM step: which endpoint, which model, which key, how hard to push it.

    The fields that decide what a generation is (provider, base URL, model, generation kwargs)
    are the step's signature and the cache key; the rest is operational: how fast, how robustly
    and with which credentials rows are fetched.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field("openai", description="an LLM client name: openai, anthropic, or a plug-in's")
    base_url: str | None = Field(
        None, description="None: the env var `base_url_env` names, else the provider's (OPENAI_BASE_URL)"
    )
    #: the env var holding the base URL, when a deployment (not the pipeline) decides it
    base_url_env: str | None = None
    model: str = "teacher-sim"
    mode: Literal["online", "batch"] = operational(
        "online", description="batch: rows go out in Batch API jobs (half price, hours of latency)"
    )
    batch: BatchSettings = operational(default_factory=BatchSettings)
    #: decode settings every request carries (a row's own profile, where a step reads one, wins)
    generation_kwargs: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = operational(
        None, description="env var holding the key; None: the provider's (OPENAI_API_KEY, ANTHROPIC_API_KEY)"
    )
    headers: dict[str, str] = operational(
        default_factory=dict, description="extra HTTP headers (not secrets: use api_key_env)"
    )
    max_concurrency: int = operational(32, ge=1)
    min_concurrency: int = operational(1, ge=1)
    increase_every: int = operational(8, ge=1, description="successes per +1 of the concurrency limit")
    max_retries: int = operational(6, ge=0, description="retries after the first attempt")
    request_timeout_s: float = operational(30.0, gt=0)
    backoff_base_s: float = operational(0.5, gt=0)
    backoff_max_s: float = operational(20.0, gt=0)
    max_retry_after_s: float = operational(60.0, ge=0, description="cap on a server's Retry-After")
    #: consecutive 5xx answers (no success between) that make the endpoint count as down
    server_errors_to_open: int = operational(5, ge=1)
    probe_every_s: float = operational(
        1.0, gt=0, description="first probe delay while down (doubles to 10 s)"
    )
    give_up_after_s: float | None = operational(
        600.0, gt=0, description="down this long: rows fail with the reason instead of waiting; None: never"
    )

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        # By name only (no client is imported): a misspelt or uninstalled provider fails when the
        # pipeline loads (`fastdistill validate`), not when the step's service opens.
        if value not in LLM_CLIENTS:
            raise ValueError(f"unknown LLM client {value!r}; known: {', '.join(LLM_CLIENTS.names())}")
        return value

    @field_validator("generation_kwargs")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = RESERVED_KEYS & value.keys()
        if clash:
            raise ValueError(f"generation_kwargs may not set {sorted(clash)}")
        return value

    def resolved_base_url(self, default_env: str, default: str) -> str:
        """The endpoint: `base_url`, else the variable `base_url_env` names (an error if unset),
        else the provider's variable, else its default; normalised."""
        if self.base_url:
            return normalised_url(self.base_url)
        if self.base_url_env is not None:
            value = os.environ.get(self.base_url_env)
            if not value:
                raise MissingSetting(f"llm.base_url_env names {self.base_url_env}, which is not set")
            return normalised_url(value)
        return normalised_url(os.environ.get(default_env) or default)

    def api_key(self, default_env: str) -> SecretStr | None:
        """The key from the environment (`api_key_env`, else the provider's variable); a variable
        named explicitly but unset is an error, so a typo is not a run of 401s."""
        name = self.api_key_env or default_env
        value = os.environ.get(name)
        if value is None and self.api_key_env is not None:
            raise MissingSetting(f"llm.api_key_env names {name}, which is not set in the environment")
        return SecretStr(value) if value else None


#: Request keys only the step decides.
RESERVED_KEYS = frozenset({"model", "messages", "stream", "n", "response_format"})


class MissingSetting(ValueError):
    """An environment variable `llm:` names is not set (found when the step opens)."""


def normalised_url(url: str) -> str:
    """`url` without a trailing slash and without credentials: one spelling per endpoint, safe
    to show in logs and metrics."""
    parts = urlsplit(url.strip())
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, "")) or url.rstrip("/")


def cache_key(endpoint: str, body: dict[str, Any], variant: int = 0) -> str:
    """SHA-256 hex of the canonical JSON of {base_url: endpoint, body}: what was asked and of
    whom. Rows asking the same thing of the same endpoint share an answer, whatever their id;
    the `variant`-th of several answers to one request has its own entry."""
    identity: dict[str, Any] = {"base_url": endpoint, "body": body}
    if variant:
        identity["variant"] = variant
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class LLMClientFactory(Protocol):
    def __call__(self, endpoint: LLMEndpoint) -> LLMClient: ...


#: LLM client implementations by provider name (entry points of group `fastdistill.llm_clients`).
LLM_CLIENTS: Registry[LLMClientFactory] = Registry("fastdistill.llm_clients", "LLM client")


def build_client(endpoint: LLMEndpoint) -> LLMClient:
    return LLM_CLIENTS.get(endpoint.provider)(endpoint)
