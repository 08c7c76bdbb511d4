"""Batch mode's logic (services/llm/batch.py, batch_api.py, the machinery's use of them) against a
fake Batch API in memory: grouping, joining by custom_id, per-row failures online or dead-lettered,
the cache in front of jobs, and resuming recorded jobs instead of resubmitting them."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from services.llm.batch import PREFIX, Batcher, BatchRowFailed, Job
from services.llm.batch_api import BatchFound, BatchStatus, RowFailure, jsonl, read_output
from services.llm.machinery import GenerationFailed, LLMMachinery
from services.text_generation.step import TextGenerationStep
from shared.llm import BatchSettings, LLMEndpoint, LLMRequest, LLMResponse, Retryable
from tests.fakes import DictContext, DictStore


def _answer(custom_id: str, body: dict[str, Any]) -> str:
    return f"answer to {body['messages'][-1]['content']}"


class FakeBatchAPI:
    """A Batch API in memory: a batch completes after `polls_to_complete` retrieves; rows listed in
    `failing` (by prompt) come back as error lines; output lines are shuffled (joined by id)."""

    endpoint = "http://fake/v1"
    model = "fake"

    def __init__(self, polls_to_complete: int = 1, failing: set[str] | None = None) -> None:
        self.polls_to_complete = polls_to_complete
        self.failing = failing or set()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.online: list[str] = []
        #: the next create goes through but its answer is lost (raises)
        self.lose_next_create = False

    # the LLM client protocol (online fallbacks)
    def body(self, request: LLMRequest) -> dict[str, Any]:
        return {"model": self.model, "messages": request.messages}

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.online.append(request.messages[-1]["content"])
        return LLMResponse("online " + _answer("", self.body(request)), self.model, 1, 1)

    async def probe(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    # the Batch API
    def line(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}

    async def upload(self, data: bytes) -> str:
        self.calls.append("upload")
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = data
        return file_id

    async def create(self, input_file_id: str, completion_window: str, metadata: dict[str, str]) -> str:
        self.calls.append("create")
        batch_id = f"batch-{len(self.batches)}"
        self.batches[batch_id] = {"file": input_file_id, "metadata": metadata, "polls": 0}
        if self.lose_next_create:
            self.lose_next_create = False
            raise Retryable("connection reset after the request went out")
        return batch_id

    async def retrieve(self, batch_id: str) -> BatchStatus:
        self.calls.append(f"retrieve {batch_id}")
        batch = self.batches[batch_id]
        batch["polls"] += 1
        if batch["polls"] < self.polls_to_complete:
            return BatchStatus(batch_id, "in_progress")
        out, errors = [], []
        for raw in self.files[batch["file"]].splitlines():
            line = json.loads(raw)
            prompt = line["body"]["messages"][-1]["content"]
            if prompt in self.failing:
                body = {"error": {"message": "overloaded"}}
                errors.append(
                    {"custom_id": line["custom_id"], "response": {"status_code": 500, "body": body}}
                )
                continue
            completion = {
                "model": self.model,
                "choices": [{"message": {"content": _answer(line["custom_id"], line["body"])}}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3},
            }
            out.append({"custom_id": line["custom_id"], "response": {"status_code": 200, "body": completion}})
        random.Random(7).shuffle(out)
        self.files[f"out-{batch_id}"] = jsonl(out)
        self.files[f"err-{batch_id}"] = jsonl(errors)
        return BatchStatus(batch_id, "completed", f"out-{batch_id}", f"err-{batch_id}" if errors else None)

    async def recent(self) -> list[BatchFound]:
        self.calls.append("list")
        return [BatchFound(i, b["metadata"]) for i, b in reversed(self.batches.items())]

    async def content(self, file_id: str) -> bytes:
        self.calls.append(f"content {file_id}")
        return self.files[file_id]


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


def _batcher(api: FakeBatchAPI, store: DictStore, cached: dict[str, LLMResponse], **settings: Any) -> Batcher:
    s = BatchSettings(**({"window_s": 0.01, "poll_every_s": 0.01} | settings))
    return Batcher(s, api, store, cached.__setitem__, "fake", sleep=_no_wait)


def _body(prompt: str) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": prompt}]}


def test_rows_are_grouped_into_jobs_and_joined_back_by_custom_id() -> None:
    api, store, cached = FakeBatchAPI(polls_to_complete=3), DictStore(), {}
    b = _batcher(api, store, cached, max_rows=3)

    async def scenario() -> list[LLMResponse]:
        return await asyncio.gather(*(b.answer(f"k{i}", _body(f"p{i}")) for i in range(5)))

    answers = asyncio.run(scenario())
    assert [a.text for a in answers] == [f"answer to p{i}" for i in range(5)]
    # 3 rows (full) and then 2 (the window closed): two jobs, one upload and one create each
    assert api.calls.count("upload") == api.calls.count("create") == 2
    assert [len(f.splitlines()) for k, f in api.files.items() if k.startswith("file-")] == [3, 2]
    assert sorted(cached) == [f"k{i}" for i in range(5)]  # every answer in the cache
    assert store.data == {}  # jobs done: their records deleted


def test_a_job_is_recorded_and_its_record_stored_before_anything_is_paid_for() -> None:
    api = FakeBatchAPI()

    class Recording(DictStore):
        def flush(self, timeout_s: float = 10.0) -> bool:
            api.calls.append(f"flush {sorted(self.data)}")
            return super().flush(timeout_s)

    store = Recording()
    asyncio.run(_batcher(api, store, {}).answer("k0", _body("p0")))
    first = next(c for c in api.calls if c.startswith("flush"))
    assert first.startswith("flush ['job|") and api.calls.index(first) < api.calls.index("upload")


def test_rows_asking_the_same_share_one_line() -> None:
    api, store, cached = FakeBatchAPI(), DictStore(), {}
    b = _batcher(api, store, cached)

    async def scenario() -> list[LLMResponse]:
        return await asyncio.gather(*(b.answer("same", _body("p")) for _ in range(4)))

    assert {a.text for a in asyncio.run(scenario())} == {"answer to p"}
    assert len(api.files["file-0"].splitlines()) == 1


def test_a_row_the_job_failed_raises_and_the_others_are_answered() -> None:
    api, store, cached = FakeBatchAPI(failing={"p1"}), DictStore(), {}
    b = _batcher(api, store, cached)

    async def scenario() -> list[LLMResponse | BaseException]:
        rows = (b.answer(f"k{i}", _body(f"p{i}")) for i in range(3))
        return await asyncio.gather(*rows, return_exceptions=True)

    results = asyncio.run(scenario())
    assert isinstance(results[1], BatchRowFailed) and "HTTP 500: overloaded" in str(results[1])
    assert [r.text for r in results if isinstance(r, LLMResponse)] == ["answer to p0", "answer to p2"]
    assert sorted(cached) == ["k0", "k2"]


def test_a_recorded_job_is_polled_again_not_resubmitted_and_its_other_rows_cached() -> None:
    """What a restarted service finds: the job's record in the store (a batch in flight)."""
    api = FakeBatchAPI()
    file_id = asyncio.run(api.upload(jsonl([api.line(f"k{i}", _body(f"p{i}")) for i in range(3)])))
    batch_id = asyncio.run(api.create(file_id, "24h", {"fd_job": "j1"}))
    api.calls.clear()
    store, cached = DictStore(), {}
    store.put(PREFIX + "j1", Job("j1", ["k0", "k1", "k2"], file_id, batch_id).encode())
    b = _batcher(api, store, cached)

    answer = asyncio.run(b.answer("k1", _body("p1")))
    assert answer.text == "answer to p1"
    assert api.calls == [f"retrieve {batch_id}", f"content out-{batch_id}"]  # no upload, no create
    # the rows not asked yet are answered from the cache when they come
    assert sorted(cached) == ["k0", "k1", "k2"] and store.data == {}


def test_a_job_recorded_without_its_batch_id_is_found_by_its_metadata() -> None:
    """Killed after the create went out but before its id was recorded: the batch is found by
    the `fd_job` metadata, never created twice."""
    api = FakeBatchAPI()
    file_id = asyncio.run(api.upload(jsonl([api.line("k0", _body("p0"))])))
    asyncio.run(api.create(file_id, "24h", {"fd_job": "j2"}))
    api.calls.clear()
    store = DictStore()
    store.put(PREFIX + "j2", Job("j2", ["k0"], file_id).encode())
    assert asyncio.run(_batcher(api, store, {}).answer("k0", _body("p0"))).text == "answer to p0"
    assert "create" not in api.calls and "upload" not in api.calls and len(api.batches) == 1


def test_a_job_uploaded_but_never_created_is_created_from_its_file() -> None:
    api = FakeBatchAPI()
    file_id = asyncio.run(api.upload(jsonl([api.line("k0", _body("p0"))])))
    api.calls.clear()
    store = DictStore()
    store.put(PREFIX + "j3", Job("j3", ["k0"], file_id).encode())
    assert asyncio.run(_batcher(api, store, {}).answer("k0", _body("p0"))).text == "answer to p0"
    assert api.calls[:2] == ["list", "create"] and "upload" not in api.calls


def test_a_job_recorded_but_never_uploaded_goes_out_as_a_new_job() -> None:
    api, store = FakeBatchAPI(), DictStore()
    store.put(PREFIX + "j4", Job("j4", ["k0", "k9"]).encode())
    assert asyncio.run(_batcher(api, store, {}).answer("k0", _body("p0"))).text == "answer to p0"
    assert api.calls.count("upload") == 1 and len(api.files["file-0"].splitlines()) == 1
    assert store.data == {}


def test_a_create_whose_answer_was_lost_is_not_created_again() -> None:
    api, store = FakeBatchAPI(), DictStore()
    api.lose_next_create = True
    assert asyncio.run(_batcher(api, store, {}).answer("k0", _body("p0"))).text == "answer to p0"
    assert api.calls.count("create") == 1 and len(api.batches) == 1


def test_output_lines_are_read_by_custom_id_and_unreadable_ones_skipped() -> None:
    ok = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 4}}
    blob = jsonl(
        [
            {"custom_id": "a", "response": {"status_code": 200, "body": ok}},
            {"custom_id": "b", "response": None, "error": {"code": "expired", "message": "too late"}},
            {"custom_id": "c", "response": {"status_code": 200, "body": {"choices": []}}},
        ]
    )
    out = read_output(blob + b"not json\n{}\n", "m")
    assert out["a"] == LLMResponse("x", "m", 4, None, "stop")
    assert out["b"] == RowFailure("batch row failed: expired: too late")
    assert isinstance(out["c"], RowFailure) and "malformed" in out["c"].reason
    assert set(out) == {"a", "b", "c"}


def _machinery(api: FakeBatchAPI, ctx: DictContext, **batch: Any) -> LLMMachinery:
    settings = {"window_s": 0.01, "poll_every_s": 0.01} | batch
    endpoint = LLMEndpoint(mode="batch", batch=BatchSettings(**settings), backoff_base_s=0.001)
    m = LLMMachinery("test", endpoint, api)  # type: ignore[arg-type]
    m.open(ctx)  # type: ignore[arg-type]
    return m


def _request(prompt: str) -> LLMRequest:
    return LLMRequest([{"role": "user", "content": prompt}])


def test_failed_rows_are_asked_online_and_cached_rows_never_go_into_a_batch() -> None:
    api, ctx = FakeBatchAPI(failing={"p1"}), DictContext()
    m = _machinery(api, ctx)

    async def scenario() -> list[str]:
        first = await asyncio.gather(*(m.generate(_request(f"p{i}")) for i in range(3)))
        # asked again: every answer from the cache (the failed row's online answer too)
        again = await asyncio.gather(*(m.generate(_request(f"p{i}")) for i in range(3)))
        assert all(g.cached for g in again)
        return [g.text for g in first]

    assert asyncio.run(scenario()) == ["answer to p0", "online answer to p1", "answer to p2"]
    assert api.online == ["p1"] and api.calls.count("create") == 1
    assert ctx.durable["batch_jobs"] is True and ctx.scopes["batch_jobs"] == "global"


def test_failed_rows_are_dead_lettered_when_asked() -> None:
    api = FakeBatchAPI(failing={"p1"})
    m = _machinery(api, DictContext(), on_row_failure="dead_letter")
    with pytest.raises(GenerationFailed, match="batch row failed: HTTP 500"):
        asyncio.run(m.generate(_request("p1")))
    assert api.online == []


def test_batch_mode_is_operational_and_holds_a_jobs_worth_of_rows_in_flight() -> None:
    online = TextGenerationStep(llm={"model": "m"})
    batch = TextGenerationStep(llm={"model": "m", "mode": "batch", "batch": {"max_rows": 500, "max_jobs": 3}})
    assert online.signature() == batch.signature()  # same generations, same cache, no recompute
    assert batch.concurrency() == 1500 and online.concurrency() == 32
