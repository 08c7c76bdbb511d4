"""text_generation and the LLM machinery without a server: templates, decode settings, outputs,
cache keys, signatures, backoff, the cache, credentials, endpoint health with a scripted client."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from fastdistill.plan import PipelinePlan, PlanError
from services.llm.health import EndpointDown
from services.llm.http_errors import connection_cause, retry_after_s
from services.llm.machinery import GenerationFailed, LLMMachinery
from services.llm.openai_client import OpenAIClient
from services.llm.step import RowSettingsError
from services.llm.templates import TemplateRowError
from services.text_generation.step import TextGenerationStep
from shared.llm import (
    LLMEndpoint,
    LLMRequest,
    LLMResponse,
    MissingSetting,
    Overloaded,
    Rejected,
    ServerFailure,
    Unreachable,
    cache_key,
)
from shared.pipeline import PipelineSpec
from tests.fakes import DictContext

SQL_TEMPLATE = "Schema: {{ schema }}\nQuestion: {{ instruction }}\nSQL:"
ROW = {
    "sample_id": "abc",
    "schema": "users(id, name)",
    "instruction": "List all user names ordered by id.",
    "system_prompt": "Return SQL only.",
    "decode_profile": {"temperature": 0.2, "max_tokens": 128, "top_k": None},
}


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens once the socket is closed


def _step(**llm: Any) -> TextGenerationStep:
    return TextGenerationStep(template=SQL_TEMPLATE, llm=llm)


def test_messages_follow_the_template_and_system_prompt() -> None:
    step = _step()
    assert step.messages(ROW) == [
        {"role": "system", "content": "Return SQL only."},
        {
            "role": "user",
            "content": "Schema: users(id, name)\nQuestion: List all user names ordered by id.\nSQL:",
        },
    ]
    assert [m["role"] for m in step.messages({**ROW, "system_prompt": None})] == ["user"]
    no_system = TextGenerationStep(template=SQL_TEMPLATE, system_prompt_field=None)
    assert [m["role"] for m in no_system.messages(ROW)] == ["user"]
    templated = TextGenerationStep(
        template="{{ instruction }}", system_prompt="You write SQL for {{ schema }}."
    )
    assert templated.messages(ROW)[0]["content"] == "You write SQL for users(id, name)."
    assert templated.reads() == {"instruction", "schema"}


def test_a_missing_value_at_row_time_is_a_row_error_naming_the_field() -> None:
    step = _step()
    with pytest.raises(TemplateRowError, match="needs field 'schema'"):
        step.messages({"instruction": "x"})
    # a null is missing too: the prompt never says "None"
    with pytest.raises(TemplateRowError, match="needs field 'schema'"):
        step.messages({"instruction": "x", "schema": None})
    optional = TextGenerationStep(
        template="{{ instruction }}{% if hint is defined %} ({{ hint }}){% endif %}"
    )
    assert optional.messages({"instruction": "Q"})[-1]["content"] == "Q"
    assert optional.messages({"instruction": "Q", "hint": "h"})[-1]["content"] == "Q (h)"


def test_a_template_variable_no_input_provides_does_not_load() -> None:
    spec = PipelineSpec.model_validate(
        {
            "name": "jinja",
            "steps": [
                {
                    "id": "gen",
                    "step": "text_generation",
                    "params": {"template": "Q: {{ instruction }} {{ contxt }}"},
                }
            ],
        }
    )
    with pytest.raises(PlanError) as err:
        PipelinePlan.build(spec)
    assert "step 'gen' reads 'contxt'" in str(err.value)
    with pytest.raises(ValueError, match="Jinja2 syntax error"):
        TextGenerationStep(template="{{ instruction ")


def test_decode_settings_from_the_endpoint_and_the_row() -> None:
    step = TextGenerationStep(llm={"generation_kwargs": {"temperature": 0.7, "top_p": 0.9}})
    assert step.settings(ROW, "decode_profile") == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 128}
    assert step.settings({"decode_profile": '{"top_k": 5}'}, "decode_profile") == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
    }
    assert step.settings({}, "decode_profile") == {"temperature": 0.7, "top_p": 0.9}
    with pytest.raises(RowSettingsError, match="not JSON"):
        step.settings({"decode_profile": "{oops"}, "decode_profile")
    with pytest.raises(RowSettingsError, match="may not set"):
        step.settings({"decode_profile": {"model": "other"}}, "decode_profile")
    with pytest.raises(ValueError, match="may not set"):
        LLMEndpoint(generation_kwargs={"messages": []})


def test_output_fields_follow_the_output_param_and_num_generations() -> None:
    names = [f["name"] for f in TextGenerationStep(output="completion").output_fields()]
    assert names == [
        "completion",
        "teacher_model",
        "teacher_cached",
        "teacher_latency_ms",
        "prompt_tokens",
        "completion_tokens",
    ]
    many = [f["name"] for f in TextGenerationStep(num_generations=3).output_fields()]
    assert many[-3:] == ["parent_id", "generation_index", "generation_count"]


def _key(step: TextGenerationStep, row: dict[str, Any] = ROW) -> str:
    (request,) = step.requests(row)
    return step.machinery.key(request)


def test_cache_key_is_endpoint_and_request_body() -> None:
    base = _key(_step(base_url="http://a:8000/v1"))
    # same endpoint (modulo a trailing slash), same body: same key, whatever the speed knobs or row id
    same = _step(base_url="http://a:8000/v1/", max_concurrency=4, max_retries=1, request_timeout_s=5)
    assert _key(same) == base
    assert _key(_step(base_url="http://a:8000/v1"), {**ROW, "sample_id": "other"}) == base
    # it is exactly the teacher's key of before: sha256 of {base_url, body}
    body = {"model": "teacher-sim", "messages": _step().messages(ROW), "temperature": 0.2, "max_tokens": 128}
    assert base == cache_key("http://a:8000/v1", body)
    assert _key(_step(base_url="http://b:8000/v1")) != base
    assert _key(_step(base_url="http://a:8000/v1", model="other")) != base
    assert _key(_step(base_url="http://a:8000/v1", generation_kwargs={"seed": 1})) != base
    hotter = {**ROW, "decode_profile": {"temperature": 0.9, "max_tokens": 128}}
    assert _key(_step(base_url="http://a:8000/v1"), hotter) != base
    # credentials in a URL are no part of the endpoint's identity (nor of any log line)
    assert _step(base_url="http://user:secret@a:8000/v1/").machinery.client.endpoint == "http://a:8000/v1"
    # the children of num_generations have keys of their own; child 0's is the single generation's
    keys = [
        step.machinery.key(r)
        for step in [
            TextGenerationStep(template=SQL_TEMPLATE, num_generations=3, llm={"base_url": "http://a:8000/v1"})
        ]
        for r in step.requests(ROW)
    ]
    assert keys[0] == base and len(set(keys)) == 3


def test_cache_key_follows_openai_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # the environment is read when the client is built (the step's open, or its first row)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://a:8000/v1/")
    on_a = _step()
    key_a = _key(on_a)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://b:8000/v1")
    on_b = _step()
    assert (on_a.machinery.client.endpoint, on_b.machinery.client.endpoint) == (
        "http://a:8000/v1",
        "http://b:8000/v1",
    )
    assert key_a != _key(on_b)
    assert _key(_step(base_url="http://a:8000/v1")) == _key(on_a)  # the param wins over the env


def test_signature_leaves_out_operational_params() -> None:
    assert TextGenerationStep(cache=False).signature() == TextGenerationStep().signature()
    fast = TextGenerationStep(llm={"max_concurrency": 4, "max_retries": 1, "headers": {"X-Team": "a"}})
    assert fast.signature() == TextGenerationStep().signature()
    assert TextGenerationStep(llm={"model": "other"}).signature() != TextGenerationStep().signature()
    assert TextGenerationStep(llm={"base_url": "http://x/v1"}).signature() != TextGenerationStep().signature()
    assert TextGenerationStep(template="{{ x }}").signature() != TextGenerationStep().signature()
    assert TextGenerationStep(num_generations=2).signature() != TextGenerationStep().signature()


def test_retry_after_header_forms() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "0.4"}) == 0.4
    assert retry_after_s({"retry-after": "2"}) == 2.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_s({"retry-after": later}) or 0) <= 31
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_backoff_honours_retry_after_and_is_jittered() -> None:
    m = LLMMachinery("t", LLMEndpoint(backoff_base_s=0.1, backoff_max_s=2.0, max_retry_after_s=5))
    waits = [m._wait(Overloaded("429", retry_after=0.8), 1) for _ in range(50)]
    assert all(0.8 <= w <= 0.8 * 1.25 + 0.05 for w in waits) and len(set(waits)) > 1
    assert m._wait(Overloaded("429", retry_after=600), 1) <= 5 * 1.25 + 0.05
    backoffs = [m._wait(ServerFailure("500"), 6) for _ in range(50)]
    assert all(0 <= w <= 2.0 for w in backoffs) and len(set(backoffs)) > 1


def test_connection_causes_are_named() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapper = RuntimeError("All connection attempts failed")
    wrapper.__cause__ = refused
    assert connection_cause(wrapper) == "connection refused"
    assert connection_cause(socket.gaierror(-2, "Name or service not known")) == "name not resolved"
    assert connection_cause(RuntimeError("odd")) == "odd"


def test_a_dead_endpoint_is_waited_for_then_given_up_on_with_the_reason() -> None:
    step = _step(base_url=_dead_url(), give_up_after_s=0.3, probe_every_s=0.05)
    with pytest.raises(EndpointDown, match=r"unreachable \(connection refused\) for 0 s"):
        asyncio.run(step.process_row_async(dict(ROW)))
    assert step.machinery.health.outages == 1 and step.machinery.health.probes >= 1


def test_cache_hit_needs_no_server() -> None:
    step = _step(base_url=_dead_url(), max_retries=0, give_up_after_s=0.2)
    ctx = DictContext()
    step.open(ctx)
    # Durable at once and shared by all runs: paid generations survive aborts and serve replays.
    assert ctx.durable == {"generation_cache": True}
    assert ctx.scopes == {"generation_cache": "global"}
    store = ctx.stores["generation_cache"]
    usage = {"prompt_tokens": 9, "completion_tokens": 6}
    store.put(_key(step), json.dumps({"generation": "SELECT 1;", "usage": usage}).encode())
    out = asyncio.run(step.process_row_async(dict(ROW)))
    assert isinstance(out, dict)
    assert out["generation"] == "SELECT 1;"
    assert out["teacher_cached"] is True and out["teacher_latency_ms"] == 0.0
    assert (out["prompt_tokens"], out["completion_tokens"], out["teacher_model"]) == (9, 6, "teacher-sim")
    # An unreadable entry is a miss, not a failure of the row: the request is made (and fails here).
    store.put(_key(step), b"not json")
    with pytest.raises(EndpointDown, match="connection refused"):
        asyncio.run(step.process_row_async(dict(ROW)))


@pytest.mark.parametrize(
    ("step_cache", "run_cache"), [(False, True), (True, False)], ids=["step-cache-false", "run-no-cache"]
)
def test_cache_off_asks_the_server_and_still_stores(step_cache: bool, run_cache: bool) -> None:
    step = TextGenerationStep(
        template=SQL_TEMPLATE, cache=step_cache, llm={"base_url": _dead_url(), "give_up_after_s": 0.2}
    )
    ctx = DictContext(cache_enabled=run_cache)
    step.open(ctx)
    ctx.stores["generation_cache"].put(_key(step), json.dumps({"generation": "SELECT 1;"}).encode())
    # The cached answer is not used: the request is made (and fails, nothing listens there).
    with pytest.raises(EndpointDown):
        asyncio.run(step.process_row_async(dict(ROW)))


def test_api_key_comes_from_the_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "api_key" not in LLMEndpoint.model_fields
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def key(endpoint: LLMEndpoint) -> str:
        return OpenAIClient(endpoint).pool().api_key

    assert asyncio.run(key(LLMEndpoint())) == "sk-local"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("TEAM_B_KEY", "sk-team-b")
    assert asyncio.run(key(LLMEndpoint())) == "sk-from-env"
    assert asyncio.run(key(LLMEndpoint(api_key_env="TEAM_B_KEY"))) == "sk-team-b"
    client = OpenAIClient(LLMEndpoint(api_key_env="TEAM_B_KEY"))
    assert "sk-team-b" not in repr(client) and "sk-team-b" not in repr(client._key)
    # a variable named but unset fails when the step opens, not as a 401 on every row
    with pytest.raises(MissingSetting, match="NO_SUCH_KEY"):
        TextGenerationStep(llm={"api_key_env": "NO_SUCH_KEY"}).open(DictContext())
    with pytest.raises(MissingSetting, match="NO_SUCH_URL"):
        TextGenerationStep(llm={"base_url_env": "NO_SUCH_URL"}).open(DictContext())
    monkeypatch.setenv("TEAM_B_URL", "http://b.example:8000/v1/")
    assert OpenAIClient(LLMEndpoint(base_url_env="TEAM_B_URL")).endpoint == "http://b.example:8000/v1"


def test_a_client_per_event_loop() -> None:
    client = OpenAIClient(LLMEndpoint(base_url="http://127.0.0.1:9/v1"))

    async def get() -> object:
        assert client.pool() is client.pool()
        return client.pool()

    first = asyncio.run(get())
    assert asyncio.run(get()) is not first


class Scripted:
    """An LLM client whose attempts follow a script (an answer text or an exception each)."""

    endpoint = "http://scripted/v1"
    model = "scripted"

    def __init__(self, script: list[str | Exception], probes: list[Exception | None] | None = None) -> None:
        self.script = script
        self.probes = probes or []
        self.calls = 0
        self.probed = 0

    def body(self, request: LLMRequest) -> dict[str, Any]:
        return {"messages": request.messages}

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return LLMResponse(step, self.model, 3, 2)

    async def probe(self) -> None:
        self.probed += 1
        outcome = self.probes.pop(0) if self.probes else None
        if outcome is not None:
            raise outcome

    async def aclose(self) -> None:
        pass


REQUEST = LLMRequest([{"role": "user", "content": "hi"}])


def _machinery(client: Scripted, **settings: Any) -> LLMMachinery:
    endpoint = LLMEndpoint(backoff_base_s=0.001, probe_every_s=0.01, **settings)
    return LLMMachinery("test", endpoint, client)


def test_an_outage_holds_the_row_without_spending_its_retries(caplog: pytest.LogCaptureFixture) -> None:
    down = Unreachable("connection refused")
    client = Scripted([down, "SELECT 1;"], probes=[down, down, None])
    m = _machinery(client, max_retries=0)
    reasons: list[str | None] = []

    async def scenario() -> str:
        task = asyncio.ensure_future(m.generate(REQUEST, use_cache=False))
        while not task.done():
            reasons.append(m.ready())
            await asyncio.sleep(0.005)
        return task.result().text

    with caplog.at_level(logging.WARNING, logger="services.llm.health"):
        assert asyncio.run(scenario()) == "SELECT 1;"
    # max_retries=0, yet the row got its answer: failed attempts while down spend nothing
    assert any(r and "unreachable (connection refused)" in r for r in reasons)
    assert m.ready() is None and m.health.outages == 1 and client.probed == 3
    lines = [r.getMessage() for r in caplog.records]
    # one line going down and one coming back, not one per failed attempt or probe
    assert len(lines) == 2, lines
    assert "unreachable (connection refused)" in lines[0] and "answers again" in lines[1]


def test_a_burst_of_server_errors_counts_as_an_outage_only_when_consecutive() -> None:
    five_hundred = ServerFailure("HTTP 500: boom")
    m = _machinery(Scripted([]), server_errors_to_open=3)
    m.health.on_failure(five_hundred)
    m.health.on_failure(five_hundred)
    m.health.on_success()
    m.health.on_failure(five_hundred)
    assert not m.health.down
    m.health.on_failure(five_hundred)
    m.health.on_failure(five_hundred)
    assert m.health.down and "3 server errors in a row" in (m.health.reason() or "")
    # other failures are the row's, not the endpoint's
    other = _machinery(Scripted([]))
    for exc in (Overloaded("429"), Rejected("HTTP 401"), ServerFailure("500")):
        other.health.on_failure(exc)
    assert not other.health.down


def test_row_failures_are_not_outages() -> None:
    client = Scripted([Rejected("HTTP 400: bad request")])
    with pytest.raises(GenerationFailed, match="endpoint rejected the request: HTTP 400"):
        asyncio.run(_machinery(client).generate(REQUEST, use_cache=False))
    retried = Scripted([ServerFailure("HTTP 500: a"), ServerFailure("HTTP 500: b"), "ok"])
    assert asyncio.run(_machinery(retried, max_retries=2).generate(REQUEST, use_cache=False)).text == "ok"
    exhausted = Scripted([ServerFailure("HTTP 500: a"), ServerFailure("HTTP 500: b")])
    with pytest.raises(GenerationFailed, match="gave up after 2 attempts: HTTP 500: b"):
        asyncio.run(_machinery(exhausted, max_retries=1).generate(REQUEST, use_cache=False))
