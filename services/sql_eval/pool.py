"""A pool of long-lived SQL worker processes (`worker.py`), driven from the event loop.

The pool talks to each worker over non-blocking pipes watched by the event loop, so the loop never
blocks on SQL. Up to `DEPTH` queries are queued per worker (a worker runs them one at a time, in
order): on a busy machine a worker answers several per time slice and the loop reads several
answers per wake-up, instead of paying two scheduler round trips per query.

What the parent enforces:
- wall clock: the query at the head of a worker's queue must be answered `wall_limit_ms` after it
  started (a single long function call never reaches the worker's own budgets); past that, one
  pool-wide sweep timer kills the worker with SIGKILL; that query's verdict is `timeout`, the
  queries queued behind it go to another worker, blamed for nothing;
- crashes: a worker that dies (a signal, the kernel's OOM killer, an exit) while a query runs is
  replaced and that query tried once more; a second death makes it a poison (`PoisonQuery`), which
  the step raises as a row error, so the runtime dead-letters the row and moves on. A worker that
  dies idle blames nobody;
- a query abandoned while it runs (its row cancelled) kills its worker rather than tie it up;
- `close()` kills and reaps every worker; workers also die with their parent (see worker.py).

A pool belongs to the event loop it was created on (its pipes are registered there).

Why not `multiprocessing`: a fresh interpreter per worker (no fork of a process holding librdkafka
threads), nothing unpickled from the sandbox (only a signature or an error comes back), and a kill
never corrupts a shared queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.sql_eval import metrics
from services.sql_eval.worker import MAX_FRAME_BYTES, Limits, decode_frame, encode_frame, peak_rss_kb

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
#: How long a fresh worker may take to say it is ready (an interpreter start; seconds when loaded).
START_TIMEOUT_S = 30.0
#: Queries queued per worker. More amortises wake-ups further but holds more rows behind a slow one.
DEPTH = 8
#: How often running queries are checked against their deadlines: one timer for the pool (a
#: per-query asyncio.timeout cost more CPU than the rest of the round trip).
SWEEP_S = 0.05
_HEADER_BYTES = 4
_READ_BYTES = 262_144


@dataclass(frozen=True)
class Answer:
    """A query's verdict: the signature of its normalised rows, or a short error."""

    signature: str | None
    error: str | None


class PoisonQuery(RuntimeError):
    """A query that killed a worker twice: a row error (dead letter), never a verdict."""


class PoolClosed(RuntimeError):
    """The pool was closed while a query waited for an answer."""


class WorkerStartError(RuntimeError):
    """A fresh worker did not come up: a configuration problem (limits too small), not the row's."""


def worker_command(limits: Limits) -> list[str]:
    # -E -s -S: no PYTHON* variables, no user or site packages: only the standard library.
    return [sys.executable, "-E", "-s", "-S", str(WORKER_SCRIPT), limits.to_json(), str(os.getpid())]


def _spawn(limits: Limits) -> subprocess.Popen[bytes]:
    # An empty environment (no secrets in the sandbox); cwd `/`, where an unprivileged process
    # cannot create anything.
    return subprocess.Popen(
        worker_command(limits), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={}, cwd="/", close_fds=True
    )


def _exit_cause(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _frames(buffer: bytearray) -> list[dict[str, Any]]:
    """The complete frames at the start of `buffer`, removed from it."""
    frames = []
    start = 0
    while len(buffer) - start >= _HEADER_BYTES:
        size = int.from_bytes(buffer[start : start + _HEADER_BYTES], "big")
        if size > MAX_FRAME_BYTES:
            raise ValueError(f"protocol error (frame of {size} bytes)")
        end = start + _HEADER_BYTES + size
        if len(buffer) < end:
            break
        frames.append(decode_frame(bytes(buffer[start + _HEADER_BYTES : end])))
        start = end
    del buffer[:start]
    return frames


def check_worker(limits: Limits, db: str | None, timeout_s: float = START_TIMEOUT_S) -> Answer | None:
    """Start one worker, blocking, and ask it `SELECT count(*) FROM sqlite_master` on `db` (if given):
    proves at service start that the limits leave room for the interpreter and the file is SQLite."""
    request = b"" if db is None else encode_frame({"db": db, "sql": "SELECT count(*) FROM sqlite_master"})
    try:
        done = subprocess.run(
            worker_command(limits), input=request, capture_output=True, env={}, cwd="/", timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise WorkerStartError(f"sql_eval: a SQL worker did not answer within {timeout_s:.0f} s") from None
    frames = _frames(bytearray(done.stdout))
    if not frames or not frames[0].get("ready") or done.returncode != 0:
        raise WorkerStartError(f"sql_eval: a SQL worker did not start ({_exit_cause(done.returncode)})")
    if db is None:
        return None
    answer = Answer(frames[1].get("signature"), frames[1].get("error"))
    if (answer.error or "").startswith("memory:"):
        room = f"the SQL worker's limits leave no room to read {db}"
        raise WorkerStartError(f"sql_eval: {room} ({answer.error})")
    return answer


@dataclass(eq=False)
class _Job:
    request: bytes
    future: asyncio.Future[Answer]
    #: Why the workers that ran this query died (two make it a poison).
    deaths: list[str] = field(default_factory=list)


class WorkerProcess:
    """One worker: its process, its pipes (non-blocking, watched by the loop), the queries sent
    to it in order, and the deadline of the one running."""

    def __init__(self, pool: WorkerPool, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.pool = pool
        self.proc = proc
        self._loop = pool.loop
        self._out = proc.stdin.fileno()
        self._in = proc.stdout.fileno()
        os.set_blocking(self._out, False)
        os.set_blocking(self._in, False)
        self._read = bytearray()
        self._write = bytearray()
        #: Sent and not answered yet; the first is running.
        self.queue: deque[_Job] = deque()
        self.ready = False
        #: Resolved once the worker said it is ready, or ended before it did.
        self.started: asyncio.Future[None] = self._loop.create_future()
        self.start_failure = ""
        self.killed = False
        #: Loop time by which the running query must be answered; None while idle.
        self.deadline: float | None = None
        self._loop.add_reader(self._in, self._on_readable)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, job: _Job) -> None:
        if not self.queue:
            self.deadline = self._loop.time() + self.pool.wall_s
        self.queue.append(job)
        if not self._write:
            # Flushed once the loop is done with this iteration's rows: one write (one wake-up of
            # the worker) for all of them.
            self._loop.call_soon(self._flush)
        self._write += job.request

    def _flush(self) -> None:
        if self.killed or not self._write:
            return
        try:
            written = os.write(self._out, self._write)
        except BlockingIOError:
            written = 0
        except OSError:
            # The worker is gone; the end of its output says so and settles its queue.
            self._write.clear()
            self._loop.remove_writer(self._out)
            return
        del self._write[:written]
        if self._write:
            self._loop.add_writer(self._out, self._flush)
        else:
            self._loop.remove_writer(self._out)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._in, _READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self._in)
            self.pool._on_exit(self)
            return
        self._read += chunk
        try:
            frames = _frames(self._read)
        except ValueError as exc:
            self.pool._on_death(self, str(exc))
            return
        for frame in frames:
            if self.killed:
                return
            self.pool._on_frame(self, frame)

    def answered(self) -> _Job:
        job = self.queue.popleft()
        self.deadline = self._loop.time() + self.pool.wall_s if self.queue else None
        return job

    def cause(self) -> str:
        """Why the process ended (it just closed its output, so it is exiting)."""
        try:
            code = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.kill()
            return "closed its output"
        return _exit_cause(code)

    def peak_rss_kb(self) -> int | None:
        """Read from /proc while the process exists (a killed worker cannot report it itself)."""
        return peak_rss_kb(self.pid)

    def kill(self) -> None:
        """SIGKILL, reap, close the pipes. Idempotent; its queue is the pool's to settle."""
        if self.killed:
            return
        self.killed = True
        self._loop.remove_reader(self._in)
        self._loop.remove_writer(self._out)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if not self.started.done():
            self.started.set_result(None)


class WorkerPool:
    """Up to `size` worker processes; `run` queues one query on the least loaded one."""

    def __init__(self, limits: Limits, size: int, wall_limit_ms: int) -> None:
        self.limits = limits
        self.size = size
        self.wall_limit_ms = wall_limit_ms
        self.wall_s = wall_limit_ms / 1000
        self.loop = asyncio.get_running_loop()
        self._workers: list[WorkerProcess] = []
        self._starting = 0
        #: Queries waiting for room in a worker's queue, oldest first.
        self._backlog: deque[_Job] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Highest peak RSS any worker reported, or showed in /proc before it was killed.
        self.peak_rss_kb = 0
        #: Workers replaced, by cause: timeout, memory, died, abandoned.
        self.replaced: dict[str, int] = {}
        #: Queries sent to a worker (a query sent again after a worker's death counts again).
        self.queries = 0

    async def run(self, db: str, sql: str) -> Answer:
        if self._closed:
            raise PoolClosed("sql_eval: the SQL worker pool was closed")
        job = _Job(encode_frame({"db": db, "sql": sql}), self.loop.create_future())
        self._backlog.append(job)
        self._dispatch()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job)
            raise

    # -- dispatch ----------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        backlog = self._backlog
        while backlog:
            job = backlog[0]
            if job.future.done():  # cancelled while it waited
                backlog.popleft()
                continue
            worker = self._least_loaded()
            if worker is None:
                return
            if not worker.queue and worker.proc.poll() is not None:
                # Died while idle (killed from outside, the OOM killer) and not noticed yet.
                self._on_exit(worker)
                continue
            backlog.popleft()
            self.queries += 1
            worker.send(job)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def _least_loaded(self) -> WorkerProcess | None:
        """An idle worker; else, once no worker is starting, the one with the shortest queue."""
        best = None
        starting = self._starting > 0
        for worker in self._workers:
            if not worker.ready:
                starting = True
            elif worker.killed or len(worker.queue) >= DEPTH:
                continue
            elif not worker.queue:
                return worker
            elif best is None or len(worker.queue) < len(best.queue):
                best = worker
        # A fresh worker serves sooner than a queue behind a running query: start one while the
        # pool has room, and wait for any that is starting.
        if self._may_start():
            self._start()
            starting = True
        return None if starting else best

    def _may_start(self) -> bool:
        return not self._closed and len(self._workers) + self._starting < self.size

    def _start(self) -> None:
        self._starting += 1
        self._tasks.add(task := self.loop.create_task(self._start_worker()))
        task.add_done_callback(self._tasks.discard)

    async def _start_worker(self) -> None:
        try:
            worker = WorkerProcess(self, _spawn(self.limits))
        except OSError as exc:
            self._starting -= 1
            self._start_failed(str(exc))
            return
        self._workers.append(worker)
        self._starting -= 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT_S):
                await worker.started
        if worker.ready:
            self._dispatch()
            return
        cause = worker.start_failure or f"not ready within {START_TIMEOUT_S:.0f} s"
        self._drop(worker)
        self._start_failed(cause)

    def _start_failed(self, cause: str) -> None:
        if self._closed or any(w.ready for w in self._workers):
            return
        # Nothing can serve the queries waiting: they fail now rather than wait for ever.
        error = WorkerStartError(f"sql_eval: a SQL worker did not start ({cause})")
        while self._backlog:
            job = self._backlog.popleft()
            if not job.future.done():
                job.future.set_exception(error)

    # -- what workers say ----------------------------------------------------------------------------
    def _on_frame(self, worker: WorkerProcess, frame: dict[str, Any]) -> None:
        if not worker.ready:
            if frame.get("ready"):
                worker.ready = True
                worker.started.set_result(None)
            else:
                worker.start_failure = "protocol error"
                worker.kill()
            return
        if "crash" in frame:
            self._on_death(worker, f"worker error {frame['crash']}")
            return
        if not worker.queue:
            self._on_death(worker, "protocol error (an answer to no query)")
            return
        job = worker.answered()
        self._note_rss(frame.get("rss_kb"))
        if not job.future.done():
            job.future.set_result(Answer(frame.get("signature"), frame.get("error")))
        if frame.get("recycle"):
            # It exits now; what was queued behind goes elsewhere.
            self._replace(worker, "memory", blame=None)
        else:
            self._dispatch()

    def _on_exit(self, worker: WorkerProcess) -> None:
        if worker.killed:
            return
        cause = worker.cause()
        if not worker.ready:
            worker.start_failure = cause
            worker.kill()  # resolves `started`: the start reports it
            return
        self._on_death(worker, cause)

    def _on_death(self, worker: WorkerProcess, cause: str) -> None:
        running = worker.queue[0] if worker.queue else None
        if running is not None:
            log.warning("sql_eval: SQL worker %d %s while running a query", worker.pid, cause)
        self._replace(worker, "died", blame=(running, cause) if running is not None else None)

    def _replace(self, worker: WorkerProcess, cause: str, blame: tuple[_Job, str] | None) -> None:
        """Kill `worker`; the query it ran gets `blame` (a death), the others go back in line."""
        self._drop(worker)
        self.replaced[cause] = self.replaced.get(cause, 0) + 1
        metrics.WORKERS_REPLACED.labels(cause=cause).inc()
        again = [job for job in worker.queue if not job.future.done()]
        worker.queue.clear()
        if blame is not None:
            job, why = blame
            job.deaths.append(why)
            if len(job.deaths) == 2 and job in again:
                again.remove(job)
                causes = "; ".join(job.deaths)
                job.future.set_exception(PoisonQuery(f"the query killed the SQL worker twice ({causes})"))
        # In front, in their order: they were first in line.
        self._backlog.extendleft(reversed(again))
        self._dispatch()

    def _drop(self, worker: WorkerProcess) -> None:
        worker.kill()
        if worker in self._workers:
            self._workers.remove(worker)

    def _abandon(self, job: _Job) -> None:
        # Its row was cancelled. Waiting: skipped when its turn comes. Running: the worker would be
        # tied up to the wall limit for nothing, so it is replaced.
        for worker in self._workers:
            if worker.queue and worker.queue[0] is job:
                worker.queue.popleft()
                self._replace(worker, "abandoned", blame=None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for worker in list(self._workers):
            if worker.deadline is not None and now > worker.deadline and worker.queue:
                self._note_rss(worker.peak_rss_kb())
                job = worker.queue.popleft()
                if not job.future.done():
                    job.future.set_result(Answer(None, f"timeout: no answer in {self.wall_limit_ms} ms"))
                self._replace(worker, "timeout", blame=None)
        if not self._closed and any(w.queue for w in self._workers):
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def _note_rss(self, rss_kb: int | None) -> None:
        if rss_kb is not None and rss_kb > self.peak_rss_kb:
            self.peak_rss_kb = rss_kb
            metrics.WORKER_PEAK_RSS.set(rss_kb * 1024)

    # -- lifecycle -----------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        return sorted(w.pid for w in self._workers)

    def busy_pids(self) -> list[int]:
        """Workers running a query right now."""
        return sorted(w.pid for w in self._workers if w.queue)

    def close(self) -> None:
        """Kill and reap every worker; queries still waiting raise PoolClosed."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in self._tasks:
            task.cancel()  # workers still starting
        waiting = [job for w in self._workers for job in w.queue] + list(self._backlog)
        for worker in list(self._workers):
            self._drop(worker)
        self._backlog.clear()
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(PoolClosed("sql_eval: the SQL worker pool was closed"))
