"""A pool of long-lived SQL worker processes (`worker.py`), driven from the event loop.

Each worker runs one query at a time; the pool talks to it over non-blocking pipes watched by the
event loop, so a query costs the loop one write, one wake-up and one read, and the loop never
blocks on SQL. What the parent enforces:
- wall clock: a worker without an answer after `wall_limit_ms` (a single long function call that
  the worker's own budgets cannot interrupt) is killed with SIGKILL and replaced; the query's
  verdict is `timeout`;
- crashes: a worker that dies while running a query (a signal, the kernel's OOM killer, an exit)
  is replaced and the query tried once more on a fresh one; a second death makes it a poison
  (`PoisonQuery`), which the step raises as a row error so the runtime dead-letters the row and
  moves on. A worker found dead while idle is replaced without blaming the next query;
- a query abandoned (its row cancelled) kills its worker: the late answer would desync the pipe;
- `close()` kills every worker and reaps it; workers also die with their parent (see worker.py).

A pool belongs to the event loop it was created on (its pipes are registered there).

Why not `multiprocessing`: a fresh interpreter per worker (no fork of a process holding librdkafka
threads), nothing unpickled from the sandbox (only a signature or an error comes back), and a kill
on timeout never corrupts a shared queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.sql_eval import metrics
from services.sql_eval.worker import MAX_FRAME_BYTES, Limits, decode_frame, encode_frame

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
#: How long a fresh worker may take to say it is ready (an interpreter start; seconds when loaded).
START_TIMEOUT_S = 30.0
_HEADER_BYTES = 4
_READ_BYTES = 65_536
#: How often busy workers are checked against their deadlines (one timer for the pool, not one
#: per query: a per-query asyncio.timeout cost more CPU than the rest of the round trip).
SWEEP_S = 0.05


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


class _Expired(Exception):
    pass


class _Died(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def worker_command(limits: Limits) -> list[str]:
    # -E -s -S: no PYTHON* variables, no user or site packages: only the standard library.
    return [sys.executable, "-E", "-s", "-S", str(WORKER_SCRIPT), limits.to_json(), str(os.getpid())]


def _spawn(limits: Limits) -> subprocess.Popen[bytes]:
    # An empty environment (no secrets in the sandbox); cwd `/`, where an unprivileged process
    # cannot create anything.
    return subprocess.Popen(
        worker_command(limits), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={}, cwd="/", close_fds=True
    )


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
    frames: list[dict[str, Any]] = []
    out = done.stdout
    while len(out) >= _HEADER_BYTES:
        size = int.from_bytes(out[:_HEADER_BYTES], "big")
        frames.append(decode_frame(out[_HEADER_BYTES : _HEADER_BYTES + size]))
        out = out[_HEADER_BYTES + size :]
    if not frames or not frames[0].get("ready") or done.returncode != 0:
        raise WorkerStartError(f"sql_eval: a SQL worker did not start ({_exit_cause(done.returncode)})")
    if db is None:
        return None
    answer = Answer(frames[1].get("signature"), frames[1].get("error"))
    if (answer.error or "").startswith("memory:"):
        raise WorkerStartError(
            f"sql_eval: the SQL worker's limits leave no room to read {db} ({answer.error})"
        )
    return answer


def _exit_cause(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class WorkerProcess:
    """One worker: its process, its pipes (non-blocking, read by the event loop) and read buffer."""

    def __init__(self, proc: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._loop = loop
        self._out = proc.stdin.fileno()
        self._in = proc.stdout.fileno()
        os.set_blocking(self._out, False)
        os.set_blocking(self._in, False)
        self._buffer = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._killed = False
        self._expired = False
        #: Loop time by which the query running must be answered; None while idle.
        self.deadline: float | None = None
        loop.add_reader(self._in, self._on_readable)

    @classmethod
    async def start(cls, limits: Limits) -> WorkerProcess:
        worker = cls(_spawn(limits), asyncio.get_running_loop())
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                ready = await worker._receive()
        except TimeoutError:
            ready = None
        except _Died as died:
            worker.kill()
            raise WorkerStartError(f"sql_eval: a SQL worker did not start ({died.cause})") from None
        if ready is None or not ready.get("ready"):
            worker.kill()
            raise WorkerStartError(f"sql_eval: a SQL worker did not start within {START_TIMEOUT_S:.0f} s")
        return worker

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self._eof and self.proc.poll() is None

    async def ask(self, request: bytes, deadline: float) -> dict[str, Any] | None:
        """Send `request` and return the answer; None when the pool's sweep found `deadline`
        (loop time) passed first. Raises _Died when the worker ends first."""
        self.deadline = deadline
        self._expired = False
        try:
            await self._send(request)
            return await self._receive()
        except _Expired:
            return None
        finally:
            self.deadline = None

    def expire(self) -> None:
        """Past its deadline: the query waiting for an answer gives up (the pool kills the worker)."""
        self._expired = True
        if self._waiter is not None:
            _resolve(self._waiter)

    async def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._out, view) :]
            except BlockingIOError:
                # Only for a frame larger than the pipe: wait until the worker has read some.
                writable = self._loop.create_future()
                self._loop.add_writer(self._out, _resolve, writable)
                try:
                    await writable
                finally:
                    self._loop.remove_writer(self._out)
            except (BrokenPipeError, ConnectionResetError):
                raise _Died(await self._cause()) from None

    async def _receive(self) -> dict[str, Any]:
        while (frame := self._frame()) is None:
            if self._expired:
                raise _Expired
            if self._eof:
                raise _Died(await self._cause())
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if "crash" in frame:
            raise _Died(f"worker error {frame['crash']}")
        return frame

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._in, _READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self._buffer += chunk
        else:
            self._eof = True
            self._loop.remove_reader(self._in)
        if self._waiter is not None:
            _resolve(self._waiter)

    def _frame(self) -> dict[str, Any] | None:
        if len(self._buffer) < _HEADER_BYTES:
            return None
        size = int.from_bytes(self._buffer[:_HEADER_BYTES], "big")
        if size > MAX_FRAME_BYTES:
            raise _Died(f"protocol error (frame of {size} bytes)")
        if len(self._buffer) < _HEADER_BYTES + size:
            return None
        body = bytes(self._buffer[_HEADER_BYTES : _HEADER_BYTES + size])
        del self._buffer[: _HEADER_BYTES + size]
        return decode_frame(body)

    async def _cause(self) -> str:
        if self._killed:
            return "killed by the pool"
        # The pipe ends as the process exits; give the exit a moment to be reaped.
        for _ in range(100):
            code = self.proc.poll()
            if code is not None:
                return _exit_cause(code)
            await asyncio.sleep(0.01)
        self.kill()
        return "closed its pipe"

    def peak_rss_kb(self) -> int | None:
        """VmHWM from /proc while the process exists (a killed worker cannot report it itself)."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return None

    def kill(self) -> None:
        """SIGKILL, reap, close the pipes, wake whoever waits for an answer (it gets _Died)."""
        if self._killed:
            return
        self._killed = True
        self._eof = True
        self._loop.remove_reader(self._in)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WorkerPool:
    """Up to `size` worker processes; `run` sends one query to a free one."""

    def __init__(self, limits: Limits, size: int, wall_limit_ms: int) -> None:
        self.limits = limits
        self.size = size
        self.wall_limit_ms = wall_limit_ms
        self.loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(size)
        self._idle: list[WorkerProcess] = []
        self._workers: set[WorkerProcess] = set()
        self._busy: set[WorkerProcess] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        #: Highest peak RSS any worker reported, or showed in /proc before it was killed.
        self.peak_rss_kb = 0
        #: Workers replaced, by cause: timeout, memory, died, abandoned.
        self.replaced: dict[str, int] = {}
        #: Queries sent to a worker (a retry after a crash counts again).
        self.queries = 0

    async def run(self, db: str, sql: str) -> Answer:
        async with self._slots:
            return await self._run(encode_frame({"db": db, "sql": sql}))

    async def _run(self, request: bytes) -> Answer:
        deaths: list[str] = []
        while True:
            worker = await self._take()
            self._busy.add(worker)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)
            self.queries += 1
            try:
                answer = await worker.ask(request, self.loop.time() + self.wall_limit_ms / 1000)
            except _Died as died:
                self._retire(worker, "died")
                if self._closed:
                    raise PoolClosed("sql_eval: the SQL worker pool was closed") from None
                log.warning("sql_eval: SQL worker %d %s while running a query", worker.pid, died.cause)
                deaths.append(died.cause)
                if len(deaths) == 2:
                    causes = "; ".join(deaths)
                    raise PoisonQuery(f"the query killed the SQL worker twice ({causes})") from None
                continue
            except BaseException:
                # Cancelled mid-query: its answer would arrive as the answer to the next one.
                self._retire(worker, "abandoned")
                raise
            finally:
                self._busy.discard(worker)
            if answer is None:
                self._note_rss(worker.peak_rss_kb())
                self._retire(worker, "timeout")
                return Answer(None, f"timeout: no answer in {self.wall_limit_ms} ms")
            self._note_rss(answer.get("rss_kb"))
            if answer.get("recycle"):
                self._retire(worker, "memory")
            else:
                self._idle.append(worker)
            return Answer(answer.get("signature"), answer.get("error"))

    async def _take(self) -> WorkerProcess:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive():
                return worker
            # Died between queries (killed from outside, the OOM killer): not this query's fault.
            self._retire(worker, "died")
        if self._closed:
            raise PoolClosed("sql_eval: the SQL worker pool was closed")
        worker = await WorkerProcess.start(self.limits)
        if self._closed:
            worker.kill()
            raise PoolClosed("sql_eval: the SQL worker pool was closed")
        self._workers.add(worker)
        return worker

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for worker in self._busy:
            if worker.deadline is not None and now > worker.deadline:
                worker.expire()
        if self._busy and not self._closed:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def _retire(self, worker: WorkerProcess, cause: str) -> None:
        self._workers.discard(worker)
        worker.kill()
        self.replaced[cause] = self.replaced.get(cause, 0) + 1
        metrics.WORKERS_REPLACED.labels(cause=cause).inc()

    def _note_rss(self, rss_kb: int | None) -> None:
        if rss_kb is not None and rss_kb > self.peak_rss_kb:
            self.peak_rss_kb = rss_kb
            metrics.WORKER_PEAK_RSS.set(rss_kb * 1024)

    def pids(self) -> list[int]:
        return sorted(w.pid for w in self._workers)

    def busy_pids(self) -> list[int]:
        """Workers running a query right now."""
        return sorted(w.pid for w in self._busy)

    def close(self) -> None:
        """Kill and reap every worker; a query waiting for one raises PoolClosed."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for worker in list(self._workers):
            worker.kill()
        self._workers.clear()
        self._idle.clear()
