"""sql_eval: execution, normalisation, signatures, gold comparison and gold errors (friendly SQL).

Every query runs in the step's real worker processes against a real SQLite file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from fastdistill.plan import PipelinePlan, PlanError
from services.sql_eval import SqlEvalParams, SqlEvalStep, normalise_rows, result_signature
from services.sql_eval.worker import Limits, Sandbox
from shared.pipeline import PipelineSpec
from tests.services.shop_db import copy_shop_db, sha256_of


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return copy_shop_db(tmp_path)


@pytest.fixture
def step(db: Path) -> Iterator[SqlEvalStep]:
    instance = SqlEvalStep(db_path=str(db))
    yield instance
    instance.close()


def _eval(step: SqlEvalStep, sql: str | None, gold: str | None = None) -> dict[str, object]:
    out = step.process_row({"source_index": 0, "sql": sql, "gold_sql": gold})
    assert out is not None
    return out


def test_pass_and_gold_match(step: SqlEvalStep) -> None:
    out = _eval(step, "SELECT COUNT(*) FROM customers;", "select count(id) from customers")
    assert out["exec_pass"] is True and out["exec_error"] is None
    assert out["gold_match"] is True and out["gold_error"] is None
    assert out["result_signature"] == result_signature([[120]])


def test_order_insensitive_by_default(step: SqlEvalStep) -> None:
    out = _eval(step, "SELECT name FROM categories ORDER BY name", "SELECT name FROM categories ORDER BY id")
    assert out["gold_match"] is True


def test_order_sensitive_on_request(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db), order_insensitive=False)
    out = _eval(step, "SELECT name FROM categories ORDER BY name", "SELECT name FROM categories ORDER BY id")
    assert out["exec_pass"] is True and out["gold_match"] is False
    step.close()


def test_rows_are_a_multiset(step: SqlEvalStep) -> None:
    # Duplicates count: the same distinct rows a different number of times is another answer.
    out = _eval(step, "SELECT 1 UNION ALL SELECT 1", "SELECT 1")
    assert out["gold_match"] is False
    assert _eval(step, "SELECT 1 UNION ALL SELECT 2", "SELECT 2 UNION ALL SELECT 1")["gold_match"] is True


def test_column_order_matters_names_do_not(step: SqlEvalStep) -> None:
    assert _eval(step, "SELECT 1 AS a, 2 AS b", "SELECT 2, 1")["gold_match"] is False
    assert _eval(step, "SELECT 1 AS a, 2 AS b", "SELECT 1 AS x, 2 AS y")["gold_match"] is True


def test_wrong_result_is_no_match(step: SqlEvalStep) -> None:
    out = _eval(step, "SELECT COUNT(*) FROM products", "SELECT COUNT(*) FROM customers")
    assert out["exec_pass"] is True and out["gold_match"] is False


def test_without_gold_match_is_none(step: SqlEvalStep) -> None:
    for gold in (None, "  "):
        out = _eval(step, "SELECT 1", gold)
        assert out["gold_match"] is None and out["gold_error"] is None


def test_failing_prediction(step: SqlEvalStep) -> None:
    out = _eval(step, "SELECT nope FROM customers", "SELECT 1")
    assert out["exec_pass"] is False
    assert out["exec_error"] == "no such column: nope"
    assert out["result_signature"] is None
    assert out["gold_match"] is False and out["gold_error"] is None


def test_failing_gold_is_a_gold_error_not_a_mismatch(step: SqlEvalStep) -> None:
    out = _eval(step, "SELECT 1", "SELECT FROM")
    assert out["exec_pass"] is True and out["exec_error"] is None
    assert out["gold_match"] is None
    assert out["gold_error"] == 'near "FROM": syntax error'


def test_gold_error_even_when_the_prediction_fails(step: SqlEvalStep) -> None:
    # The gold runs for every row that has one: a broken gold is counted whatever the teacher did.
    out = _eval(step, "SELECT nope", "SELECT * FROM no_such_table")
    assert (out["exec_pass"], out["gold_match"], out["gold_error"]) == (
        False,
        None,
        "no such table: no_such_table",
    )


@pytest.mark.parametrize("sql", [None, "", "   \n"])
def test_empty_sql(step: SqlEvalStep, sql: str | None) -> None:
    out = _eval(step, sql, "SELECT 1")
    assert (out["exec_pass"], out["exec_error"], out["gold_match"]) == (False, "empty sql", False)


def test_gold_results_are_cached(step: SqlEvalStep) -> None:
    for _ in range(3):
        assert _eval(step, "SELECT 2", "SELECT 2")["gold_match"] is True
    pool = step._pool
    assert pool is not None and pool.queries == 3 + 1


def test_failed_gold_is_cached_like_a_good_one(db: Path) -> None:
    # A gold query that cannot finish (one long call: only the wall clock stops it) costs one run,
    # not one per row.
    step = SqlEvalStep(db_path=str(db), time_budget_ms=500, wall_limit_ms=1500)
    stalls = "SELECT length(printf('%.*c', 1000000000, 'x'))"
    outs = [_eval(step, f"SELECT {i}", stalls) for i in range(3)]
    assert {o["gold_error"] for o in outs} == {"timeout: no answer in 1500 ms"}
    assert {o["gold_match"] for o in outs} == {None}
    pool = step._pool
    # One wall limit paid, not three.
    assert pool is not None and pool.replaced == {"timeout": 1} and pool.queries == 3 + 1
    step.close()


def test_gold_cache_is_bounded_and_keeps_digests_not_text(
    step: SqlEvalStep, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.sql_eval.step.GOLD_CACHE_SIZE", 3)
    for i in range(5):
        _eval(step, "SELECT 1", f"SELECT {i}")
    assert len(step._gold) == 3
    assert all(isinstance(k, bytes) and len(k) == 32 for k in step._gold)
    assert [g.signature for g in step._gold.values()] == [result_signature([[i]]) for i in (2, 3, 4)]


def test_rows_waiting_for_the_same_gold_share_one_run(step: SqlEvalStep) -> None:
    rows = [{"source_index": i, "sql": f"SELECT {i}", "gold_sql": "SELECT 3"} for i in range(8)]

    async def run_all() -> list[dict[str, object] | None]:
        return await asyncio.gather(*(step.process_row_async(r) for r in rows))

    outs = asyncio.run(run_all())
    assert [o["gold_match"] for o in outs if o is not None] == [i == 3 for i in range(8)]
    pool = step._pool
    assert pool is not None and pool.queries == 8 + 1


def test_workers_start_on_first_row_and_close_ends_them(step: SqlEvalStep) -> None:
    assert step._pool is None  # building a pipeline plan starts no process
    _eval(step, "SELECT 1")
    pool = step._pool
    assert pool is not None and len(pool.pids()) == 1
    _eval(step, "SELECT 2")
    assert step._pool is pool
    step.close()
    assert step._pool is None and pool.pids() == []


def test_missing_database_is_an_error_when_the_step_is_built(tmp_path: Path) -> None:
    absent = tmp_path / "absent.sqlite"
    with pytest.raises(FileNotFoundError, match=r"absent\.sqlite"):
        SqlEvalStep(db_path=str(absent))
    assert not absent.exists()


def test_a_file_that_is_not_sqlite_fails_at_open(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"not a database at all" * 100)
    step = SqlEvalStep(db_path=str(bogus))
    with pytest.raises(ValueError, match="not a usable SQLite database: file is not a database"):
        step.open(None)  # type: ignore[arg-type]  # the step uses no context
    step.close()


def test_open_checks_a_worker_starts_under_the_limits(db: Path) -> None:
    SqlEvalStep(db_path=str(db)).open(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"db_field": "db_id"},
        {"db_dir": "."},
        {"db_path": "{db}", "db_dir": "."},
        {"db_path": "{db}", "db_field": "db_id", "db_dir": "."},
        {"db_path": "{db}", "memory_limit_mb": 256, "heap_limit_mb": 200},
        {"db_path": "{db}", "time_budget_ms": 3000, "wall_limit_ms": 3000},
        {"db_path": "{db}", "workers": 0},
    ],
)
def test_invalid_params(db: Path, params: dict[str, object]) -> None:
    resolved = {k: v.format(db=db) if isinstance(v, str) else v for k, v in params.items()}
    with pytest.raises(ValidationError):
        SqlEvalParams.model_validate(resolved)


def test_wall_limit_defaults_above_the_time_budget(db: Path) -> None:
    assert SqlEvalStep(db_path=str(db)).params.wall_ms == 10_000
    assert SqlEvalStep(db_path=str(db), time_budget_ms=30_000).params.wall_ms == 60_000
    assert SqlEvalStep(db_path=str(db), time_budget_ms=500).params.wall_ms == 2500


def test_path_with_uri_characters(tmp_path: Path) -> None:
    odd = tmp_path / "we?ird#name.sqlite"
    copy_shop_db(tmp_path).rename(odd)
    step = SqlEvalStep(db_path=str(odd))
    assert _eval(step, "SELECT COUNT(*) FROM orders")["exec_pass"] is True
    step.close()


def test_relative_db_path_resolved_when_built(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers run in `/`: the path they get must not depend on the service's working directory.
    monkeypatch.chdir(db.parent)
    step = SqlEvalStep(db_path="shop.sqlite")
    monkeypatch.chdir("/")
    assert _eval(step, "SELECT COUNT(*) FROM customers")["result_signature"] == result_signature([[120]])
    step.close()


def test_wal_mode_database_gets_no_side_files(tmp_path: Path) -> None:
    db = copy_shop_db(tmp_path)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    conn.close()  # a clean close checkpoints and removes -wal/-shm
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.sqlite"]
    before = sha256_of(db)
    step = SqlEvalStep(db_path=str(db))
    step.open(None)  # type: ignore[arg-type]
    for _ in range(3):
        assert _eval(step, "SELECT COUNT(*) FROM customers", "SELECT 120")["gold_match"] is True
        assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.sqlite"]
    step.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.sqlite"] and sha256_of(db) == before


def test_normalisation() -> None:
    rows = [(2.0, "b", None), (1.23456789, b"\x01", -0.0), (3, "a", 1)]
    assert normalise_rows(rows, order_insensitive=False) == [
        [2, "b", None],
        [1.234568, ["blob", "01"], 0],
        [3, "a", 1],
    ]
    shuffled = normalise_rows(list(reversed(rows)), order_insensitive=True)
    assert shuffled == normalise_rows(rows, order_insensitive=True)


def test_float_noise_still_matches(step: SqlEvalStep) -> None:
    assert _eval(step, "SELECT 0.1 + 0.2", "SELECT 0.3")["gold_match"] is True
    assert _eval(step, "SELECT 0.1234564", "SELECT 0.1234561")["gold_match"] is True  # 6 decimals
    assert _eval(step, "SELECT 0.123456", "SELECT 0.123457")["gold_match"] is False


def test_int_and_integral_float_match(step: SqlEvalStep) -> None:
    assert _eval(step, "SELECT AVG(x) FROM (SELECT 2 AS x)", "SELECT 2")["gold_match"] is True


def test_null_text_and_number_are_different(step: SqlEvalStep) -> None:
    assert _eval(step, "SELECT NULL", "SELECT 'None'")["gold_match"] is False
    assert _eval(step, "SELECT '1'", "SELECT 1")["gold_match"] is False


def test_signature_independent_of_column_names(step: SqlEvalStep) -> None:
    a = _eval(step, "SELECT id AS a FROM categories")
    b = _eval(step, "SELECT id AS b FROM categories")
    assert a["result_signature"] == b["result_signature"]


def test_custom_fields(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db), sql_field="pred", gold_field="gold")
    out = step.process_row({"source_index": 0, "pred": "SELECT 1", "gold": "SELECT 1"})
    assert out is not None and out["gold_match"] is True
    step.close()


def test_non_string_sql_is_a_row_error(step: SqlEvalStep) -> None:
    with pytest.raises(TypeError, match="'sql' is int"):
        step.process_row({"source_index": 0, "sql": 5})


def test_output_fields_are_nullable_where_needed(step: SqlEvalStep) -> None:
    fields = {f["name"]: f for f in step.output_fields()}
    assert fields["exec_pass"]["type"] == "boolean"
    for name in ("exec_error", "result_signature", "gold_match", "gold_error"):
        assert fields[name]["type"][0] == "null" and fields[name]["default"] is None


def test_connection_is_read_only_even_without_authorizer(db: Path) -> None:
    conn = Sandbox(Limits()).open(str(db))
    conn.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM customers")
    conn.close()


@pytest.mark.parametrize("sql", ["-- only a comment", ";", "/* nothing */ ;", " ; ; "])
def test_no_result_set_is_not_a_query(step: SqlEvalStep, sql: str) -> None:
    # The gold returns no rows either: an answer that ran nothing must still not match it.
    out = _eval(step, sql, "SELECT name FROM customers WHERE 0")
    assert (out["exec_pass"], out["exec_error"]) == (False, "not a query")
    assert out["result_signature"] is None and out["gold_match"] is False


def test_empty_result_is_still_a_result(step: SqlEvalStep) -> None:
    out = _eval(step, "SELECT id FROM orders WHERE 0", "SELECT id FROM orders WHERE 1 = 2")
    assert out["exec_pass"] is True and out["gold_match"] is True


def test_order_by_without_limit_is_ignored_with_limit_it_is_not(step: SqlEvalStep) -> None:
    ascending = "SELECT id FROM orders ORDER BY id LIMIT 3"
    descending = "SELECT id FROM orders ORDER BY id DESC LIMIT 3"
    assert (
        _eval(step, "SELECT id FROM orders ORDER BY id DESC", "SELECT id FROM orders")["gold_match"] is True
    )
    assert _eval(step, ascending, descending)["gold_match"] is False


def test_result_size_capped(db: Path) -> None:
    step = SqlEvalStep(db_path=str(db), max_result_bytes=100_000)
    out = _eval(step, "SELECT zeroblob(30000) FROM orders")
    assert (out["exec_pass"], out["exec_error"]) == (False, "result size: more than 100000 bytes")
    assert _eval(step, "SELECT zeroblob(30000) FROM orders LIMIT 3")["exec_pass"] is True
    step.close()


def test_default_caps_values_and_results_near_a_megabyte(step: SqlEvalStep) -> None:
    assert _eval(step, "SELECT randomblob(1000001)")["exec_error"] == (
        "value size: a string or blob over 1000000 bytes"
    )
    assert _eval(step, "SELECT randomblob(600000) FROM orders LIMIT 2")["exec_error"] == (
        "result size: more than 1000000 bytes"
    )
    assert _eval(step, "SELECT randomblob(600000)")["exec_pass"] is True


def test_sql_longer_than_the_limit_is_refused_before_any_worker(step: SqlEvalStep) -> None:
    out = _eval(step, "SELECT 1" + " " * 100_000)
    assert out["exec_error"] == "sql length: more than 100000 bytes"
    assert step._pool is None


def test_a_pipeline_naming_a_missing_database_does_not_load(tmp_path: Path) -> None:
    # Found when the plan is built (produce, serve, replay), one line naming the file: before,
    # every row was dead-lettered and the run rejected.
    absent = tmp_path / "absent.sqlite"
    spec = PipelineSpec.model_validate(
        {
            "name": "missing-db",
            "steps": [
                {"id": "sql_eval", "step": "sql_eval", "params": {"db_path": str(absent)}},
                {
                    "id": "per_row",
                    "step": "sql_eval",
                    "params": {"db_field": "db_id", "db_dir": str(tmp_path / "no")},
                },
            ],
        }
    )
    with pytest.raises(PlanError) as info:
        PipelinePlan.build(spec)
    problems = info.value.problems
    assert any(
        p.startswith("step 'sql_eval' (sql_eval): sql_eval: database ") and str(absent) in p for p in problems
    )
    assert any(p.startswith("step 'per_row' (sql_eval): sql_eval: database folder ") for p in problems)
