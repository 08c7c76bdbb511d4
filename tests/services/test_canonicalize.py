"""canonicalize: canonical JSON of the chosen fields."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.canonicalize import CanonicalizeStep, canonical_json

ROW = {"source_index": 3, "task_id": "t-1", "instruction": "Zürich?", "gold_sql": None, "n": 2}


def test_sorted_ascii_compact() -> None:
    out = CanonicalizeStep(fields=["task_id", "instruction", "n"]).process_row(ROW)
    assert out is not None
    assert out["canonical_input"] == '{"instruction":"Z\\u00fcrich?","n":2,"task_id":"t-1"}'
    assert out["source_index"] == 3 and out["task_id"] == "t-1"  # the row passes through


def test_field_order_does_not_matter() -> None:
    a = CanonicalizeStep(fields=["task_id", "instruction"]).process_row(ROW)
    b = CanonicalizeStep(fields=["instruction", "task_id"]).process_row(ROW)
    assert a is not None and b is not None
    assert a["canonical_input"] == b["canonical_input"]


def test_nulls_dropped_by_default_kept_on_request() -> None:
    dropped = CanonicalizeStep(fields=["task_id", "gold_sql"]).process_row(ROW)
    kept = CanonicalizeStep(fields=["task_id", "gold_sql"], drop_nulls=False).process_row(ROW)
    assert dropped is not None and kept is not None
    assert dropped["canonical_input"] == '{"task_id":"t-1"}'
    assert kept["canonical_input"] == '{"gold_sql":null,"task_id":"t-1"}'


def test_missing_field_strict_raises() -> None:
    with pytest.raises(ValueError, match="canonicalize: missing field 'schema'"):
        CanonicalizeStep(fields=["task_id", "schema"]).process_row(ROW)


def test_missing_field_lenient_skips() -> None:
    out = CanonicalizeStep(fields=["task_id", "schema"], strict=False).process_row(ROW)
    assert out is not None and out["canonical_input"] == '{"task_id":"t-1"}'


def test_nested_values_are_canonical_too() -> None:
    row = {"source_index": 0, "p": {"max_tokens": 128, "temperature": 0.2}}
    out = CanonicalizeStep(fields=["p"], output="canon").process_row(row)
    assert out is not None and out["canon"] == '{"p":{"max_tokens":128,"temperature":0.2}}'


def test_output_field_renamed() -> None:
    fields = CanonicalizeStep(fields=["task_id"], output="canon").output_fields()
    assert [f["name"] for f in fields] == ["canon"]


def test_params_validated() -> None:
    with pytest.raises(ValueError):
        CanonicalizeStep(fields=[])
    with pytest.raises(ValueError):
        CanonicalizeStep(fields=["a"], unknown=1)


@given(st.dictionaries(st.text(), st.integers() | st.text() | st.booleans() | st.none()))
def test_canonical_json_round_trips_and_is_ascii(value: dict[str, object]) -> None:
    text = canonical_json(value)
    assert text.isascii()
    assert json.loads(text) == value
    assert canonical_json(dict(reversed(list(value.items())))) == text
