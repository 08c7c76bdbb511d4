"""clean_sql: the first SQL statement in a teacher's free-form answer."""

from __future__ import annotations

import pytest

from services.clean_sql import CleanSqlStep, extract_sql


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("SELECT name FROM users ORDER BY id;", "SELECT name FROM users ORDER BY id;"),
        ("SELECT 1", "SELECT 1;"),
        ("```sql\nSELECT a FROM t;\n```", "SELECT a FROM t;"),
        ("```SQL\nSELECT a FROM t\n```\nThis returns a.", "SELECT a FROM t;"),
        ("Here you go:\n```\nSELECT a FROM t;\n```", "SELECT a FROM t;"),
        ("```sql\nSELECT a\nFROM t", "SELECT a\nFROM t;"),  # fence cut off by max_tokens
        ("SQL: SELECT a FROM t;", "SELECT a FROM t;"),
        ("The answer.\nsql:\nSELECT a FROM t", "SELECT a FROM t;"),
        ("Sure!\nselect a\nfrom t\nExplanation: picks a.", "select a\nfrom t;"),
        ("With the schema above:\nSELECT a FROM t;", "SELECT a FROM t;"),
        ("SELECT a FROM t\nThis query selects a.", "SELECT a FROM t;"),
        ("SELECT a FROM t\nNote: a is unique", "SELECT a FROM t;"),
        ("SELECT a FROM t\nThe query returns a", "SELECT a FROM t;"),
        ("SELECT a FROM t\n\nHere is why: ...", "SELECT a FROM t;"),
        ("SELECT 1; SELECT 2;", "SELECT 1;"),
        ("SELECT * FROM t WHERE s = 'a;b';", "SELECT * FROM t WHERE s = 'a;b';"),
        ('SELECT "x;y" FROM t;', 'SELECT "x;y" FROM t;'),
        ("SELECT a /* ; */ FROM t; DROP TABLE t;", "SELECT a /* ; */ FROM t;"),
        ("SELECT a FROM t -- trailing; comment\n", "SELECT a FROM t -- trailing; comment\n;"),
        ("WITH c AS (SELECT 1) SELECT * FROM c;", "WITH c AS (SELECT 1) SELECT * FROM c;"),
        ("I cannot answer that.", ""),
        ("", ""),
        ("```sql\n\n```", ""),
    ],
)
def test_extract(text: str, sql: str) -> None:
    assert extract_sql(text) == sql


@pytest.mark.parametrize("tag", ["think", "analysis", "reasoning", "THINK"])
def test_reasoning_blocks_are_stripped(tag: str) -> None:
    text = f"<{tag}>Maybe SELECT wrong FROM x;\n```sql\nSELECT bad;\n```</{tag}>\nSELECT right FROM t;"
    assert extract_sql(text) == "SELECT right FROM t;"


def test_unclosed_reasoning_yields_nothing() -> None:
    assert extract_sql("<think>SELECT a FROM t; hmm, let me think more") == ""


def test_closing_tag_without_opening_drops_what_precedes() -> None:
    text = "I need users. SELECT nope;</think>\nSELECT name FROM users;"
    assert extract_sql(text) == "SELECT name FROM users;"


def test_step_reads_and_writes_configured_fields() -> None:
    step = CleanSqlStep(field="gen", output="q")
    out = step.process_row({"source_index": 0, "gen": "```sql\nSELECT 1\n```"})
    assert out is not None and out["q"] == "SELECT 1;" and out["gen"].startswith("```")
    assert [f["name"] for f in step.output_fields()] == ["q"]


def test_step_defaults_and_null_generation() -> None:
    out = CleanSqlStep().process_row({"source_index": 0, "generation": None})
    assert out is not None and out["sql"] == ""
    with pytest.raises(TypeError):
        CleanSqlStep().process_row({"source_index": 0, "generation": 5})
