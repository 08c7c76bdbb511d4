"""A teacher simulator: a real HTTP server with seeded answers, latency and faults.

Endpoints: `POST /v1/chat/completions` (OpenAI-compatible), `POST /v1/messages` (Anthropic
Messages), `GET /v1/models`, `GET /stats` (JSON) and `GET /metrics` (Prometheus text).
Everything a response depends on is a function of (seed, prompt, attempt), where `attempt`
counts how often this server has seen the prompt, so runs are reproducible and retries can
succeed. Text-to-SQL prompts are answered from the answer book (answers.py), every other kind
of prompt by tasks.py. With an `api_key`, every request must carry it (`Authorization: Bearer`
or `x-api-key`), else it is answered 401 and counted as `unauthorized`.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fastdistill.dev.teacher_sim import tasks
from fastdistill.dev.teacher_sim.answers import AnswerBook, Style, StyleMix, question_of
from fastdistill.dev.teacher_sim.faults import DEFAULT_FAULT_WEIGHTS, Fault, FaultPlan, LatencySpec


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds_path: Path | None = Field(None, description="seeds JSONL (instruction → gold_sql) or JSON map")
    seed: int = 0
    latency: LatencySpec = Field(default_factory=LatencySpec, description="fixed:MS | lognormal:MS:SIGMA")
    fault_rate: float = Field(0.0, ge=0, le=1)
    fault_weights: dict[Fault, float] = Field(default_factory=lambda: dict(DEFAULT_FAULT_WEIGHTS))
    retry_after_s: tuple[float, float] = (0.2, 1.0)
    # Longer than the teacher step's default request timeout (30 s), so a timeout fault is one.
    timeout_sleep_s: float = Field(35.0, ge=0)
    style_mix: StyleMix = Field(default_factory=StyleMix)
    model_name: str = "teacher-sim"
    #: share of judge answers no parser can read (per attempt: asking again can succeed)
    judge_malformed_rate: float = Field(0.1, ge=0, le=1)
    #: share of answers to a JSON-schema request that are not valid against it (per attempt)
    json_invalid_rate: float = Field(0.2, ge=0, le=1)
    #: the key every request must carry (None: no check); a dev simulator's, not a secret
    api_key: str | None = None
    #: Batch API (batches.py): seconds from a batch's creation to its completion, and the share of
    #: its rows answered with an error line (decided per custom_id: the same row fails again)
    batch_delay_s: float = Field(2.0, ge=0)
    batch_failure_rate: float = Field(0.0, ge=0, le=1)

    @field_validator("latency", mode="before")
    @classmethod
    def _parse_latency(cls, value: Any) -> Any:
        return LatencySpec.parse(value) if isinstance(value, str) else value

    def fault_plan(self) -> FaultPlan:
        return FaultPlan(rate=self.fault_rate, weights=self.fault_weights, retry_after_s=self.retry_after_s)


class SimStats:
    """Request counts and the time-weighted number of requests in flight."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started_at = clock()
        self.requests = 0
        self.retried = 0  # requests that were not the first attempt at their prompt
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.styles: collections.Counter[str] = collections.Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        #: answers billed, by request body (SHA-256 of its canonical JSON) and by route
        self.billed: collections.Counter[str] = collections.Counter()
        self.billed_by: collections.Counter[str] = collections.Counter()
        #: the Batch API: calls by kind, rows by outcome, tokens billed in batches
        self.batch_calls: collections.Counter[str] = collections.Counter()
        self.batch_rows: collections.Counter[str] = collections.Counter()
        self.batch_prompt_tokens = 0
        self.batch_completion_tokens = 0
        #: answers served by kind of prompt (sql, rating, ranking, json, ...) and by route
        self.kinds: collections.Counter[str] = collections.Counter()
        self.routes: collections.Counter[str] = collections.Counter()
        #: judge and JSON answers served unreadable or invalid on purpose
        self.broken = 0
        self.inflight = 0
        self.max_inflight = 0
        self.inflight_area = 0.0  # ∫ inflight dt, request-seconds
        self.busy_s = 0.0  # time with at least one request in flight
        self._last = self.started_at

    def _advance(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        self.inflight_area += self.inflight * elapsed
        if self.inflight:
            self.busy_s += elapsed
        self._last = now

    def enter(self, attempt: int) -> None:
        self._advance()
        self.requests += 1
        self.retried += attempt > 0
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)

    def leave(self, outcome: str) -> None:
        self._advance()
        self.inflight -= 1
        self.outcomes[outcome] += 1

    def bill(self, body: dict[str, Any], route: str) -> None:
        """One answer paid for: `route` is online or batch."""
        self.billed[body_hash(body)] += 1
        self.billed_by[route] += 1

    def snapshot(self) -> dict[str, Any]:
        self._advance()
        wall = self._last - self.started_at
        faults = {k: v for k, v in self.outcomes.items() if k not in ("ok", "client_gone", "unauthorized")}
        return {
            "requests": self.requests,
            "retried_requests": self.retried,
            "outcomes": dict(self.outcomes),
            "faults_served": sum(faults.values()),
            "styles": dict(self.styles),
            "kinds": dict(self.kinds),
            "routes": dict(self.routes),
            "broken_answers": self.broken,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            # The mean over busy time is the concurrency a client achieved while it had work out;
            # the raw integrals let a caller compute it over its own window (differences).
            "mean_inflight": self.inflight_area / self.busy_s if self.busy_s else 0.0,
            "mean_inflight_wall": self.inflight_area / wall if wall else 0.0,
            "inflight_area_s": self.inflight_area,
            "busy_s": self.busy_s,
            "uptime_s": wall,
            # the same request body paid for more than once (0 unless asked again on purpose)
            "rows_billed": dict(self.billed_by),
            "rows_billed_twice": sum(1 for n in self.billed.values() if n > 1),
            "batch": {
                "calls": dict(self.batch_calls),
                "rows": dict(self.batch_rows),
                "prompt_tokens": self.batch_prompt_tokens,
                "completion_tokens": self.batch_completion_tokens,
            },
        }


def body_hash(body: dict[str, Any]) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def error_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


class _Sim:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.book = AnswerBook.load(config.seeds_path)
        self.plan = config.fault_plan()
        self.stats = SimStats()
        self.attempts: collections.Counter[str] = collections.Counter()

    async def models(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return self.unauthorised()
        model = {"id": self.config.model_name, "object": "model", "created": 0, "owned_by": "fastdistill"}
        return web.json_response({"object": "list", "data": [model]})

    async def stats_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot() | {"answers": len(self.book)})

    def authorised(self, request: web.Request) -> bool:
        key = self.config.api_key
        if key is None:
            return True
        given = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix(
            "Bearer "
        )
        return hmac.compare_digest(given.encode(), key.encode())

    def unauthorised(self) -> web.Response:
        self.stats.outcomes["unauthorized"] += 1
        return error_response(401, "invalid api key (simulated)", "authentication_error")

    async def chat(self, request: web.Request) -> web.Response:
        return await self._serve(request, "openai")

    async def messages(self, request: web.Request) -> web.Response:
        return await self._serve(request, "anthropic")

    async def _serve(self, request: web.Request, shape: str) -> web.Response:
        if not self.authorised(request):
            return self.unauthorised()
        try:
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages must be a non-empty list")
            texts = [text_of(m.get("content")) for m in messages]
            users = [t for m, t in zip(messages, texts, strict=True) if m.get("role") == "user"]
            if shape == "anthropic":
                if not isinstance(body.get("max_tokens"), int):
                    raise ValueError("max_tokens is required")
                if isinstance(body.get("system"), str):
                    texts.append(body["system"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return error_response(400, f"invalid request: {exc}", "invalid_request_error")
        if not users:
            return error_response(400, "invalid request: no user message", "invalid_request_error")
        prompt = users[-1]
        attempt = self.attempts[prompt]
        self.attempts[prompt] += 1
        self.stats.routes[shape] += 1
        fault = self.plan.decide(self.config.seed, prompt, attempt)
        self.stats.enter(attempt)
        # A timeout fault is served even when the client hangs up first (and aiohttp cancels us);
        # any other request cut short that way is only a client that went away.
        outcome = fault.value if fault is Fault.TIMEOUT else "client_gone"
        try:
            response = await self._respond(body, texts, prompt, attempt, fault, shape)
            outcome = "ok" if fault is Fault.NONE else fault.value
            return response
        finally:
            self.stats.leave(outcome)

    def answer(self, body: dict[str, Any], texts: list[str], prompt: str, attempt: int) -> tuple[str, str]:
        """(the completion text, the kind of prompt it answers)."""
        cfg = self.config
        schema = tasks.schema_of(body)
        if schema is None and isinstance(body.get("system"), str):  # the Anthropic client's way
            schema = _schema_in(body["system"])
        kind = "json" if schema is not None else tasks.kind_of(prompt, None)
        readable = True
        if kind == "json":
            assert schema is not None
            text, readable = tasks.json_answer(schema, cfg.seed, prompt, attempt, cfg.json_invalid_rate)
        elif kind == "rating":
            text, readable = tasks.rating_answer(cfg.seed, prompt, attempt, cfg.judge_malformed_rate)
        elif kind == "ranking":
            text, readable = tasks.ranking_answer(cfg.seed, prompt, attempt, cfg.judge_malformed_rate)
        elif kind == "self_instruct":
            text = tasks.self_instruct_answer(cfg.seed, prompt)
        elif kind == "evol":
            text = tasks.evol_answer(cfg.seed, prompt)
        elif self.book.gold_for(prompt) is not None or question_of(prompt) is not None:
            kind = "sql"
            text, style = self.book.answer(prompt, cfg.seed, cfg.style_mix)
            self.stats.styles[style.value if isinstance(style, Style) else "unknown"] += 1
        else:
            # Sampling (temperature > 0) answers each ask anew; greedy answers one way.
            sampled = float(body.get("temperature") or 0) > 0
            model = str(body.get("model") or "")
            text = tasks.generic_answer(cfg.seed, prompt, attempt if sampled else 0, model)
        self.stats.broken += not readable
        return text, kind

    async def _respond(
        self, body: dict[str, Any], texts: list[str], prompt: str, attempt: int, fault: Fault, shape: str
    ) -> web.Response:
        cfg = self.config
        if fault is Fault.RATE_LIMIT:
            # Rate limiting is decided before any work, so it answers at once.
            wait = self.plan.retry_after(cfg.seed, prompt, attempt)
            headers = {"Retry-After": f"{wait:g}", "retry-after-ms": str(round(wait * 1000))}
            return error_response(429, "rate limit reached (simulated)", "rate_limit_exceeded", headers)
        delay = cfg.latency.sample_ms(cfg.seed, prompt, attempt) / 1000
        if fault is Fault.TIMEOUT:
            delay = max(delay, cfg.timeout_sleep_s)
        await asyncio.sleep(delay)
        if fault is Fault.SERVER_ERROR:
            return error_response(500, "internal error (simulated)", "server_error")
        if fault is Fault.NONE:
            text, kind = self.answer(body, texts, prompt, attempt)
            self.stats.kinds[kind] += 1
        else:
            text, _ = self.book.answer(prompt, cfg.seed, cfg.style_mix)
        prompt_tokens = sum(len(t.split()) for t in texts)
        completion_tokens = len(text.split())
        if fault is Fault.NONE:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            self.stats.bill(body, "online")
        ident = hashlib.sha256(f"{prompt}\x1f{attempt}".encode()).hexdigest()[:24]
        model = body.get("model") or cfg.model_name
        payload: dict[str, Any]
        if shape == "anthropic":
            payload = {
                "id": "msg_" + ident,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [] if fault is Fault.EMPTY else [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
            }
        else:
            payload = chat_completion(ident, model, None if fault is Fault.EMPTY else text, texts)
        if fault is Fault.MALFORMED:
            blob = json.dumps(payload)
            return web.Response(text=blob[: len(blob) // 2], content_type="application/json")
        return web.json_response(payload)


def chat_completion(ident: str, model: str, text: str | None, texts: list[str]) -> dict[str, Any]:
    """An OpenAI chat completion answering the messages `texts` with `text` (None: no choices);
    tokens are words."""
    prompt_tokens = sum(len(t.split()) for t in texts)
    completion_tokens = len(text.split()) if text is not None else 0
    choices = [
        {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    return {
        "id": "chatcmpl-" + ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [] if text is None else choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _schema_in(system: str) -> dict[str, Any] | None:
    marker = "matching this JSON schema:\n"
    if marker not in system:
        return None
    try:
        schema = json.loads(system.split(marker, 1)[1].split("\n\n", 1)[0])
    except ValueError:
        return {"type": "object"}
    return schema if isinstance(schema, dict) else {"type": "object"}


class _StatsCollector:
    def __init__(self, stats: SimStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        snap = self.stats.snapshot()
        requests = CounterMetricFamily("fd_sim_requests", "Requests served by outcome", labels=["outcome"])
        for outcome, count in snap["outcomes"].items():
            requests.add_metric([outcome], count)
        yield requests
        yield CounterMetricFamily(
            "fd_sim_retried_requests", "Requests repeating a prompt", value=snap["retried_requests"]
        )
        yield GaugeMetricFamily("fd_sim_inflight", "Requests in flight", value=snap["inflight"])
        yield GaugeMetricFamily(
            "fd_sim_inflight_mean", "Time-weighted mean in flight while busy", value=snap["mean_inflight"]
        )


def create_app(config: SimConfig) -> web.Application:
    sim = _Sim(config)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(sim.stats))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    app = web.Application(client_max_size=16 * 1024**2)
    app["sim"] = sim
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/v1/messages", sim.messages)
    app.router.add_get("/v1/models", sim.models)
    from fastdistill.dev.teacher_sim.batches import BatchAPI  # it builds on this module

    BatchAPI(sim).routes(app)
    app.router.add_get("/stats", sim.stats_json)
    app.router.add_get("/metrics", metrics)
    return app


def run(host: str, port: int, config: SimConfig) -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    app = create_app(config)
    answers = len(app["sim"].book)

    def announce(_: str) -> None:
        print(
            f"teacher-sim on http://{host}:{port}/v1: {answers} answers, latency {config.latency}, "
            f"fault rate {config.fault_rate:g}" + (", api key required" if config.api_key else ""),
            flush=True,
        )

    # handler_cancellation: a client that hung up (timed out) stops counting as in flight.
    # A short shutdown_timeout: a simulator has nothing worth draining on SIGTERM.
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=announce,
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
