"""TeacherStep parts that need no server: prompts, decode settings, signatures, cache, backoff."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from tenacity import RetryCallState

from services.teacher.step import TeacherError, TeacherStep, _Retryable, cache_key, retry_after_s
from tests.fakes import DictContext

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


def test_messages_follow_the_template_and_system_prompt() -> None:
    step = TeacherStep()
    assert step.messages(ROW) == [
        {"role": "system", "content": "Return SQL only."},
        {
            "role": "user",
            "content": "Schema: users(id, name)\nQuestion: List all user names ordered by id.\nSQL:",
        },
    ]
    assert [m["role"] for m in step.messages({**ROW, "system_prompt": None})] == ["user"]
    assert [m["role"] for m in TeacherStep(system_prompt_field=None).messages(ROW)] == ["user"]
    with pytest.raises(TeacherError, match="'schema'"):
        step.messages({"instruction": "x"})


def test_decode_settings_from_object_or_json_text() -> None:
    step = TeacherStep()
    assert step.decode_settings(ROW) == {"temperature": 0.2, "max_tokens": 128}
    assert step.decode_settings({"decode_profile": '{"top_p": 0.9, "top_k": 5}'}) == {
        "top_p": 0.9,
        "top_k": 5,
    }
    assert step.decode_settings({"decode_profile": None}) == {}
    assert step.decode_settings({}) == {}
    with pytest.raises(TeacherError, match="not JSON"):
        step.decode_settings({"decode_profile": "{oops"})
    with pytest.raises(TeacherError, match="may not set"):
        step.decode_settings({"decode_profile": {"model": "other"}})


def _key(step: TeacherStep, row: dict[str, object] = ROW) -> str:
    return cache_key(step.base_url, step.request_body(row))


def test_cache_key_is_endpoint_and_request_body() -> None:
    base = _key(TeacherStep(base_url="http://a:8000/v1"))
    # How fast, how often, and which row asks do not matter; a spelling of the same URL neither.
    same = TeacherStep(base_url="http://a:8000/v1/", max_concurrency=4, max_retries=1, request_timeout_s=5)
    assert _key(same) == base
    assert _key(TeacherStep(base_url="http://a:8000/v1"), {**ROW, "sample_id": "other"}) == base
    # Another server with the same model name, or anything else in the request, is another answer.
    assert _key(TeacherStep(base_url="http://b:8000/v1")) != base
    assert _key(TeacherStep(base_url="http://a:8000/v1", model="other")) != base
    assert _key(TeacherStep(base_url="http://a:8000/v1", prompt_template="Q: {instruction}")) != base
    assert _key(TeacherStep(base_url="http://a:8000/v1", system_prompt_field=None)) != base
    hotter = {**ROW, "decode_profile": {"temperature": 0.9, "max_tokens": 128}}
    assert _key(TeacherStep(base_url="http://a:8000/v1"), hotter) != base
    assert _key(TeacherStep(base_url="http://a:8000/v1"), {**ROW, "instruction": "Count users."}) != base


def test_cache_key_follows_openai_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://a:8000/v1")
    on_a = TeacherStep()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://b:8000/v1")
    on_b = TeacherStep()
    assert (on_a.base_url, on_b.base_url) == ("http://a:8000/v1", "http://b:8000/v1")
    assert _key(on_a) != _key(on_b)
    assert _key(TeacherStep(base_url="http://a:8000/v1")) == _key(on_a)  # the param wins over the env


def test_signature_leaves_out_the_cache_switch_and_speed_knobs() -> None:
    # Whether the cache is read changes how a row is fetched, not what it becomes.
    assert TeacherStep(cache=False).signature() == TeacherStep().signature()
    assert TeacherStep(max_concurrency=4, max_retries=1).signature() == TeacherStep().signature()
    # What decides the answer is the step's identity: the model, the endpoint.
    assert TeacherStep(model="other").signature() != TeacherStep().signature()
    assert TeacherStep(base_url="http://elsewhere/v1").signature() != TeacherStep().signature()


def test_output_fields_follow_the_output_param() -> None:
    names = [f["name"] for f in TeacherStep(output="completion").output_fields()]
    assert names == [
        "completion",
        "teacher_model",
        "teacher_cached",
        "teacher_latency_ms",
        "prompt_tokens",
        "completion_tokens",
    ]


def test_retry_after_header_forms() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "0.4"}) == 0.4
    assert retry_after_s({"retry-after": "2"}) == 2.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_s({"retry-after": later}) or 0) <= 31
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def _state_after(exc: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_backoff_honours_retry_after_and_is_jittered() -> None:
    step = TeacherStep(backoff_base_s=0.1, backoff_max_s=2.0, max_retry_after_s=5)
    waits = [step._wait(_state_after(_Retryable("429", "http_429", retry_after=0.8))) for _ in range(50)]
    assert all(0.8 <= w <= 0.8 * 1.25 + 0.05 for w in waits) and len(set(waits)) > 1
    assert step._wait(_state_after(_Retryable("429", "http_429", retry_after=600))) <= 5 * 1.25 + 0.05
    backoffs = [step._wait(_state_after(_Retryable("500", "http_5xx"), attempt=6)) for _ in range(50)]
    assert all(0 <= w <= 2.0 for w in backoffs) and len(set(backoffs)) > 1


def test_works_without_open_and_without_a_cache() -> None:
    step = TeacherStep(base_url=_dead_url(), max_retries=1, backoff_base_s=0.01)
    assert step.cache is None
    with pytest.raises(TeacherError, match=r"gave up after 2 attempts: connection failed"):
        asyncio.run(step.process_row_async(dict(ROW)))


def test_cache_hit_needs_no_server() -> None:
    step = TeacherStep(base_url=_dead_url(), max_retries=0)
    ctx = DictContext()
    step.open(ctx)
    # Durable at once and shared by all runs: paid generations survive aborts and serve replays.
    assert ctx.durable == {"generation_cache": True}
    assert ctx.scopes == {"generation_cache": "global"}
    store = ctx.stores["generation_cache"]
    key = _key(step)
    usage = {"prompt_tokens": 9, "completion_tokens": 6}
    store.put(key, json.dumps({"generation": "SELECT 1;", "usage": usage}).encode())
    out = asyncio.run(step.process_row_async(dict(ROW)))
    assert out is not None
    assert out["generation"] == "SELECT 1;"
    assert out["teacher_cached"] is True and out["teacher_latency_ms"] == 0.0
    assert (out["prompt_tokens"], out["completion_tokens"], out["teacher_model"]) == (9, 6, "teacher-sim")
    # An unreadable entry is a miss, not a failure of the row: the request is made (and fails here).
    store.put(key, b"not json")
    with pytest.raises(TeacherError, match="connection failed"):
        asyncio.run(step.process_row_async(dict(ROW)))


def test_api_key_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "api_key" not in TeacherStep.Params.model_fields
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def key() -> str:
        return TeacherStep().client().api_key

    assert asyncio.run(key()) == "sk-local"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert asyncio.run(key()) == "sk-from-env"
    assert "sk-from-env" not in repr(TeacherStep().params)


def test_a_client_per_event_loop() -> None:
    step = TeacherStep(base_url="http://127.0.0.1:9/v1")

    async def client() -> object:
        assert step.client() is step.client()
        return step.client()

    first = asyncio.run(client())
    assert asyncio.run(client()) is not first


@pytest.mark.parametrize(
    ("step_cache", "run_cache"), [(False, True), (True, False)], ids=["step-cache-false", "run-no-cache"]
)
def test_cache_off_asks_the_server_and_still_stores(step_cache: bool, run_cache: bool) -> None:
    step = TeacherStep(base_url=_dead_url(), max_retries=0, cache=step_cache)
    ctx = DictContext(cache_enabled=run_cache)
    step.open(ctx)
    ctx.stores["generation_cache"].put(_key(step), json.dumps({"generation": "SELECT 1;"}).encode())
    # The cached answer is not used: the request is made (and fails, nothing listens there).
    with pytest.raises(TeacherError, match="connection failed"):
        asyncio.run(step.process_row_async(dict(ROW)))
