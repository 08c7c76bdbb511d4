"""sql_eval: run the teacher's SQL and the gold SQL against a read-only SQLite database, compare.

Both queries are hostile input. They run in a pool of worker processes under limits the OS
enforces (`pool.py`, `worker.py`; every limit and verdict is in docs/sql_eval.md), so the step is
asynchronous: the service's event loop awaits an answer and never runs SQL itself.

Per row:
- `exec_pass` / `exec_error` / `result_signature`: the teacher's SQL ran (the signature is the
  SHA-256 of its normalised rows) or the short reason it did not;
- `gold_error`: the gold SQL did not run (its own outcome, not the teacher's fault), null when it
  ran or there is none; `gold_match`: null without gold or with a gold error, false when the
  teacher's SQL failed, else whether both normalised results are equal;
- a query that killed a worker twice raises `PoisonQuery`: a row error the runtime dead-letters.

Gold verdicts, good and failed, are cached by the SHA-256 of (database, gold SQL) in a bounded LRU,
so a broken gold costs one run, not one per row; rows waiting for the same gold share its run.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, model_validator

from services.sql_eval.databases import DatabaseFolder, database_file
from services.sql_eval.pool import Answer, PoisonQuery, WorkerPool, check_worker
from services.sql_eval.worker import MAX_SQL_BYTES, SQL_LENGTH_VERDICT, Limits
from shared.step import AsyncStep, Row, StepContext, StepParams, operational

GOLD_CACHE_SIZE = 10_000


class SqlEvalParams(StepParams):
    db_path: str | None = Field(None, description="the one database of every row")
    db_field: str | None = Field(None, description="row column naming the row's database (e.g. db_id)")
    db_dir: str | None = Field(None, description="folder of <name>.sqlite or <name>/<name>.sqlite files")
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
        5000, gt=0, description="backstop in the worker for a machine too loaded to reach max_vm_steps"
    )
    wall_limit_ms: int | None = Field(
        None,
        gt=0,
        description="a worker with no answer by then is killed (verdict `timeout`); "
        "default max(2 x time_budget_ms, time_budget_ms + 2000)",
    )
    memory_limit_mb: int = Field(512, ge=64, description="address space of a worker (RLIMIT_AS)")
    heap_limit_mb: int = Field(256, ge=8, description="SQLite hard_heap_limit of a worker")
    # How many queries run at once, never what they answer: out of the signature.
    workers: int = operational(2, ge=1, le=64, description="worker processes, i.e. queries at once")

    @model_validator(mode="after")
    def _consistent(self) -> SqlEvalParams:
        per_row = (self.db_field, self.db_dir)
        if self.db_path is not None and any(v is not None for v in per_row):
            raise ValueError("set either db_path or db_field with db_dir, not both")
        if self.db_path is None and any(v is None for v in per_row):
            raise ValueError("set db_path, or both db_field and db_dir")
        if self.heap_limit_mb > self.memory_limit_mb - 64:
            raise ValueError("heap_limit_mb must leave 64 MiB of memory_limit_mb to the interpreter")
        if self.wall_limit_ms is not None and self.wall_limit_ms <= self.time_budget_ms:
            raise ValueError("wall_limit_ms must exceed time_budget_ms (the worker's verdict comes first)")
        return self

    @property
    def wall_ms(self) -> int:
        if self.wall_limit_ms is not None:
            return self.wall_limit_ms
        return max(2 * self.time_budget_ms, self.time_budget_ms + 2000)

    def limits(self) -> Limits:
        return Limits(
            max_rows=self.max_rows,
            max_result_bytes=self.max_result_bytes,
            max_vm_steps=self.max_vm_steps,
            time_budget_ms=self.time_budget_ms,
            memory_limit_mb=self.memory_limit_mb,
            heap_limit_mb=self.heap_limit_mb,
            order_insensitive=self.order_insensitive,
        )


@dataclass(frozen=True)
class GoldResult:
    """What the cache keeps of a gold query: its signature, its error, or why it is a poison."""

    signature: str | None
    error: str | None
    poison: str | None = None


class SqlEvalStep(AsyncStep[SqlEvalParams]):
    name: ClassVar[str] = "sql_eval"
    outputs: ClassVar[tuple[str, ...]] = (
        "exec_pass",
        "exec_error",
        "result_signature",
        "gold_match",
        "gold_error",
    )

    def __init__(self, params: StepParams | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        # Checked here, when the pipeline is built: a missing file is one clear error at start,
        # not a dead letter per row.
        self._db_path = None if p.db_path is None else str(database_file(p.db_path))
        self._folder = None if p.db_dir is None else DatabaseFolder(p.db_dir)
        self._pool: WorkerPool | None = None
        #: The loop of `process_row` (blocking callers); the runtime's rows run on its own loop.
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._gold: OrderedDict[bytes, GoldResult] = OrderedDict()
        self._gold_running: dict[bytes, asyncio.Future[GoldResult]] = {}

    def reads(self) -> set[str]:
        # The gold column is optional (no gold, no gold_match); the database column is not.
        return {self.params.sql_field} | ({self.params.db_field} if self.params.db_field else set())

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self, ctx: StepContext) -> None:
        """Start one worker under the configured limits (blocking, once) and, with a fixed
        database, read its schema there: limits too small or a file that is not SQLite stop the
        service at start with one clear error instead of failing every row."""
        answer = check_worker(self.params.limits(), self._db_path)
        if answer is not None and answer.error is not None:
            raise ValueError(f"sql_eval: {self._db_path} is not a usable SQLite database: {answer.error}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._own_loop is not None:
            if not _in_event_loop():
                # Lets what close() cancelled (a worker still starting) finish on its own loop.
                self._own_loop.run_until_complete(asyncio.sleep(0))
            self._own_loop.close()
            self._own_loop = None

    def pool(self) -> WorkerPool:
        """The worker pool of the running event loop, started on first use (building a pipeline
        plan starts no process); a pool from another loop is closed first."""
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._pool.loop is not loop:
            self._pool.close()
            self._pool = None
            self._gold_running.clear()
        if self._pool is None:
            p = self.params
            self._pool = WorkerPool(p.limits(), p.workers, p.wall_ms)
        return self._pool

    # -- rows ------------------------------------------------------------------------------------
    async def process_row_async(self, row: Row) -> Row | None:
        db, sql, gold_sql = self._inputs(row)
        predicted = _answer_without_worker(sql)
        if predicted is None:
            assert sql is not None  # a None or blank one was answered without a worker
            try:
                predicted = await self.pool().run(db, sql)
            except PoisonQuery as exc:
                raise self._poison(self.params.sql_field, exc) from None
        gold = None if gold_sql is None else await self._gold_async(db, gold_sql)
        return self._verdict(row, predicted, gold)

    def process_row(self, row: Row) -> Row | None:
        """Blocking equivalent of `process_row_async` for callers without a running event loop
        (tests, in-process computations); the runtime awaits the asynchronous one."""
        if self._own_loop is None:
            self._own_loop = asyncio.new_event_loop()
        return self._own_loop.run_until_complete(self.process_row_async(row))

    def _inputs(self, row: Row) -> tuple[str, str | None, str | None]:
        """(database file, teacher SQL, gold SQL or None when blank); raises for a bad row."""
        p = self.params
        if self._folder is not None:
            assert p.db_field is not None
            db = str(self._folder.path(row.get(p.db_field)))
        else:
            assert self._db_path is not None
            db = self._db_path
        gold_sql = _text(row, p.gold_field)
        return db, _text(row, p.sql_field), gold_sql if gold_sql is not None and gold_sql.strip() else None

    def _verdict(self, row: Row, predicted: Answer, gold: GoldResult | None) -> Row:
        if gold is not None and gold.poison is not None:
            raise PoisonQuery(gold.poison)
        signature = predicted.signature
        gold_match: bool | None = None
        if gold is not None and gold.error is None:
            # Equal signatures are equal normalised rows (SHA-256 of their canonical JSON).
            gold_match = signature is not None and signature == gold.signature
        return {
            **row,
            "exec_pass": signature is not None,
            "exec_error": predicted.error,
            "result_signature": signature,
            "gold_match": gold_match,
            "gold_error": None if gold is None else gold.error,
        }

    @staticmethod
    def _poison(field: str, exc: PoisonQuery) -> PoisonQuery:
        return PoisonQuery(f"sql_eval: the SQL in {field!r}: {exc}")

    # -- gold ------------------------------------------------------------------------------------
    async def _gold_async(self, db: str, sql: str) -> GoldResult:
        key = _gold_key(db, sql)
        cached = self._cached_gold(key)
        if cached is not None:
            return cached
        running = self._gold_running.get(key)
        if running is None:
            running = self._gold_running[key] = asyncio.ensure_future(self._run_gold(key, db, sql))
            running.add_done_callback(lambda _: self._gold_running.pop(key, None))
        # Shielded: a row cancelled while waiting must not cancel the run other rows wait for.
        return await asyncio.shield(running)

    async def _run_gold(self, key: bytes, db: str, sql: str) -> GoldResult:
        outcome: Answer | PoisonQuery
        try:
            outcome = _answer_without_worker(sql) or await self.pool().run(db, sql)
        except PoisonQuery as exc:
            outcome = exc
        return self._store_gold(key, outcome)

    def _cached_gold(self, key: bytes) -> GoldResult | None:
        cached = self._gold.get(key)
        if cached is not None:
            self._gold.move_to_end(key)
        return cached

    def _store_gold(self, key: bytes, outcome: Answer | PoisonQuery) -> GoldResult:
        if isinstance(outcome, PoisonQuery):
            # Cached too: the next row with this gold is dead-lettered without killing a worker.
            result = GoldResult(None, None, str(self._poison(self.params.gold_field, outcome)))
        else:
            result = GoldResult(outcome.signature, outcome.error)
        self._gold[key] = result
        if len(self._gold) > GOLD_CACHE_SIZE:
            self._gold.popitem(last=False)
        return result


def _gold_key(db: str, sql: str) -> bytes:
    # A digest, not the text: 10,000 gold queries of up to 100 KB each would not be bounded memory.
    return hashlib.sha256(f"{db}\x00{sql}".encode("utf-8", "surrogatepass")).digest()


def _answer_without_worker(sql: str | None) -> Answer | None:
    """The verdict of SQL that needs no worker, None for SQL to run."""
    if sql is None or not sql.strip():
        return Answer(None, "empty sql")
    if len(sql) > MAX_SQL_BYTES:
        return Answer(None, SQL_LENGTH_VERDICT)
    return None


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _text(row: Row, field: str) -> str | None:
    value = row.get(field)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"sql_eval: {field!r} is {type(value).__name__}, not a string")
    return value
