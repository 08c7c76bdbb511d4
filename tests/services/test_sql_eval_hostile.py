"""sql_eval against hostile teacher SQL: nothing may write, escape, load code or run unbounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.sql_eval import SqlEvalStep
from tests.services.shop_db import SHOP_DB, copy_shop_db, sha256_of

#: The work budget stops runaway queries (deterministically); the time budget is the backstop.
WORK_STEPS = 2_000_000
BUDGET_MS = 2000
WORK_INTERRUPT = f"interrupted: work budget {WORK_STEPS} VM steps"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = copy_shop_db(tmp_path_factory.mktemp("hostile"))
    before = sha256_of(path)
    yield path
    # Checked after every test in this module has run against the same file.
    assert sha256_of(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["shop.sqlite"]


@pytest.fixture(scope="module")
def step(db: Path) -> Iterator[SqlEvalStep]:
    instance = SqlEvalStep(db_path=str(db), max_vm_steps=WORK_STEPS, time_budget_ms=BUDGET_MS, max_rows=500)
    yield instance
    instance.close()


def _error(step: SqlEvalStep, sql: str) -> str | None:
    out = step.process_row({"source_index": 0, "sql": sql, "gold_sql": "SELECT 1"})
    assert out is not None
    if out["exec_error"] is not None:
        assert out["exec_pass"] is False and out["gold_match"] is False and out["result_signature"] is None
    return out["exec_error"]


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
def test_refused(step: SqlEvalStep, db: Path, sql: str) -> None:
    started = time.monotonic()
    error = _error(step, sql.format(dir=db.parent))
    # Refused when the statement is prepared, long before any budget runs out.
    assert (time.monotonic() - started) * 1000 < BUDGET_MS
    assert error is not None
    # Functions that do not exist in this build fail as unknown, which is as good as refused.
    assert error == "not authorized" or error.startswith("no such function"), error


def test_refusal_message_is_short(step: SqlEvalStep) -> None:
    assert _error(step, "PRAGMA writable_schema = 1") == "not authorized"
    assert _error(step, "SELECT load_extension('x')") == "not authorized"


def _assert_within_budget(step: SqlEvalStep, sql: str) -> None:
    started = time.monotonic()
    error = _error(step, sql)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert error == WORK_INTERRUPT
    assert elapsed_ms < BUDGET_MS


def test_runaway_recursive_cte_interrupted(step: SqlEvalStep) -> None:
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c"
    _assert_within_budget(step, sql)


def test_recursive_cte_streaming_rows_stopped_within_budget(step: SqlEvalStep) -> None:
    started = time.monotonic()
    error = _error(step, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c")
    # It yields rows fast, so the row cap may trip before the clock: either stops it in time.
    assert error in {WORK_INTERRUPT, "row limit exceeded (> 500 rows)"}
    assert (time.monotonic() - started) * 1000 < BUDGET_MS


def test_huge_cross_join_interrupted(step: SqlEvalStep) -> None:
    sql = "SELECT count(*) FROM order_items a, order_items b, order_items c, order_items d"
    _assert_within_budget(step, sql)


def test_huge_cross_join_on_a_small_table_interrupted(tmp_path: Path) -> None:
    # The canonical shape: a 4-way self join of one table.
    step = SqlEvalStep(db_path=str(copy_shop_db(tmp_path)), max_vm_steps=WORK_STEPS, time_budget_ms=BUDGET_MS)
    _assert_within_budget(step, "SELECT count(*) FROM orders a, orders b, orders c, orders d")
    step.close()


def test_time_budget_is_the_backstop(tmp_path: Path) -> None:
    step = SqlEvalStep(db_path=str(copy_shop_db(tmp_path)), max_vm_steps=10**12, time_budget_ms=300)
    started = time.monotonic()
    assert _error(step, "SELECT count(*) FROM orders a, orders b, orders c, orders d") == (
        "interrupted: time budget 300 ms"
    )
    assert (time.monotonic() - started) * 1000 < 600
    step.close()


def test_a_query_near_the_work_budget_ends_the_same_way_every_time(step: SqlEvalStep) -> None:
    # Counted in VM steps, not in time: the same verdict whatever the machine's load.
    finishes = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 40000) SELECT max(x) FROM c"
    )
    runs_out = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 400000) SELECT max(x) FROM c"
    )
    assert {_error(step, finishes) for _ in range(5)} == {None}
    assert {_error(step, runs_out) for _ in range(5)} == {WORK_INTERRUPT}


def test_connection_usable_after_interrupt(step: SqlEvalStep) -> None:
    _error(step, "SELECT count(*) FROM order_items a, order_items b, order_items c")
    assert _error(step, "SELECT COUNT(*) FROM customers") is None


def test_row_limit(step: SqlEvalStep) -> None:
    assert _error(step, "SELECT * FROM order_items") == "row limit exceeded (> 500 rows)"
    assert _error(step, "SELECT * FROM order_items LIMIT 500") is None


def test_two_statements_rejected(step: SqlEvalStep) -> None:
    assert _error(step, "SELECT 1; DELETE FROM orders") == "more than one statement"
    assert _error(step, "SELECT 1; SELECT 2") == "more than one statement"


def test_huge_values_refused(step: SqlEvalStep) -> None:
    assert _error(step, "SELECT randomblob(500000000)") == "string or blob too big"
    assert _error(step, "SELECT zeroblob(500000000)") == "string or blob too big"


def test_wide_rows_of_large_values_refused(step: SqlEvalStep) -> None:
    # Each value under the 1 MB cap, but together far past any sane result: stopped at the first row
    # past the result cap, or refused as too wide before it runs.
    assert _error(step, "SELECT " + ", ".join(["randomblob(900000)"] * 64)) == (
        "result too large (> 1000000 bytes)"
    )
    assert _error(step, "SELECT " + ", ".join(["zeroblob(900000)"] * 2000)) == (
        "too many columns in result set"
    )
    assert _error(step, "SELECT zeroblob(400000) FROM order_items") == "result too large (> 1000000 bytes)"


@pytest.mark.parametrize("sql", ["-- DROP TABLE customers", "/* */", ";"])
def test_statements_without_a_result_are_not_queries(step: SqlEvalStep, sql: str) -> None:
    assert _error(step, sql) == "not a query"


def test_nul_in_sql_is_a_row_error_not_a_crash(step: SqlEvalStep) -> None:
    assert _error(step, "SELECT 1\x00; DROP TABLE customers") is not None


def test_schema_reads_are_allowed(step: SqlEvalStep) -> None:
    # The schema is what the teacher was shown anyway; reading it is harmless.
    assert _error(step, "SELECT name FROM sqlite_master WHERE type = 'table'") is None


def test_the_committed_database_was_not_used(db: Path) -> None:
    assert db != SHOP_DB
