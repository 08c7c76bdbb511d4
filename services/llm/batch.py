"""Batch mode: rows grouped into Batch API jobs, polled, answers joined back by `custom_id`.

Rows are keyed by their generation cache key, which is also the job line's `custom_id`: two rows
asking the same thing share one line and one answer. A job fills for `window_s` after its first
row (or until `max_rows`), then is submitted; every row awaits its key's future.

A job lives in a durable state store (a compacted topic, written at once: the job is paid for,
whatever becomes of the transaction) from before its file is uploaded to after its answers are
in the generation cache:
`job|<local id>` → {keys, file_id, batch_id}. A service killed while a job runs re-reads its
uncommitted rows on restart; a row whose key is in a stored job waits on that job, which is
polled again, never submitted again. A job recorded without a batch id (killed between the
upload and the create) is looked up by the `fd_job` metadata it was created with, and created
only if the provider has none. Answers go to the generation cache before the job's record is
deleted, so a row arriving later finds its answer there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.llm.batch_api import BatchAPI, BatchStatus, RowFailure, jsonl, read_output
from shared.llm import BatchSettings, LLMResponse, Rejected, Retryable
from shared.step import StateStore

log = logging.getLogger(__name__)

JOB_STORE = "batch_jobs"
PREFIX = "job|"
#: attempts at one Batch API call before the job is given up (its rows then fail)
CALL_ATTEMPTS = 8

T = TypeVar("T")


class BatchRowFailed(RuntimeError):
    """The job did not answer this row (a per-row error, a missing line, a failed job)."""


class JobFailed(RuntimeError):
    """The job as a whole cannot go on (rejected, or its calls kept failing)."""


@dataclass
class Job:
    local_id: str
    keys: list[str]
    file_id: str | None = None
    batch_id: str | None = None

    def encode(self) -> bytes:
        value = {"keys": self.keys, "file_id": self.file_id, "batch_id": self.batch_id}
        return json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, local_id: str, blob: bytes) -> Job:
        value = json.loads(blob)
        keys = value["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise TypeError("keys must be a list of strings")
        return cls(local_id, keys, value.get("file_id"), value.get("batch_id"))


@dataclass
class Observer:
    """What the batcher reports (metrics, counted by the machinery)."""

    on_job: Callable[[str], None] = lambda event: None
    on_rows: Callable[[str, int], None] = lambda outcome, n: None
    on_waiting: Callable[[int], None] = lambda n: None


@dataclass
class Batcher:
    settings: BatchSettings
    api: BatchAPI
    store: StateStore
    #: stores an answer in the generation cache (durably) under its key
    remember: Callable[[str, LLMResponse], None]
    model: str
    observer: Observer = field(default_factory=Observer)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        #: lines of the job being filled, by key
        self._open: dict[str, dict[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        #: one future per key some row awaits, and that key's request body
        self._waiters: dict[str, asyncio.Future[LLMResponse]] = {}
        self._bodies: dict[str, dict[str, Any]] = {}
        #: jobs this process submits or polls, and which job each of their keys is in
        self._running: dict[str, Job] = {}
        self._job_of: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._index: tuple[tuple[str, int], ...] = ()
        self._stored: dict[str, str] = {}

    # -- rows ------------------------------------------------------------------------------------
    async def answer(self, key: str, body: dict[str, Any]) -> LLMResponse:
        """The job's answer for `key`; raises BatchRowFailed if the job did not answer it."""
        future = self._waiters.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[key] = future
            self._bodies[key] = body
            self.observer.on_waiting(len(self._waiters))
            if key not in self._job_of and key not in self._open:
                stored = self._stored_job(key)
                if stored is not None:
                    self._resume(stored)
                else:
                    self._add(key, body)
        # shielded: a row cancelled (its partition revoked) does not cancel the key's other rows
        return await asyncio.shield(future)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _add(self, key: str, body: dict[str, Any]) -> None:
        self._open[key] = self.api.line(key, body)
        if len(self._open) >= self.settings.max_rows:
            self._submit_open()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.settings.window_s, self._submit_open)

    def _submit_open(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._open:
            return
        lines, self._open = list(self._open.values()), {}
        job = Job(uuid.uuid4().hex, [line["custom_id"] for line in lines])
        # Recorded before anything is sent: a kill after the upload finds it (see the docstring).
        self._save(job)
        self._start(job, lines)

    # -- jobs ------------------------------------------------------------------------------------
    def _stored_job(self, key: str) -> Job | None:
        entries = self.store.scan(PREFIX)
        signature = tuple((k, hash(v)) for k, v in entries)
        if signature != self._index:
            self._stored = {}
            for store_key, blob in entries:
                try:
                    job = Job.decode(store_key.removeprefix(PREFIX), blob)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring an unreadable batch job record %s: %r", store_key, exc)
                    continue
                self._stored |= dict.fromkeys(job.keys, store_key)
            self._index = signature
        found = self._stored.get(key)
        if found is None or found.removeprefix(PREFIX) in self._running:
            return None
        record = self.store.get(found)
        return None if record is None else Job.decode(found.removeprefix(PREFIX), record)

    def _resume(self, job: Job) -> None:
        log.info(
            "resuming batch job %s (batch %s, %d rows) recorded before a restart: polling, not resubmitting",
            job.local_id,
            job.batch_id or "not yet known",
            len(job.keys),
        )
        self.observer.on_job("resumed")
        self._start(job, None)

    def _start(self, job: Job, lines: list[dict[str, Any]] | None) -> None:
        self._running[job.local_id] = job
        for key in job.keys:
            self._job_of[key] = job.local_id
        task = asyncio.ensure_future(self._run(job, lines))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job, lines: list[dict[str, Any]] | None) -> None:
        try:
            if job.batch_id is None and not await self._submit(job, lines):
                return
            status = await self._poll(job)
            results: dict[str, LLMResponse | RowFailure] = {}
            # the error file first: a custom_id in both (it should not be) counts as answered
            for file_id in (status.error_file_id, status.output_file_id):
                if file_id:
                    results |= read_output(await self._content(file_id), self.model)
            self._finish(job, results, f"not in the output of batch {job.batch_id} ({status.status})")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("batch job %s (batch %s) failed: %s", job.local_id, job.batch_id, exc)
            self.observer.on_job("failed")
            self._finish(job, {}, f"batch job failed: {exc}")

    async def _submit(self, job: Job, lines: list[dict[str, Any]] | None) -> bool:
        """Give `job` its batch id (found, or created); False if it has to be given up unsent."""
        found = await self._find(job) if lines is None or job.file_id is not None else None
        if found is not None:
            job.batch_id = found
        else:
            if job.file_id is None:
                if lines is None:
                    self._requeue(job)  # recorded, never uploaded: its rows go in a new job
                    return False
                await self._durable()
                job.file_id = await self._call(lambda: self.api.upload(jsonl(lines)))
                self._save(job)
            job.batch_id = await self._create(job)
        self._save(job)
        await self._durable()  # spares a restart the look-up by metadata
        self.observer.on_job("submitted" if lines is not None else "recovered")
        log.info("batch %s submitted for job %s: %d rows", job.batch_id, job.local_id, len(job.keys))
        return True

    async def _create(self, job: Job) -> str:
        assert job.file_id is not None
        file_id = job.file_id
        metadata = {"fd_job": job.local_id}
        for attempt in range(1, CALL_ATTEMPTS + 1):
            try:
                return await self.api.create(file_id, self.settings.completion_window, metadata)
            except Rejected as exc:
                raise JobFailed(f"the endpoint refused the batch: {exc}") from exc
            except Retryable as exc:
                # The create may have gone through with its answer lost: look before asking again.
                if (found := await self._find(job)) is not None:
                    return found
                if attempt == CALL_ATTEMPTS:
                    raise JobFailed(f"creating the batch failed {attempt} times: {exc}") from exc
                await self.sleep(self._backoff(attempt, exc))
        raise AssertionError("unreachable")

    async def _find(self, job: Job) -> str | None:
        for batch in await self._call(self.api.recent):
            if batch.metadata.get("fd_job") == job.local_id:
                return batch.id
        return None

    async def _poll(self, job: Job) -> BatchStatus:
        assert job.batch_id is not None
        batch_id = job.batch_id
        while True:
            status = await self._call(lambda: self.api.retrieve(batch_id))
            if status.final:
                return status
            await self.sleep(self.settings.poll_every_s)

    def _finish(self, job: Job, results: dict[str, LLMResponse | RowFailure], missing: str) -> None:
        answered = failed = 0
        for key in job.keys:
            result = results.get(key)
            future = self._waiters.pop(key, None)
            self._bodies.pop(key, None)
            self._job_of.pop(key, None)
            if isinstance(result, LLMResponse):
                answered += 1
                # In the cache before the record goes: a row arriving later is answered there.
                self.remember(key, result)
                if future is not None and not future.done():
                    future.set_result(result)
            else:
                failed += 1
                if future is not None and not future.done():
                    reason = result.reason if isinstance(result, RowFailure) else missing
                    future.set_exception(BatchRowFailed(reason))
                    future.exception()  # retrieved: a row cancelled meanwhile is not a warning
        self._running.pop(job.local_id, None)
        self.store.delete(PREFIX + job.local_id)
        self.observer.on_rows("ok", answered)
        self.observer.on_rows("failed", failed)
        self.observer.on_job("completed")
        self.observer.on_waiting(len(self._waiters))
        log.info("batch %s done: %d rows answered, %d failed", job.batch_id, answered, failed)

    def _requeue(self, job: Job) -> None:
        log.info("batch job %s was never uploaded: its waiting rows go in a new job", job.local_id)
        self._running.pop(job.local_id, None)
        self.store.delete(PREFIX + job.local_id)
        for key in job.keys:
            self._job_of.pop(key, None)
            if key in self._waiters:
                self._add(key, self._bodies[key])

    async def _content(self, file_id: str) -> bytes:
        return await self._call(lambda: self.api.content(file_id))

    async def _durable(self) -> None:
        """The job's record stored before anything is paid for: a kill from here on finds it (an
        immediate write sits in the producer's queue for a while, longer on its first use)."""
        while not await asyncio.to_thread(self.store.flush):
            log.warning("the batch job store did not confirm its write: waiting before submitting")
            await self.sleep(self.settings.poll_every_s)

    def _save(self, job: Job) -> None:
        self.store.put(PREFIX + job.local_id, job.encode())

    # -- calls -----------------------------------------------------------------------------------
    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """A Batch API call, retried on passing failures (it never costs a row anything)."""
        for attempt in range(1, CALL_ATTEMPTS + 1):
            try:
                return await call()
            except Rejected as exc:
                raise JobFailed(f"the endpoint refused a batch call: {exc}") from exc
            except Retryable as exc:
                if attempt == CALL_ATTEMPTS:
                    raise JobFailed(f"a batch call failed {attempt} times: {exc}") from exc
                await self.sleep(self._backoff(attempt, exc))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, exc: Retryable) -> float:
        if exc.retry_after is not None:
            return exc.retry_after
        return random.uniform(0, min(self.settings.poll_every_s, 0.5 * 2**attempt))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
