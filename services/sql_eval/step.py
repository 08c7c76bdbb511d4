"""sql_eval: run the teacher's SQL against a read-only SQLite database and compare with gold.

The teacher's SQL is hostile input. Defences, each covering what the others miss:
- the file is opened `mode=ro` and `query_only` is set, so the engine refuses writes;
- an authorizer allows only reading (SELECT, column reads, functions, recursive CTEs), which
  also stops ATTACH (and `VACUUM INTO`, which would write a file even from a read-only
  connection), PRAGMA, transactions and every DDL/DML statement at prepare time, and
  denies the functions that touch the file system or load code;
- a progress handler interrupts a query once its work budget (SQLite VM steps) or, as a
  backstop, its time budget is spent (runaway recursive CTEs, cross joins); the work budget
  bites first on any sane machine, so whether a query finishes does not depend on the load;
- SQLite's own limits cap string/blob sizes (1 MB) and columns so a single function call or
  row cannot allocate gigabytes between two progress checks;
- rows are fetched one at a time and the result stops at `max_rows` rows or
  `max_result_bytes` of values, so a result never holds more than that in memory;
- a statement that yields no result set (a comment, an empty statement) is no answer.

Gold results are cached as signatures only (bounded memory), and only when they ran: a gold
query interrupted on a busy machine, or failing, is run again for the next row that needs it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from shared.step import Row, Step, StepParams

_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
#: VM instructions between two looks at the budgets: cheap, and well under a millisecond apart.
_PROGRESS_EVERY = 1000
#: Longest string or blob a query may build (SQLite's default is 1 GB).
_MAX_VALUE_BYTES = 1_000_000
#: Widest result row: with the value cap, bounds what one fetched row can hold (SQLite allows 2000).
_MAX_COLUMNS = 64
_MAX_SQL_BYTES = 100_000
_MAX_ERROR_CHARS = 200
_GOLD_CACHE_SIZE = 10_000
_FLOAT_DIGITS = 6


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    # For SQLITE_FUNCTION the function's name is the second argument.
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _normalise_value(value: Any) -> Any:
    if isinstance(value, float):
        value = round(value, _FLOAT_DIGITS)
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


@dataclass(frozen=True)
class Outcome:
    rows: list[list[Any]] | None
    error: str | None

    @property
    def signature(self) -> str | None:
        return None if self.rows is None else result_signature(self.rows)


@dataclass(frozen=True)
class GoldResult:
    """What the cache keeps of a gold query that ran: the signature of its normalised rows."""

    signature: str


class SqlEvalParams(StepParams):
    db_path: str
    sql_field: str = "sql"
    gold_field: str = "gold_sql"
    order_insensitive: bool = True
    max_rows: int = Field(10_000, ge=0)
    max_result_bytes: int = Field(1_000_000, gt=0, description="cap on the fetched values' total size")
    max_vm_steps: int = Field(
        10_000_000,
        gt=0,
        description="work budget per query in SQLite VM steps (~0.2-0.5 s here); deterministic, unlike time",
    )
    time_budget_ms: int = Field(
        5000, gt=0, description="backstop for a machine too loaded to reach max_vm_steps"
    )


class SqlEvalStep(Step[SqlEvalParams]):
    name: ClassVar[str] = "sql_eval"
    outputs: ClassVar[tuple[str, ...]] = ("exec_pass", "exec_error", "result_signature", "gold_match")

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._conn: sqlite3.Connection | None = None
        # One connection, one query at a time; the budgets are per query.
        self._lock = threading.Lock()
        self._deadline = 0.0
        self._steps_left = 0
        self._interrupted_by = ""
        self._gold: OrderedDict[str, GoldResult] = OrderedDict()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- connection ------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        path = Path(self.params.db_path)
        if not path.is_file():
            # sqlite would report only "unable to open database file", once per row.
            raise FileNotFoundError(f"sql_eval: database {path} does not exist")
        # as_uri() percent-encodes, so a '?' or '#' in the path cannot inject URI parameters.
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, _MAX_COLUMNS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, _MAX_SQL_BYTES)
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(self._over_budget, _PROGRESS_EVERY)
        return conn

    def _over_budget(self) -> int:
        self._steps_left -= _PROGRESS_EVERY
        if self._steps_left < 0:
            self._interrupted_by = f"work budget {self.params.max_vm_steps} VM steps"
        elif time.monotonic() > self._deadline:
            self._interrupted_by = f"time budget {self.params.time_budget_ms} ms"
        else:
            return 0
        return 1

    # -- queries ---------------------------------------------------------------------------------
    def run(self, sql: str | None) -> Outcome:
        """Rows of `sql` normalised, or a short error; never raises for anything the SQL does."""
        if sql is None or not sql.strip():
            return Outcome(None, "empty sql")
        p = self.params
        with self._lock:
            conn = self._connection()
            cursor = conn.cursor()
            self._deadline = time.monotonic() + p.time_budget_ms / 1000
            self._steps_left = p.max_vm_steps
            try:
                cursor.execute(sql)
                if cursor.description is None:
                    # Only comments or an empty statement: nothing ran that could answer.
                    return Outcome(None, "not a query")
                rows, error = self._fetch(cursor)
            except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
                # ValueError: a NUL character in the SQL; OverflowError: an out-of-range integer.
                return Outcome(None, self._describe(exc))
            finally:
                cursor.close()
        if error is not None:
            return Outcome(None, error)
        return Outcome(normalise_rows(rows, p.order_insensitive), None)

    def _fetch(self, cursor: sqlite3.Cursor) -> tuple[list[tuple[Any, ...]], str | None]:
        """Rows one at a time, stopping at the first past a cap: memory stays near the caps."""
        p = self.params
        rows: list[tuple[Any, ...]] = []
        size = 0
        for row in cursor:
            if len(rows) == p.max_rows:
                return rows, f"row limit exceeded (> {p.max_rows} rows)"
            size += sum(map(_value_bytes, row))
            if size > p.max_result_bytes:
                return rows, f"result too large (> {p.max_result_bytes} bytes)"
            rows.append(row)
        return rows, None

    def _describe(self, exc: BaseException) -> str:
        """A short error; one label per kind of refusal keeps the quality report's counts readable."""
        message = str(exc)
        if message == "interrupted":
            return f"interrupted: {self._interrupted_by}"
        if message.startswith(("not authorized", "authorization denied")):
            return "not authorized"
        if "one statement at a time" in message:
            return "more than one statement"
        message = message or type(exc).__name__
        return message if len(message) <= _MAX_ERROR_CHARS else message[: _MAX_ERROR_CHARS - 1] + "…"

    def gold(self, sql: str) -> GoldResult | None:
        """The gold query's result, None if it did not run (never cached: it may run next time)."""
        cached = self._gold.get(sql)
        if cached is not None:
            self._gold.move_to_end(sql)
            return cached
        signature = self.run(sql).signature
        if signature is None:
            return None
        cached = self._gold[sql] = GoldResult(signature)
        if len(self._gold) > _GOLD_CACHE_SIZE:
            self._gold.popitem(last=False)
        return cached

    def reads(self) -> set[str]:
        return {self.params.sql_field}

    def process_row(self, row: Row) -> Row | None:
        p = self.params
        predicted = self.run(_text(row, p.sql_field))
        signature = predicted.signature
        gold_sql = _text(row, p.gold_field)
        gold_match: bool | None = None
        if gold_sql and gold_sql.strip():
            # Equal signatures are equal normalised rows (SHA-256 of their canonical JSON).
            gold = self.gold(gold_sql) if signature is not None else None
            gold_match = gold is not None and gold.signature == signature
        return {
            **row,
            "exec_pass": signature is not None,
            "exec_error": predicted.error,
            "result_signature": signature,
            "gold_match": gold_match,
        }


def _text(row: Row, field: str) -> str | None:
    value = row.get(field)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"sql_eval: {field!r} is {type(value).__name__}, not a string")
    return value
