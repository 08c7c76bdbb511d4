"""The text-to-SQL example's data: seeds validate, gold SQL runs, the planted cases are there."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.seeds import Seed
from services.sql_eval import SqlEvalStep

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "text2sql"
SEEDS = EXAMPLE / "seeds.jsonl"
BAD = EXAMPLE / "seeds_bad.jsonl"
DB = EXAMPLE / "shop.sqlite"


@cache
def seeds() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines() if line.strip()]


def _normalised(seed: dict[str, Any]) -> tuple[str, str]:
    return re.sub(r"\s+", " ", seed["instruction"].strip().lower()), seed["gold_sql"]


@cache
def gold_row_counts() -> dict[str, int]:
    conn = sqlite3.connect(f"{DB.as_uri()}?mode=ro", uri=True)
    try:
        return {sql: len(conn.execute(sql).fetchall()) for sql in {s["gold_sql"] for s in seeds()}}
    finally:
        conn.close()


def test_enough_seeds_and_all_validate() -> None:
    assert len(seeds()) >= 220
    for seed in seeds():
        assert Seed.model_validate(seed).model_dump() == {"db_id": None, **seed}


def test_every_gold_sql_runs_and_answers() -> None:
    assert all(count > 0 for count in gold_row_counts().values())


def test_every_gold_sql_passes_sql_eval() -> None:
    step = SqlEvalStep(db_path=str(DB))
    for sql in gold_row_counts():
        out = step.process_row({"source_index": 0, "sql": sql, "gold_sql": sql})
        assert out is not None and out["exec_pass"] and out["gold_match"], (sql, out["exec_error"])
    step.close()


def test_exact_duplicates() -> None:
    lines = Counter(json.dumps(s, sort_keys=True) for s in seeds())
    assert sum(n - 1 for n in lines.values()) >= 10
    # A task id belongs to one content: only exact copies share one.
    by_id: dict[str, set[str]] = {}
    for seed in seeds():
        by_id.setdefault(seed["task_id"], set()).add(json.dumps(seed, sort_keys=True))
    assert all(len(contents) == 1 for contents in by_id.values())


def test_near_duplicates() -> None:
    first_instruction: dict[tuple[str, str], str] = {}
    near = 0
    for seed in seeds():
        key = _normalised(seed)
        if key in first_instruction and first_instruction[key] != seed["instruction"]:
            near += 1
        first_instruction.setdefault(key, seed["instruction"])
    assert near >= 10


def test_questions_are_varied() -> None:
    distinct = {_normalised(s) for s in seeds()}
    assert len(distinct) >= 200
    assert len({sql for _, sql in distinct}) >= 190


def test_large_answers() -> None:
    counts = gold_row_counts()
    assert sum(1 for s in seeds() if counts[s["gold_sql"]] > 100) >= 10


def test_seed_shape() -> None:
    for seed in seeds():
        assert re.fullmatch(r"text2sql-\d{3}", seed["task_id"])
        assert seed["system_prompt"] == "Return SQL only."
        assert "customers(" in seed["schema"]


def _bad_lines() -> list[str]:
    return [line for line in BAD.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_bad_file_has_enough_cases() -> None:
    assert len(_bad_lines()) >= 15


@pytest.mark.parametrize("index", range(len(_bad_lines())))
def test_every_bad_line_is_rejected(index: int) -> None:
    line = _bad_lines()[index]
    with pytest.raises((json.JSONDecodeError, ValidationError)):
        Seed.model_validate(json.loads(line))


def test_generators_are_deterministic(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    subprocess.run([sys.executable, EXAMPLE / "build_db.py", "--out", db], check=True, capture_output=True)
    assert db.read_bytes() == DB.read_bytes()
    out, bad = tmp_path / "seeds.jsonl", tmp_path / "bad.jsonl"
    command = [sys.executable, EXAMPLE / "make_seeds.py", "--db", db, "--out", out, "--bad-out", bad]
    subprocess.run(command, check=True, capture_output=True)
    assert out.read_bytes() == SEEDS.read_bytes()
    assert bad.read_bytes() == BAD.read_bytes()
