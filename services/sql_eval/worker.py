"""The SQL worker process: runs untrusted SQL (the teacher's and the gold) under limits the OS enforces.

Stdlib only. `pool.py` starts it as a script in a bare interpreter (`python -E -s -S worker.py
LIMITS PARENT_PID`, empty environment, working directory `/`), so nothing of the service (its
secrets, its Kafka sockets, its dependencies) is inside the process that runs the SQL.

Before it opens any database the process limits itself:
- RLIMIT_AS (`memory_limit_mb`): a query that allocates past it fails (MemoryError) or, in the
  worst case, kills only this process; the service's memory is never at stake;
- SQLite's `hard_heap_limit` (`heap_limit_mb`, below RLIMIT_AS): SQLite's own allocations, temp
  tables and sorters included, fail cleanly with "out of memory" first, the verdict `memory`;
- RLIMIT_FSIZE 0 with SIGXFSZ ignored: writing any byte to any regular file is an I/O error, so
  nothing the SQL does can spill to disk (temp store is memory, under the heap limit);
- RLIMIT_CORE 0: a crash leaves no core file either;
- PR_SET_PDEATHSIG (SIGKILL): the kernel kills the worker when the thread that started it ends,
  and end of input on stdin (the parent closed the pipe or died) ends the loop: a worker never
  outlives its service.

Per connection, each defence covering what the others miss:
- the file is opened through a `file:` URI with `mode=ro&immutable=1`: no lock, no journal, no
  `-wal`/`-shm` file beside a WAL-mode database; `query_only`, `trusted_schema = OFF`;
- an authorizer allows only reading (SELECT, column reads, functions, recursive CTEs), which also
  stops ATTACH, `VACUUM INTO`, PRAGMA, transactions and every DDL/DML statement at prepare time,
  and denies the functions that touch the file system or load code;
- a progress handler interrupts a query once its work budget (SQLite VM steps, deterministic) or,
  as a backstop, its time budget is spent; a single long function call never reaches the handler,
  which is what the parent's wall-clock kill is for;
- SQLite's limits cap string/blob sizes (1 MB), result columns (64) and statement length;
- rows are fetched one at a time and stop at `max_rows` rows or `max_result_bytes` of values.

Protocol on stdin/stdout: frames of a 4-byte big-endian length and ASCII JSON. The first frame out
is `{"ready": true}`; then per request `{"db": path, "sql": text}`, in order, one answer
`{"signature": hex | null, "error": text | null, "rss_kb": peak RSS, "recycle": bool}`. The parent
may queue several requests; they run one at a time. Only the signature of the normalised rows
leaves the process, never the rows. After an answer with `recycle` (a memory verdict: its heap is
not worth keeping) the process exits without reading further; `{"crash": text}` reports a bug
before it exits.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sqlite3
import struct
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
#: VM instructions between two looks at the budgets: cheap, and well under a millisecond apart.
PROGRESS_EVERY = 1000
#: Longest string or blob a query may build (SQLite's default is 1 GB).
MAX_VALUE_BYTES = 1_000_000
#: Widest result row: with the value cap, bounds what one fetched row can hold (SQLite allows 2000).
MAX_COLUMNS = 64
MAX_SQL_BYTES = 100_000
SQL_LENGTH_VERDICT = f"sql length: more than {MAX_SQL_BYTES} bytes"
MAX_ERROR_CHARS = 200
#: Open databases kept per worker (per-row databases): the least recently used is closed first.
MAX_OPEN_DATABASES = 8
FLOAT_DIGITS = 6
_HEADER = struct.Struct(">I")
#: Largest frame either side accepts: one statement (\uXXXX-escaped, up to 12 bytes a character)
#: plus a path.
MAX_FRAME_BYTES = 12 * MAX_SQL_BYTES + 65_536
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Limits:
    """Everything a worker needs to know, handed over as JSON on its command line."""

    max_rows: int = 10_000
    max_result_bytes: int = 1_000_000
    max_vm_steps: int = 10_000_000
    time_budget_ms: int = 5000
    memory_limit_mb: int = 512
    heap_limit_mb: int = 256
    order_insensitive: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Limits:
        return cls(**json.loads(text))

    @property
    def memory_verdict(self) -> str:
        return f"memory: over {self.heap_limit_mb} MiB (SQLite heap) or {self.memory_limit_mb} MiB (worker)"


# -- normalised results ----------------------------------------------------------------------------
def _normalise_value(value: Any) -> Any:
    if isinstance(value, float):
        value = round(value, FLOAT_DIGITS)
        # 2.0 from AVG and 2 from COUNT are the same answer; also folds -0.0 into 0.
        return int(value) if value.is_integer() else value
    if isinstance(value, bytes):
        # A list cannot collide with any scalar a column yields.
        return ["blob", value.hex()]
    return value


def _row_json(row: list[Any]) -> str:
    return json.dumps(row, ensure_ascii=True, separators=(",", ":"))


def normalise_rows(rows: list[tuple[Any, ...]], order_insensitive: bool) -> list[list[Any]]:
    normalised = [[_normalise_value(v) for v in row] for row in rows]
    if order_insensitive:
        # Rows mix types (NULL, int, text), so sort on their JSON form, which always compares.
        normalised.sort(key=_row_json)
    return normalised


def result_signature(rows: list[list[Any]]) -> str:
    blob = json.dumps(rows, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _value_bytes(value: Any) -> int:
    # What a value costs once fetched, roughly: numbers and NULL count a machine word.
    return len(value) if isinstance(value, str | bytes) else 8


# -- the sandboxed connections ---------------------------------------------------------------------
def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    # For SQLITE_FUNCTION the function's name is the second argument.
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def database_uri(path: str) -> str:
    """A read-only, immutable URI; the path is percent-encoded so it cannot inject URI parameters."""
    return f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1"


class Sandbox:
    """Read-only connections (a few, most recently used first) and the budgets of the query running."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._connections: OrderedDict[str, sqlite3.Connection] = OrderedDict()
        self._steps_left = 0
        self._deadline = 0.0
        self._interrupted_by = ""

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def connection(self, path: str) -> sqlite3.Connection:
        conn = self._connections.get(path)
        if conn is None:
            conn = self._connections[path] = self.open(path)
            if len(self._connections) > MAX_OPEN_DATABASES:
                self._connections.popitem(last=False)[1].close()
        self._connections.move_to_end(path)
        return conn

    def open(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(database_uri(path), uri=True, check_same_thread=False, isolation_level=None)
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        # Sorters, temp tables and materialised views live in memory, under the heap limit; with
        # RLIMIT_FSIZE at 0 a spill to a file could only fail.
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, MAX_COLUMNS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(self._over_budget, PROGRESS_EVERY)
        return conn

    def _over_budget(self) -> int:
        self._steps_left -= PROGRESS_EVERY
        if self._steps_left < 0:
            self._interrupted_by = f"work budget: over {self.limits.max_vm_steps} VM steps"
        elif time.monotonic() > self._deadline:
            self._interrupted_by = f"time budget: over {self.limits.time_budget_ms} ms"
        else:
            return 0
        return 1

    def run(self, path: str, sql: str) -> tuple[str | None, str | None]:
        """(signature of the normalised rows, None) or (None, a short error); never raises for the SQL."""
        try:
            cursor = self.connection(path).cursor()
        except sqlite3.Error as exc:
            return None, f"database: {_cut(str(exc))}"
        self._deadline = time.monotonic() + self.limits.time_budget_ms / 1000
        self._steps_left = self.limits.max_vm_steps
        try:
            cursor.execute(sql)
            if cursor.description is None:
                # Only comments or an empty statement: nothing ran that could answer.
                return None, "not a query"
            rows, error = self._fetch(cursor)
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
            # ValueError: a NUL character in the SQL; OverflowError: an out-of-range integer.
            return None, self._describe(exc)
        finally:
            cursor.close()
        if error is not None:
            return None, error
        return result_signature(normalise_rows(rows, self.limits.order_insensitive)), None

    def _fetch(self, cursor: sqlite3.Cursor) -> tuple[list[tuple[Any, ...]], str | None]:
        """Rows one at a time, stopping at the first past a cap: memory stays near the caps."""
        limits = self.limits
        rows: list[tuple[Any, ...]] = []
        size = 0
        for row in cursor:
            if len(rows) == limits.max_rows:
                return rows, f"row limit: more than {limits.max_rows} rows"
            size += sum(map(_value_bytes, row))
            if size > limits.max_result_bytes:
                return rows, f"result size: more than {limits.max_result_bytes} bytes"
            rows.append(row)
        return rows, None

    def _describe(self, exc: BaseException) -> str:
        """A short error; one label per kind of refusal keeps the quality report's counts readable."""
        message = str(exc)
        if message == "interrupted":
            return self._interrupted_by
        if message.startswith(("not authorized", "authorization denied")):
            return "not authorized"
        if "one statement at a time" in message:
            return "more than one statement"
        if message == "string or blob too big":
            return f"value size: a string or blob over {MAX_VALUE_BYTES} bytes"
        if message == "query string is too large":
            return SQL_LENGTH_VERDICT
        if message == "too many columns in result set":
            return f"column limit: more than {MAX_COLUMNS} columns"
        return _cut(message or type(exc).__name__)


def _cut(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


# -- the process -----------------------------------------------------------------------------------
#: ASCII JSON: any str survives the trip, lone surrogates included. Built once (json.dumps with
#: options builds an encoder per call).
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def encode_frame(message: dict[str, Any]) -> bytes:
    body = _ENCODER.encode(message).encode("ascii")
    return _HEADER.pack(len(body)) + body


def _read_frame(reader: BinaryIO) -> dict[str, Any] | None:
    # Buffered: the parent may queue several requests, and one read() takes them all in.
    header = reader.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes")
    body = reader.read(size)
    return None if len(body) < size else decode_frame(body)


def decode_frame(body: bytes) -> dict[str, Any]:
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a frame holds a JSON object")
    return message


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect: then nobody would ever send the signal.
    if os.getppid() != parent:
        os._exit(0)


def limit_process(limits: Limits) -> None:
    """The OS limits of this process (see the module docstring); irreversible by design."""
    # Ctrl-C reaches the whole process group; the parent stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    address_space = limits.memory_limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Process-wide: every connection's allocations count against it.
    conn = sqlite3.connect(":memory:")
    conn.execute(f"PRAGMA hard_heap_limit = {limits.heap_limit_mb * 2**20}")
    conn.close()


def peak_rss_kb(pid: int | None = None) -> int | None:
    """A process's peak RSS (VmHWM; this one's by default), None once it is gone. Not getrusage's
    ru_maxrss: Linux carries that across execve, so a worker would report the peak of the
    service that forked it (1 GiB seen in CI)."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def main(argv: list[str]) -> int:
    limits = Limits.from_json(argv[1])
    _die_with_parent(int(argv[2]))
    limit_process(limits)
    sandbox = Sandbox(limits)
    requests, answers = sys.stdin.buffer, sys.stdout.fileno()
    _write_all(answers, encode_frame({"ready": True}))
    while (request := _read_frame(requests)) is not None:
        recycle = False
        try:
            signature, error = sandbox.run(request["db"], request["sql"])
        except MemoryError:
            # SQLite's NOMEM (the heap limit) or Python's own allocation past RLIMIT_AS.
            signature, error, recycle = None, limits.memory_verdict, True
            sandbox.close()
        except Exception as exc:
            # A bug, not a verdict: said on the protocol (stderr may be a file, which RLIMIT_FSIZE
            # forbids), then the process ends as a crash would.
            _write_all(answers, encode_frame({"crash": _cut(f"{type(exc).__name__}: {exc}")}))
            return 70
        answer = {"signature": signature, "error": error, "rss_kb": peak_rss_kb(), "recycle": recycle}
        _write_all(answers, encode_frame(answer))
        if recycle:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
