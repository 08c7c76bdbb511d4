"""The SQL worker pool: wall-clock kills, respawns, poison queries, cancellation, and no worker
outliving the pool or the process that owns it. Real worker processes, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services.sql_eval import PoisonQuery, SqlEvalStep
from services.sql_eval.pool import Answer, PoolClosed, WorkerPool, WorkerStartError, check_worker
from services.sql_eval.worker import Limits
from tests.services.shop_db import copy_shop_db

REPO = Path(__file__).resolve().parents[2]
#: Runs for minutes unless stopped: no budget is near (the tests kill its worker from outside).
LONG = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
#: One function call for seconds: only the wall clock stops it.
STALL = "SELECT length(printf('%.*c', 1000000000, 'x'))"
PATIENT = Limits(max_vm_steps=10**12, time_budget_ms=600_000)
T = TypeVar("T")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(copy_shop_db(tmp_path))


def _run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _wait_gone(pids: list[int], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


async def _busy_pid(pool: WorkerPool, not_pid: int | None = None, queries: int = 0) -> int:
    """The pid of the worker running a query (another than `not_pid`, and once the pool has sent at
    least `queries` queries), as soon as there is one."""
    for _ in range(1200):
        busy = [pid for pid in pool.busy_pids() if pid != not_pid]
        if busy and pool.queries >= queries:
            return busy[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no worker became busy")


def test_answers_and_signature(db: str) -> None:
    async def body() -> tuple[Answer, Answer]:
        pool = WorkerPool(Limits(), 2, 10_000)
        try:
            return await pool.run(db, "SELECT COUNT(*) FROM customers"), await pool.run(db, "SELECT nope")
        finally:
            pool.close()

    good, bad = _run(body)
    assert good.error is None and good.signature is not None and len(good.signature) == 64
    assert bad == Answer(None, "no such column: nope")


def test_no_more_workers_than_the_pool_size(db: str) -> None:
    async def body() -> tuple[list[Answer], int]:
        pool = WorkerPool(Limits(), 2, 10_000)
        seen: set[int] = set()

        async def one(i: int) -> Answer:
            answer = await pool.run(db, f"SELECT {i}")
            seen.update(pool.pids())
            return answer

        try:
            answers = await asyncio.gather(*(one(i) for i in range(20)))
            return answers, len(seen)
        finally:
            pool.close()

    answers, workers = _run(body)
    assert all(a.error is None for a in answers) and len({a.signature for a in answers}) == 20
    assert workers == 2


def test_wall_clock_kill_then_a_fresh_worker(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(Limits(time_budget_ms=500), 1, 1000)
        try:
            await pool.run(db, "SELECT 1")
            (first,) = pool.pids()
            started = time.monotonic()
            assert await pool.run(db, STALL) == Answer(None, "timeout: no answer in 1000 ms")
            assert time.monotonic() - started < 1.0 + 2.0  # the query alone would run for seconds more
            assert _gone(first) and pool.replaced == {"timeout": 1}
            assert (await pool.run(db, "SELECT 1")).error is None
            (second,) = pool.pids()
            assert second != first
        finally:
            pool.close()

    _run(body)


def test_a_worker_killed_once_is_replaced_and_the_query_retried(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(PATIENT, 1, 600_000)
        try:
            query = asyncio.ensure_future(pool.run(db, LONG))
            victim = await _busy_pid(pool)
            os.kill(victim, signal.SIGKILL)
            # The retry runs on a fresh worker; stop it the clean way (cancel) once it is busy.
            retried_on = await _busy_pid(pool, not_pid=victim)
            assert retried_on != victim and pool.replaced == {"died": 1}
            query.cancel()
            with pytest.raises(asyncio.CancelledError):
                await query
            assert pool.replaced == {"died": 1, "abandoned": 1} and _gone(retried_on)
            assert (await pool.run(db, "SELECT 1")).error is None
        finally:
            pool.close()

    _run(body)


def test_a_retry_that_succeeds_is_an_ordinary_answer(db: str) -> None:
    finite = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000)"
    finite += " SELECT max(x) FROM c"

    async def body() -> Answer:
        pool = WorkerPool(PATIENT, 1, 600_000)
        try:
            query = asyncio.ensure_future(pool.run(db, finite))
            os.kill(await _busy_pid(pool), signal.SIGKILL)
            answer = await query
            assert pool.replaced == {"died": 1} and pool.queries == 2
            return answer
        finally:
            pool.close()

    assert _run(body).error is None


def test_two_deaths_make_a_poison(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(PATIENT, 1, 600_000)
        try:
            query = asyncio.ensure_future(pool.run(db, LONG))
            first = await _busy_pid(pool)
            os.kill(first, signal.SIGKILL)
            os.kill(await _busy_pid(pool, not_pid=first), signal.SIGSEGV)
            with pytest.raises(
                PoisonQuery, match=r"killed the SQL worker twice \(killed by SIGKILL; killed by SIGSEGV\)"
            ):
                await query
            assert pool.replaced == {"died": 2} and pool.pids() == []
            # The pool goes on with the next query.
            assert (await pool.run(db, "SELECT 1")).error is None
        finally:
            pool.close()

    _run(body)


def test_a_worker_dead_while_idle_blames_no_query(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(Limits(), 1, 10_000)
        try:
            await pool.run(db, "SELECT 1")
            (idle,) = pool.pids()
            os.kill(idle, signal.SIGKILL)
            assert _wait_gone([idle])
            assert (await pool.run(db, "SELECT 2")).error is None
            assert pool.replaced == {"died": 1} and pool.queries == 2
        finally:
            pool.close()

    _run(body)


def test_step_raises_poison_as_a_row_error_and_goes_on(db: str) -> None:
    step = SqlEvalStep(db_path=db, max_vm_steps=10**12, time_budget_ms=600_000, workers=1)

    async def body() -> None:
        row = asyncio.ensure_future(
            step.process_row_async({"source_index": 0, "sql": LONG, "gold_sql": "SELECT 1"})
        )
        pool = step.pool()
        first = await _busy_pid(pool)
        os.kill(first, signal.SIGKILL)
        os.kill(await _busy_pid(pool, not_pid=first), signal.SIGKILL)
        with pytest.raises(
            PoisonQuery, match=r"^sql_eval: the SQL in 'sql': the query killed the SQL worker twice"
        ):
            await row
        out = await step.process_row_async({"source_index": 1, "sql": "SELECT 1", "gold_sql": "SELECT 1"})
        assert out is not None and out["gold_match"] is True

    try:
        _run(body)
    finally:
        step.close()


def test_poison_gold_is_cached_and_every_row_with_it_is_a_row_error(db: str) -> None:
    step = SqlEvalStep(db_path=db, max_vm_steps=10**12, time_budget_ms=600_000, workers=1)

    async def body() -> None:
        row = asyncio.ensure_future(
            step.process_row_async({"source_index": 0, "sql": "SELECT 1", "gold_sql": LONG})
        )
        pool = step.pool()
        first = await _busy_pid(pool, queries=2)  # the gold, not the row's own SELECT 1
        os.kill(first, signal.SIGKILL)
        os.kill(await _busy_pid(pool, not_pid=first), signal.SIGKILL)
        with pytest.raises(PoisonQuery, match=r"^sql_eval: the SQL in 'gold_sql': the query killed"):
            await row
        queries = pool.queries
        with pytest.raises(PoisonQuery, match="gold_sql"):
            await step.process_row_async({"source_index": 1, "sql": "SELECT 2", "gold_sql": LONG})
        assert pool.queries == queries + 1  # the row's own SQL; the gold was not run again

    try:
        _run(body)
    finally:
        step.close()


def test_close_kills_and_reaps_every_worker(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(PATIENT, 3, 600_000)
        await asyncio.gather(*(pool.run(db, f"SELECT {i}") for i in range(3)))
        waiting = [asyncio.ensure_future(pool.run(db, LONG)) for _ in range(2)]
        while len(pool.busy_pids()) < 2:
            await asyncio.sleep(0.05)
        pids = pool.pids()
        assert len(pids) == 3
        pool.close()
        assert pool.pids() == [] and all(_gone(pid) for pid in pids)
        for query in waiting:
            with pytest.raises(PoolClosed):
                await query
        with pytest.raises(PoolClosed):
            await pool.run(db, "SELECT 1")

    _run(body)


def test_step_close_leaves_no_process(db: str) -> None:
    step = SqlEvalStep(db_path=db, workers=2)

    async def body() -> list[int]:
        await asyncio.gather(
            *(step.process_row_async({"source_index": i, "sql": f"SELECT {i}"}) for i in range(4))
        )
        return step.pool().pids()

    pids = _run(body)
    assert len(pids) == 2
    step.close()
    assert all(_gone(pid) for pid in pids)


def test_a_worker_exits_when_its_input_ends(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(Limits(), 1, 10_000)
        try:
            await pool.run(db, "SELECT 1")
            (worker,) = pool._workers
            assert worker.proc.stdin is not None
            worker.proc.stdin.close()
            assert worker.proc.wait(timeout=10) == 0
        finally:
            pool.close()

    _run(body)


SERVICE = """
import asyncio, sys
from services.sql_eval import SqlEvalStep
step = SqlEvalStep(db_path=sys.argv[1], max_vm_steps=10**12, time_budget_ms=600_000, workers=2)
async def main():
    await asyncio.gather(*(step.process_row_async({"sql": f"SELECT {i}"}) for i in range(4)))
    busy = asyncio.ensure_future(step.process_row_async({"sql": sys.argv[2]}))
    while not step.pool().busy_pids():
        await asyncio.sleep(0.05)
    print(" ".join(map(str, step.pool().pids())), flush=True)
    await busy
asyncio.run(main())
"""


def test_workers_die_with_their_service(db: str) -> None:
    # The service is SIGKILLed (no close(), no atexit) while one worker is deep in a query and
    # would not read its input for minutes: the kernel's parent-death signal ends both workers.
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, db, LONG], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    pids: list[int] = []
    try:
        assert service.stdout is not None
        pids = [int(p) for p in service.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(pid) for pid in pids)
    finally:
        service.kill()
        service.wait()
    try:
        assert _wait_gone(pids), [pid for pid in pids if not _gone(pid)]
    finally:
        for pid in pids:  # only if the test failed: leave nothing running
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_limits_too_small_fail_at_start_not_per_row(db: str, tmp_path: Path) -> None:
    # The step's open() runs this once: a worker whose SQLite heap cannot even hold the schema
    # (2,000 tables of 50 columns: several MB parsed) stops the service at start.
    wide = tmp_path / "wide.sqlite"
    conn = sqlite3.connect(wide)
    columns = ", ".join(f"column_{i} TEXT" for i in range(50))
    conn.executescript("".join(f"CREATE TABLE t{i} ({columns});" for i in range(2000)))
    conn.close()
    with pytest.raises(WorkerStartError, match="limits leave no room to read"):
        check_worker(Limits(heap_limit_mb=1), str(wide))
    answer = check_worker(Limits(heap_limit_mb=64), str(wide))
    assert answer is not None and answer.error is None
    answer = check_worker(Limits(), db)
    assert answer is not None and answer.error is None and answer.signature is not None
    assert check_worker(Limits(), None) is None


def test_a_worker_that_cannot_start_is_no_poison(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker that exits before it is ready (an interpreter that cannot start, say): each query
    # says so, none is blamed as a poison, no process is left behind.
    broken = tmp_path / "worker.py"
    broken.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr("services.sql_eval.pool.WORKER_SCRIPT", broken)
    with pytest.raises(WorkerStartError, match=r"did not start \(exit code 3\)"):
        check_worker(Limits(), db)

    async def body() -> None:
        pool = WorkerPool(Limits(), 1, 10_000)
        try:
            for _ in range(3):
                with pytest.raises(WorkerStartError, match=r"did not start \(exit code 3\)"):
                    await pool.run(db, "SELECT 1")
            assert pool.pids() == [] and pool.queries == 0
        finally:
            pool.close()

    _run(body)


def test_a_pool_belongs_to_one_event_loop(db: str) -> None:
    step = SqlEvalStep(db_path=db)
    assert step.process_row({"source_index": 0, "sql": "SELECT 1"}) is not None
    first = step._pool
    assert first is not None
    old = first.pids()

    async def body() -> None:
        await step.process_row_async({"source_index": 0, "sql": "SELECT 1"})

    _run(body)
    assert step._pool is not first and all(_gone(pid) for pid in old)
    step.close()


def test_queries_queued_behind_a_timeout_are_answered_not_blamed(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(Limits(time_budget_ms=500), 1, 1000)
        try:
            await pool.run(db, "SELECT 0")
            stalled = asyncio.ensure_future(pool.run(db, STALL))
            queued = [asyncio.ensure_future(pool.run(db, f"SELECT {i}")) for i in range(1, 6)]
            assert await stalled == Answer(None, "timeout: no answer in 1000 ms")
            answers = await asyncio.gather(*queued)
            assert [a.error for a in answers] == [None] * 5 and len({a.signature for a in answers}) == 5
            assert pool.replaced == {"timeout": 1}
        finally:
            pool.close()

    _run(body)


def test_queries_queued_behind_a_poison_are_answered(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(PATIENT, 1, 600_000)
        try:
            await pool.run(db, "SELECT 0")
            poison = asyncio.ensure_future(pool.run(db, LONG))
            queued = [asyncio.ensure_future(pool.run(db, f"SELECT {i}")) for i in range(1, 6)]
            first = await _busy_pid(pool)
            os.kill(first, signal.SIGKILL)
            # The query that ran goes first on the fresh worker, ahead of the ones behind it.
            os.kill(await _busy_pid(pool, not_pid=first), signal.SIGKILL)
            with pytest.raises(PoisonQuery):
                await poison
            answers = await asyncio.gather(*queued)
            assert [a.error for a in answers] == [None] * 5
            assert pool.replaced == {"died": 2}
        finally:
            pool.close()

    _run(body)


def test_queries_queued_behind_a_memory_verdict_are_answered(db: str) -> None:
    hog = (
        "WITH RECURSIVE c(x, b) AS (SELECT 1, '1' || zeroblob(900000)"
        " UNION ALL SELECT x + 1, (x + 1) || zeroblob(900000) FROM c WHERE x < 2000)"
        " SELECT x FROM c ORDER BY b"
    )

    async def body() -> None:
        pool = WorkerPool(Limits(memory_limit_mb=256, heap_limit_mb=64), 1, 10_000)
        try:
            await pool.run(db, "SELECT 0")
            hogging = asyncio.ensure_future(pool.run(db, hog))
            queued = [asyncio.ensure_future(pool.run(db, f"SELECT {i}")) for i in range(1, 6)]
            assert (await hogging).error == "memory: over 64 MiB (SQLite heap) or 256 MiB (worker)"
            answers = await asyncio.gather(*queued)
            assert [a.error for a in answers] == [None] * 5
            assert pool.replaced == {"memory": 1} and 64 * 1024 < pool.peak_rss_kb < 256 * 1024
        finally:
            pool.close()

    _run(body)


def test_a_cancelled_query_that_waits_is_skipped(db: str) -> None:
    async def body() -> None:
        pool = WorkerPool(Limits(time_budget_ms=500), 1, 1500)
        try:
            await pool.run(db, "SELECT 0")
            stalled = asyncio.ensure_future(pool.run(db, STALL))
            waiting = asyncio.ensure_future(pool.run(db, "SELECT 1"))
            after = asyncio.ensure_future(pool.run(db, "SELECT 2"))
            await asyncio.sleep(0.2)
            waiting.cancel()
            assert (await stalled).error == "timeout: no answer in 1500 ms"
            assert (await after).error is None
            assert waiting.cancelled() and pool.replaced == {"timeout": 1}
        finally:
            pool.close()

    _run(body)
