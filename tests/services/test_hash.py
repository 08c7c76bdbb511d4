"""hash: SHA-256 over canonical JSON of each field, joined with '|'."""

from __future__ import annotations

import hashlib

import pytest

from services.hashing import HashStep

ROW = {"source_index": 0, "task_id": "text2sql-001", "canonical_input": '{"a":1}', "n": 5}


def test_default_fields_and_output() -> None:
    out = HashStep().process_row(ROW)
    expected = hashlib.sha256(b'"text2sql-001"|"{\\"a\\":1}"').hexdigest()
    assert out is not None and out["sample_id"] == expected
    assert out["task_id"] == "text2sql-001"


def test_non_string_fields_serialised_as_json() -> None:
    out = HashStep(fields=["n", "task_id"], output="h").process_row(ROW)
    assert out is not None and out["h"] == hashlib.sha256(b'5|"text2sql-001"').hexdigest()


def test_separator_inside_values_cannot_collide() -> None:
    step = HashStep(fields=["a", "b"])
    one = step.process_row({"source_index": 0, "a": "x|y", "b": "z"})
    two = step.process_row({"source_index": 1, "a": "x", "b": "y|z"})
    assert one is not None and two is not None
    assert one["sample_id"] != two["sample_id"]


def test_deterministic_and_content_sensitive() -> None:
    step = HashStep()
    same = step.process_row(dict(ROW))
    other = step.process_row({**ROW, "canonical_input": '{"a":2}'})
    first = step.process_row(ROW)
    assert first is not None and same is not None and other is not None
    assert first["sample_id"] == same["sample_id"] != other["sample_id"]


def test_missing_field_raises() -> None:
    with pytest.raises(ValueError, match="hash: missing field 'canonical_input'"):
        HashStep().process_row({"source_index": 0, "task_id": "x"})


def test_output_fields_and_name() -> None:
    assert HashStep.name == "hash"
    assert [f["name"] for f in HashStep(output="key").output_fields()] == ["key"]
