"""sql_eval: execution, normalisation, signatures and gold comparison (friendly SQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.sql_eval import SqlEvalStep, normalise_rows, result_signature
from tests.services.shop_db import copy_shop_db


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return copy_shop_db(tmp_path)


def _eval(step: SqlEvalStep, sql: str | None, gold: str | None = None) -> dict[str, object]:
    out = step.process_row({"source_index": 0, "sql": sql, "gold_sql": gold})
    assert out is not None
    return out


def test_pass_and_gold_match(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    out = _eval(step, "SELECT COUNT(*) FROM customers;", "select count(id) from customers")
    assert out["exec_pass"] is True and out["exec_error"] is None
    assert out["gold_match"] is True
    assert out["result_signature"] == result_signature([[120]])


def test_order_insensitive_by_default(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    out = _eval(step, "SELECT name FROM categories ORDER BY name", "SELECT name FROM categories ORDER BY id")
    assert out["gold_match"] is True


def test_order_sensitive_on_request(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db), order_insensitive=False)
    out = _eval(step, "SELECT name FROM categories ORDER BY name", "SELECT name FROM categories ORDER BY id")
    assert out["exec_pass"] is True and out["gold_match"] is False


def test_wrong_result_is_no_match(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    out = _eval(step, "SELECT COUNT(*) FROM products", "SELECT COUNT(*) FROM customers")
    assert out["exec_pass"] is True and out["gold_match"] is False


def test_without_gold_match_is_none(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    assert _eval(step, "SELECT 1", None)["gold_match"] is None
    assert _eval(step, "SELECT 1", "  ")["gold_match"] is None


def test_failing_prediction(db: Path) -> None:
    out = _eval(SqlEvalStep(db_path=str(db)), "SELECT nope FROM customers", "SELECT 1")
    assert out["exec_pass"] is False
    assert out["exec_error"] == "no such column: nope"
    assert out["result_signature"] is None
    assert out["gold_match"] is False


def test_failing_gold_is_no_match(db: Path) -> None:
    out = _eval(SqlEvalStep(db_path=str(db)), "SELECT 1", "SELECT FROM")
    assert out["exec_pass"] is True and out["gold_match"] is False


@pytest.mark.parametrize("sql", [None, "", "   \n"])
def test_empty_sql(db: Path, sql: str | None) -> None:
    out = _eval(SqlEvalStep(db_path=str(db)), sql, "SELECT 1")
    assert (out["exec_pass"], out["exec_error"], out["gold_match"]) == (False, "empty sql", False)


def test_gold_results_are_cached(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    seen: list[str] = []
    step.run = lambda sql, _run=step.run: seen.append(sql or "") or _run(sql)  # type: ignore[method-assign]
    for _ in range(3):
        _eval(step, "SELECT 1", "SELECT 2")
    assert seen.count("SELECT 2") == 1 and seen.count("SELECT 1") == 3


def test_one_connection_opened_lazily(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    assert step._conn is None
    _eval(step, "SELECT 1")
    conn = step._conn
    _eval(step, "SELECT 2")
    assert conn is not None and step._conn is conn
    step.close()
    assert step._conn is None


def test_missing_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _eval(SqlEvalStep(db_path=str(tmp_path / "absent.sqlite")), "SELECT 1")
    assert not (tmp_path / "absent.sqlite").exists()


def test_path_with_uri_characters(tmp_path: Path) -> None:
    odd = tmp_path / "we?ird#name.sqlite"
    copy_shop_db(tmp_path).rename(odd)
    assert _eval(SqlEvalStep(db_path=str(odd)), "SELECT COUNT(*) FROM orders")["exec_pass"] is True


def test_normalisation() -> None:
    rows = [(2.0, "b", None), (1.23456789, b"\x01", -0.0), (3, "a", 1)]
    assert normalise_rows(rows, order_insensitive=False) == [
        [2, "b", None],
        [1.234568, ["blob", "01"], 0],
        [3, "a", 1],
    ]
    shuffled = normalise_rows(list(reversed(rows)), order_insensitive=True)
    assert shuffled == normalise_rows(rows, order_insensitive=True)


def test_float_noise_still_matches(db: Path) -> None:
    out = _eval(SqlEvalStep(db_path=str(db)), "SELECT 0.1 + 0.2", "SELECT 0.3")
    assert out["gold_match"] is True


def test_int_and_integral_float_match(db: Path) -> None:
    out = _eval(SqlEvalStep(db_path=str(db)), "SELECT AVG(x) FROM (SELECT 2 AS x)", "SELECT 2")
    assert out["gold_match"] is True


def test_signature_independent_of_column_names(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    a = _eval(step, "SELECT id AS a FROM categories")
    b = _eval(step, "SELECT id AS b FROM categories")
    assert a["result_signature"] == b["result_signature"]


def test_custom_fields(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db), sql_field="pred", gold_field="gold")
    out = step.process_row({"source_index": 0, "pred": "SELECT 1", "gold": "SELECT 1"})
    assert out is not None and out["gold_match"] is True


def test_output_fields_are_nullable_where_needed(db: Path) -> None:
    fields = {f["name"]: f for f in SqlEvalStep(db_path=str(db)).output_fields()}
    assert fields["exec_pass"]["type"] == "boolean"
    for name in ("exec_error", "result_signature", "gold_match"):
        assert fields[name]["type"][0] == "null" and fields[name]["default"] is None


def test_connection_is_read_only_even_without_authorizer(db: Path) -> None:
    conn = SqlEvalStep(db_path=str(db))._open()
    conn.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM customers")
    conn.close()


@pytest.mark.parametrize("sql", ["-- only a comment", ";", "/* nothing */ ;", " ; ; "])
def test_no_result_set_is_not_a_query(db: Path, sql: str) -> None:
    # The gold returns no rows either: an answer that ran nothing must still not match it.
    out = _eval(SqlEvalStep(db_path=str(db)), sql, "SELECT name FROM customers WHERE 0")
    assert (out["exec_pass"], out["exec_error"]) == (False, "not a query")
    assert out["result_signature"] is None and out["gold_match"] is False


def test_empty_result_is_still_a_result(db: Path) -> None:
    out = _eval(
        SqlEvalStep(db_path=str(db)), "SELECT id FROM orders WHERE 0", "SELECT id FROM orders WHERE 1 = 2"
    )
    assert out["exec_pass"] is True and out["gold_match"] is True


def test_result_size_capped(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db), max_result_bytes=100_000)
    out = _eval(step, "SELECT zeroblob(30000) FROM orders")
    assert (out["exec_pass"], out["exec_error"]) == (False, "result too large (> 100000 bytes)")
    assert _eval(step, "SELECT zeroblob(30000) FROM orders LIMIT 3")["exec_pass"] is True


def test_default_caps_values_and_results_near_a_megabyte(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    assert _eval(step, "SELECT randomblob(1000001)")["exec_error"] == "string or blob too big"
    assert _eval(step, "SELECT randomblob(600000) FROM orders LIMIT 2")["exec_error"] == (
        "result too large (> 1000000 bytes)"
    )
    assert _eval(step, "SELECT randomblob(600000)")["exec_pass"] is True


def test_gold_that_failed_is_run_again(db: Path) -> None:
    # A gold query interrupted (over a budget, or on a machine too busy) must not cost every later
    # row its match.
    heavy = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) SELECT count(*) FROM c"
    )
    step = SqlEvalStep(db_path=str(db), max_vm_steps=1000)
    first = _eval(step, "SELECT 2000000", heavy)
    assert first["exec_pass"] is True and first["gold_match"] is False
    step.params = step.params.model_copy(update={"max_vm_steps": 10**9})
    assert _eval(step, "SELECT 2000000", heavy)["gold_match"] is True


def test_gold_cache_keeps_signatures_not_rows(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db))
    _eval(step, "SELECT name FROM customers", "SELECT name FROM customers")
    assert [g.signature for g in step._gold.values()] == [
        _eval(step, "SELECT name FROM customers")["result_signature"]
    ]
