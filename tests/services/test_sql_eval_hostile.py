"""sql_eval against hostile SQL, as the teacher's answer and as the gold query: nothing may write,
escape, load code, stall the step or take memory past the worker's cap.

Every case runs through the real step and its real worker processes. Per case: a verdict within a
fixed wall bound, the worker's peak RSS (reported by the worker, or read from /proc before a kill)
under the address-space cap. Per module: the database's bytes unchanged and no file created beside
it or in the places SQLite puts temp files.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.sql_eval import SqlEvalStep
from services.sql_eval.pool import WorkerPool
from tests.services.shop_db import SHOP_DB, copy_shop_db, sha256_of

#: The work budget stops runaway queries (deterministically); the time budget is the backstop in the
#: worker; the wall limit is the parent's kill for single calls that never reach the progress handler.
WORK_STEPS = 2_000_000
BUDGET_MS = 2000
WALL_MS = 3000
MEMORY_MB = 256
HEAP_MB = 128
#: Any verdict, refusal or kill included, arrives within this (a kill plus a fresh worker's start).
WALL_BOUND_S = WALL_MS / 1000 + 4
WORK = f"work budget: over {WORK_STEPS} VM steps"
TIMEOUT = f"timeout: no answer in {WALL_MS} ms"
MEMORY = f"memory: over {HEAP_MB} MiB (SQLite heap) or {MEMORY_MB} MiB (worker)"
#: Where SQLite (and anything else) could create a file: its temp directories and the worker's cwd.
WATCHED_DIRS = [Path("/"), Path.cwd(), Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")]
SIDE_FILE_MARKS = ("etilqs_", "-journal", "-wal", "-shm", "shop", "evil", "copy.sqlite")

ROLES = ["teacher", "gold"]

PRINTF = "printf('%.*c', 1000000000, 'x')"
INSTR = "instr(hex(zeroblob(499999)), hex(zeroblob(249999))||'1')"
#: 2,000 values of 900 KB (zeroblob concatenated: built at memcpy speed, so memory, not the time
#: budget, is what runs out first even on a loaded machine; randomblob would take seconds).
BLOBS = (
    "WITH RECURSIVE c(x, b) AS (SELECT 1, '1' || zeroblob(900000)"
    " UNION ALL SELECT x + 1, (x + 1) || zeroblob(900000) FROM c WHERE x < 2000)"
)
NUMBERS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})"


def _side_files() -> set[str]:
    found = set()
    for folder in WATCHED_DIRS:
        try:
            names = [p.name for p in folder.iterdir()]
        except OSError:
            continue
        found |= {f"{folder}/{n}" for n in names if any(mark in n for mark in SIDE_FILE_MARKS)}
    return found


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = copy_shop_db(tmp_path_factory.mktemp("hostile"))
    before = sha256_of(path)
    side_files = _side_files()
    yield path
    # Checked after every test in this module has run against the same file.
    assert sha256_of(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["shop.sqlite"]
    assert _side_files() <= side_files


@pytest.fixture(scope="module")
def step(db: Path) -> Iterator[SqlEvalStep]:
    instance = SqlEvalStep(
        db_path=str(db),
        max_vm_steps=WORK_STEPS,
        time_budget_ms=BUDGET_MS,
        wall_limit_ms=WALL_MS,
        memory_limit_mb=MEMORY_MB,
        heap_limit_mb=HEAP_MB,
        max_rows=500,
    )
    # A worker started: the timed cases measure queries, not the first interpreter start.
    assert instance.process_row({"source_index": 0, "sql": "SELECT 1"}) is not None
    yield instance
    instance.close()


def _pool(step: SqlEvalStep) -> WorkerPool:
    assert step._pool is not None
    return step._pool


def _verdict(step: SqlEvalStep, sql: str, role: str) -> str | None:
    """The error of `sql` as the teacher's answer or as the gold query, checked for consistency."""
    row = {"source_index": 0, "sql": sql, "gold_sql": "SELECT 1"}
    if role == "gold":
        row = {"source_index": 0, "sql": "SELECT 1", "gold_sql": sql}
    started = time.monotonic()
    out = step.process_row(row)
    elapsed = time.monotonic() - started
    assert out is not None
    assert elapsed < WALL_BOUND_S, f"{elapsed:.1f} s for {sql[:80]}"
    assert _pool(step).peak_rss_kb < MEMORY_MB * 1024
    if role == "gold":
        assert out["exec_pass"] is True
        if out["gold_error"] is not None:
            assert out["gold_match"] is None
        return out["gold_error"]  # type: ignore[no-any-return]
    if out["exec_error"] is not None:
        assert out["exec_pass"] is False and out["gold_match"] is False and out["result_signature"] is None
    return out["exec_error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH DATABASE '{dir}/evil.sqlite' AS evil",
        "ATTACH ':memory:' AS m",
        "DETACH DATABASE main",
        "INSERT INTO categories (name) VALUES ('evil')",
        "UPDATE products SET price = 0",
        "DELETE FROM orders",
        "REPLACE INTO categories VALUES (1, 'x')",
        "DROP TABLE customers",
        "CREATE TABLE evil (x)",
        "CREATE TEMP TABLE evil (x)",
        "CREATE VIEW v AS SELECT 1",
        "CREATE INDEX i ON customers(name)",
        "CREATE TRIGGER t AFTER INSERT ON orders BEGIN DELETE FROM orders; END",
        "ALTER TABLE customers ADD COLUMN evil TEXT",
        "BEGIN",
        "COMMIT",
        "SAVEPOINT s",
        "VACUUM",
        "VACUUM INTO '{dir}/copy.sqlite'",
        "REINDEX",
        "ANALYZE",
        "PRAGMA writable_schema = 1",
        "PRAGMA query_only = 0",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA temp_store = FILE",
        "PRAGMA hard_heap_limit = 0",
        "PRAGMA table_info(customers)",
        "PRAGMA database_list",
        "SELECT load_extension('x')",
        "SELECT LOAD_EXTENSION('/tmp/evil.so', 'init')",
        "SELECT readfile('/etc/passwd')",
        "SELECT writefile('{dir}/x', 'y')",
        "SELECT fts3_tokenizer('simple')",
        "SELECT edit('x')",
        "WITH x AS (SELECT 1) INSERT INTO categories (name) SELECT * FROM x",
    ],
)
def test_refused(step: SqlEvalStep, db: Path, sql: str, role: str) -> None:
    started = time.monotonic()
    error = _verdict(step, sql.format(dir=db.parent), role)
    # Refused when the statement is prepared, long before any budget runs out.
    assert (time.monotonic() - started) * 1000 < BUDGET_MS
    assert error is not None
    # Functions that do not exist in this build fail as unknown, which is as good as refused.
    assert error == "not authorized" or error.startswith("no such function"), error


def test_refusal_message_is_short(step: SqlEvalStep) -> None:
    assert _verdict(step, "PRAGMA writable_schema = 1", "teacher") == "not authorized"
    assert _verdict(step, "SELECT load_extension('x')", "teacher") == "not authorized"


# -- queries past a limit: each a verdict with a stable label, none a stalled step ---------------------
RUNAWAY = [
    # Deep recursive CTEs, cross joins and window queries over many rows: stopped by the work
    # budget, the same way at any machine load.
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c", WORK),
    (
        "WITH RECURSIVE c(x, y) AS (SELECT 1, 1 UNION ALL SELECT x+1, y*2 % 7 FROM c) SELECT sum(y) FROM c",
        WORK,
    ),
    ("SELECT count(*) FROM order_items a, order_items b, order_items c, order_items d", WORK),
    ("SELECT count(*) FROM orders a, orders b, orders c, orders d", WORK),
    ("SELECT count(*) FROM customers, products, orders, categories", WORK),
    (
        NUMBERS.format(n=5_000_000)
        + " SELECT max(s) FROM (SELECT sum(x) OVER (ORDER BY x DESC) AS s FROM c)",
        WORK,
    ),
    (
        NUMBERS.format(n=5_000_000)
        + " SELECT count(*) FROM (SELECT row_number() OVER (PARTITION BY x % 7 ORDER BY x) FROM c)",
        WORK,
    ),
    # Large values sorted, or kept by a window, in memory: the SQLite heap limit, not time.
    (BLOBS + " SELECT x FROM c ORDER BY b", MEMORY),
    (BLOBS + " SELECT x FROM c ORDER BY b DESC LIMIT 1000", MEMORY),
    (
        NUMBERS.format(n=3000)
        + " SELECT max(length(g)) FROM"
        + " (SELECT group_concat(x) OVER (ORDER BY x) AS g, zeroblob(300000) AS z FROM c ORDER BY z)",
        MEMORY,
    ),
    (
        NUMBERS.format(n=2000) + " SELECT count(*) FROM (SELECT DISTINCT x || zeroblob(500000) FROM c)",
        MEMORY,
    ),
    # One long function call never reaches the progress handler: the parent's wall-clock kill.
    (f"SELECT {INSTR}", TIMEOUT),
    ("SELECT " + " + ".join([INSTR] * 10), TIMEOUT),
    (f"SELECT {PRINTF}", TIMEOUT),
    ("SELECT " + " || ".join([PRINTF] * 400), TIMEOUT),
]


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("sql", "verdict"), RUNAWAY, ids=[f"runaway{i}" for i in range(len(RUNAWAY))])
def test_runaway_query_is_a_verdict(step: SqlEvalStep, sql: str, verdict: str, role: str) -> None:
    assert _verdict(step, sql, role) == verdict
    # The step goes on: the next query runs (on a fresh worker after a kill or a memory verdict).
    assert _verdict(step, "SELECT COUNT(*) FROM customers", role) is None


def test_memory_verdict_measured_under_the_default_cap(tmp_path: Path) -> None:
    # At the defaults (512 MiB address space, 256 MiB SQLite heap) the query that took 887 MiB in
    # process is stopped with the worker's peak RSS measured between the heap limit and the cap.
    step = SqlEvalStep(db_path=str(copy_shop_db(tmp_path)))
    out = step.process_row({"source_index": 0, "sql": BLOBS + " SELECT x FROM c ORDER BY b"})
    assert out is not None
    assert out["exec_error"] == "memory: over 256 MiB (SQLite heap) or 512 MiB (worker)"
    pool = _pool(step)
    assert 200 * 1024 < pool.peak_rss_kb < 512 * 1024, pool.peak_rss_kb
    assert pool.replaced == {"memory": 1}  # recycled: its heap is not kept
    step.close()


@pytest.mark.slow
def test_timed_out_worker_is_replaced_and_its_peak_read_before_the_kill(step: SqlEvalStep) -> None:
    _verdict(step, "SELECT 1", "teacher")
    pool = _pool(step)
    (killed,) = pool.pids()
    timeouts = pool.replaced.get("timeout", 0)
    assert _verdict(step, f"SELECT {PRINTF}", "teacher") == TIMEOUT
    assert pool.replaced.get("timeout", 0) == timeouts + 1
    assert not Path(f"/proc/{killed}").exists()  # killed and reaped
    assert 0 < pool.peak_rss_kb < MEMORY_MB * 1024
    assert _verdict(step, "SELECT 1", "teacher") is None
    assert pool.pids() != [killed]


def test_worker_runs_under_os_limits(step: SqlEvalStep) -> None:
    _verdict(step, "SELECT 1", "teacher")
    (pid,) = _pool(step).pids()
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()

    def soft(name: str) -> str:
        return next(line for line in limits if line.startswith(name)).split()[-3]

    assert soft("Max address space") == str(MEMORY_MB * 2**20)
    assert soft("Max file size") == "0"
    assert soft("Max core file size") == "0"
    status = Path(f"/proc/{pid}/status").read_text()
    assert "PPid:" in status
    # No secrets, no configuration: the sandbox gets an empty environment.
    assert Path(f"/proc/{pid}/environ").read_bytes() == b""
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")


def test_large_sort_stays_in_memory(db: Path) -> None:
    # Past the page cache, SQLite would spill this sort to a temp file; RLIMIT_FSIZE = 0 would turn
    # that into "disk I/O error". It succeeds: the temp store is memory.
    sql = (
        "SELECT count(*) FROM"
        " (SELECT DISTINCT a.id, b.id, c.id FROM order_items a, order_items b, categories c)"
    )
    local = SqlEvalStep(db_path=str(db), max_vm_steps=10**9, time_budget_ms=60_000)
    out = local.process_row({"source_index": 0, "sql": sql})
    assert isinstance(out, dict)
    assert (out["exec_pass"], out["exec_error"]) == (True, None), out["exec_error"]
    local.close()


def test_a_query_near_the_work_budget_ends_the_same_way_every_time(step: SqlEvalStep) -> None:
    # Counted in VM steps, not in time: the same verdict whatever the machine's load.
    finishes = NUMBERS.format(n=40_000) + " SELECT max(x) FROM c"
    runs_out = NUMBERS.format(n=400_000) + " SELECT max(x) FROM c"
    assert {_verdict(step, finishes, "teacher") for _ in range(5)} == {None}
    assert {_verdict(step, runs_out, "teacher") for _ in range(5)} == {WORK}


def test_recursive_cte_streaming_rows_stopped(step: SqlEvalStep) -> None:
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c"
    error = _verdict(step, sql, "teacher")
    # It yields rows fast, so the row cap may trip before the work budget: either stops it.
    assert error in {WORK, "row limit: more than 500 rows"}


def test_time_budget_is_the_backstop(tmp_path: Path) -> None:
    step = SqlEvalStep(db_path=str(copy_shop_db(tmp_path)), max_vm_steps=10**12, time_budget_ms=300)
    started = time.monotonic()
    sql = "SELECT count(*) FROM orders a, orders b, orders c, orders d"
    out = step.process_row({"source_index": 0, "sql": sql})
    assert out is not None and out["exec_error"] == "time budget: over 300 ms"
    assert time.monotonic() - started < 300 / 1000 + 3  # plus the first worker's start
    step.close()


@pytest.mark.parametrize("role", ROLES)
def test_row_limit(step: SqlEvalStep, role: str) -> None:
    assert _verdict(step, "SELECT * FROM order_items", role) == "row limit: more than 500 rows"
    assert _verdict(step, "SELECT * FROM order_items LIMIT 500", role) is None


@pytest.mark.parametrize("role", ROLES)
def test_two_statements_rejected(step: SqlEvalStep, role: str) -> None:
    assert _verdict(step, "SELECT 1; DELETE FROM orders", role) == "more than one statement"
    assert _verdict(step, "SELECT 1; SELECT 2", role) == "more than one statement"


@pytest.mark.parametrize("role", ROLES)
def test_huge_values_refused(step: SqlEvalStep, role: str) -> None:
    too_big = "value size: a string or blob over 1000000 bytes"
    assert _verdict(step, "SELECT randomblob(500000000)", role) == too_big
    assert _verdict(step, "SELECT zeroblob(500000000)", role) == too_big


@pytest.mark.parametrize("role", ROLES)
def test_wide_rows_of_large_values_refused(step: SqlEvalStep, role: str) -> None:
    # Each value under the 1 MB cap, but together far past any sane result: stopped at the first row
    # past the result cap, or refused as too wide before it runs.
    too_large = "result size: more than 1000000 bytes"
    assert _verdict(step, "SELECT " + ", ".join(["randomblob(900000)"] * 64), role) == too_large
    assert _verdict(step, "SELECT " + ", ".join(["zeroblob(900000)"] * 2000), role) == (
        "column limit: more than 64 columns"
    )
    assert _verdict(step, "SELECT zeroblob(400000) FROM order_items", role) == too_large


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("sql", ["-- DROP TABLE customers", "/* */", ";"])
def test_statements_without_a_result_are_not_queries(step: SqlEvalStep, sql: str, role: str) -> None:
    assert _verdict(step, sql, role) == "not a query"


@pytest.mark.parametrize("role", ROLES)
def test_unencodable_sql_is_a_verdict_not_a_crash(step: SqlEvalStep, role: str) -> None:
    assert _verdict(step, "SELECT 1\x00; DROP TABLE customers", role) is not None
    # A lone surrogate crosses the pipe (ASCII JSON) and is refused by the worker, which lives on.
    assert "surrogates not allowed" in (_verdict(step, "SELECT '\ud800'", role) or "")
    assert _verdict(step, "SELECT 1", role) is None


def test_schema_reads_are_allowed(step: SqlEvalStep) -> None:
    # The schema is what the teacher was shown anyway; reading it is harmless.
    assert _verdict(step, "SELECT name FROM sqlite_master WHERE type = 'table'", "teacher") is None


def test_the_committed_database_was_not_used(db: Path) -> None:
    assert db != SHOP_DB


def test_peak_rss_is_the_workers_own_not_its_forking_parents(db: Path) -> None:
    # Regression (CI, full suite): getrusage's ru_maxrss survives execve, so a worker forked by a
    # large process reported the parent's peak (1 GiB) as its own and every memory check failed.
    ballast = bytearray(MEMORY_MB * 2 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: resident, not just reserved
    instance = SqlEvalStep(db_path=str(db), memory_limit_mb=MEMORY_MB, heap_limit_mb=HEAP_MB)
    try:
        assert instance.process_row({"source_index": 0, "sql": "SELECT 1"}) is not None
        assert instance._pool is not None
        assert 0 < instance._pool.peak_rss_kb < MEMORY_MB * 1024
    finally:
        instance.close()
        del ballast
