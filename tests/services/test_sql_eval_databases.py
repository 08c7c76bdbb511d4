"""sql_eval with a database per row (`db_field` + `db_dir`): Spider layouts, only files inside the
folder, each opened with the same sandbox. Real SQLite files built here, real worker processes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.sql_eval import SqlEvalParams, SqlEvalStep, result_signature
from services.sql_eval.databases import DatabaseFolder
from tests.services.shop_db import copy_shop_db, sha256_of
from tests.services.spider_dbs import QUESTIONS, build_databases, seeds


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "spider"
    root.mkdir()
    build_databases(root)
    return root


@pytest.fixture
def step(folder: Path) -> Iterator[SqlEvalStep]:
    instance = SqlEvalStep(db_field="db_id", db_dir=str(folder))
    yield instance
    instance.close()


def _row(db_id: object, sql: str | None, gold: str | None = None) -> dict[str, object]:
    return {"source_index": 0, "db_id": db_id, "sql": sql, "gold_sql": gold}


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_spider_seeds_run_against_their_own_database(step: SqlEvalStep, folder: Path) -> None:
    before = _tree(folder)
    outs = [
        step.process_row({"source_index": i, **seed, "sql": seed["gold_sql"]})
        for i, seed in enumerate(seeds())
    ]
    by_question = {(o["db_id"], o["instruction"]): o for o in outs if o is not None}
    for db_id, question, _ in QUESTIONS[:-1]:
        out = by_question[(db_id, question)]
        assert (out["exec_pass"], out["gold_match"], out["gold_error"]) == (True, True, None), (
            db_id,
            question,
        )
    # The same SQL text on three databases: three answers.
    items = {
        db: by_question[(db, "How many items are there?")]["result_signature"]
        for db in ("concert_singer", "pets_1", "world_1")
    }
    assert items == {
        "concert_singer": result_signature([[2]]),
        "pets_1": result_signature([[3]]),
        "world_1": result_signature([[1]]),
    }
    broken = by_question[("world_1", "How many singers live in the world?")]
    assert (broken["exec_pass"], broken["gold_match"], broken["gold_error"]) == (
        False,
        None,
        "no such table: singer",
    )
    assert _tree(folder) == before  # nothing written, no -journal/-wal/-shm beside any file


def test_gold_cache_is_per_database(step: SqlEvalStep) -> None:
    # One gold text, three databases: three cache entries, each with its own result.
    for db_id, count in (("concert_singer", 2), ("pets_1", 3), ("world_1", 1)):
        out = step.process_row(_row(db_id, f"SELECT {count}", "SELECT count(*) FROM items"))
        assert out is not None and out["gold_match"] is True
    assert len(step._gold) == 3


def test_a_teacher_answer_for_another_database_does_not_match(step: SqlEvalStep) -> None:
    out = step.process_row(_row("pets_1", "SELECT count(*) FROM singer", "SELECT count(*) FROM pets"))
    assert out is not None and (out["exec_error"], out["gold_match"]) == ("no such table: singer", False)


@pytest.mark.parametrize(
    "db_id",
    [
        "../spider/pets_1",
        "/etc/passwd",
        "pets_1/pets_1",
        "..",
        ".",
        "",
        "pets_1.sqlite",
        "-rf",
        None,
        5,
        "a b",
        "x" * 129,
    ],
)
def test_unsafe_or_invalid_names_are_row_errors(step: SqlEvalStep, db_id: object) -> None:
    with pytest.raises(ValueError, match="is not a safe name"):
        step.process_row(_row(db_id, "SELECT 1"))


def test_missing_database_is_a_row_error_naming_it(step: SqlEvalStep) -> None:
    with pytest.raises(FileNotFoundError, match="no database 'flight_2'"):
        step.process_row(_row("flight_2", "SELECT 1"))


def test_symlink_out_of_the_folder_is_refused(step: SqlEvalStep, folder: Path, tmp_path: Path) -> None:
    outside = copy_shop_db(tmp_path)
    (folder / "shop.sqlite").symlink_to(outside)
    (folder / "shop2").mkdir()
    (folder / "shop2" / "shop2.sqlite").symlink_to(outside)
    (folder / "links").symlink_to(tmp_path, target_is_directory=True)
    for db_id in ("shop", "shop2"):
        with pytest.raises(ValueError, match="resolves outside"):
            step.process_row(_row(db_id, "SELECT count(*) FROM customers"))


def test_symlink_inside_the_folder_is_followed(step: SqlEvalStep, folder: Path) -> None:
    (folder / "alias.sqlite").symlink_to(folder / "world_1.sqlite")
    out = step.process_row(_row("alias", "SELECT count(*) FROM country", "SELECT 4"))
    assert out is not None and out["gold_match"] is True


def test_a_folder_in_place_of_a_file_is_not_a_database(step: SqlEvalStep, folder: Path) -> None:
    (folder / "empty" / "empty.sqlite").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no database 'empty'"):
        step.process_row(_row("empty", "SELECT 1"))


def test_each_database_gets_the_sandbox(step: SqlEvalStep, folder: Path) -> None:
    before = _tree(folder)
    for db_id in ("concert_singer", "pets_1", "world_1"):
        for sql in (
            "DELETE FROM items",
            "ATTACH 'x.sqlite' AS x",
            "PRAGMA query_only = 0",
            "CREATE TABLE t (x)",
        ):
            out = step.process_row(_row(db_id, sql))
            assert out is not None and out["exec_error"] == "not authorized", (db_id, sql)
        runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
        out = step.process_row(_row(db_id, runaway))
        assert out is not None and out["exec_error"] == "work budget: over 10000000 VM steps"
    assert _tree(folder) == before


def test_more_databases_than_a_worker_keeps_open(tmp_path: Path) -> None:
    # A worker keeps 8 connections; twelve databases in turn, twice, still answer each from its own.
    for i in range(12):
        path = tmp_path / f"db_{i}.sqlite"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.commit()
        conn.close()
    step = SqlEvalStep(db_field="db", db_dir=str(tmp_path), workers=1)
    for _ in range(2):
        for i in range(12):
            out = step.process_row({"source_index": i, "db": f"db_{i}", "sql": "SELECT x FROM t"})
            assert out is not None and out["result_signature"] == result_signature([[i]])
    step.close()


def test_rows_of_different_databases_concurrently(step: SqlEvalStep) -> None:
    rows = [{"source_index": i, **s, "sql": s["gold_sql"]} for i, s in enumerate(seeds()) for _ in range(3)]

    async def run_all() -> list[dict[str, object] | None]:
        return await asyncio.gather(*(step.process_row_async(r) for r in rows))

    outs = asyncio.run(run_all())
    assert sum(1 for o in outs if o is not None and o["gold_match"] is True) == 3 * (len(QUESTIONS) - 1)


def test_exactly_one_database_source(folder: Path, tmp_path: Path) -> None:
    db = copy_shop_db(tmp_path)
    for params in (
        {"db_path": str(db), "db_field": "db_id", "db_dir": str(folder)},
        {"db_path": str(db), "db_dir": str(folder)},
        {"db_path": str(db), "db_field": "db_id"},
        {"db_field": "db_id"},
        {"db_dir": str(folder)},
        {},
    ):
        with pytest.raises(ValidationError, match="db_path"):
            SqlEvalParams.model_validate(params)


def test_missing_folder_is_an_error_when_built(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="database folder"):
        SqlEvalStep(db_field="db_id", db_dir=str(tmp_path / "absent"))


def test_folder_lookups_are_bounded_and_remembered(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.sql_eval.databases._CACHE_SIZE", 2)
    lookup = DatabaseFolder(folder)
    for db_id in ("concert_singer", "pets_1", "world_1", "world_1"):
        assert lookup.path(db_id).is_file()
    assert list(lookup._found) == ["pets_1", "world_1"]
    assert lookup.path("pets_1") == (folder / "pets_1" / "pets_1.sqlite").resolve()


def test_relative_folder_resolved_when_built(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder.parent)
    step = SqlEvalStep(db_field="db_id", db_dir=folder.name)
    monkeypatch.chdir(os.sep)
    out = step.process_row(_row("world_1", "SELECT count(*) FROM country"))
    assert out is not None and out["result_signature"] == result_signature([[4]])
    step.close()
