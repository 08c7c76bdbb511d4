"""filter_by_bool: drops rows whose field is not the wanted value."""

from __future__ import annotations

import pytest

from services.filter_by_bool import FilterByBoolStep


@pytest.mark.parametrize(
    ("value", "kept"),
    [(True, True), (False, False), (None, False), (1, False), ("true", False)],
)
def test_default_keeps_only_true(value: object, kept: bool) -> None:
    row = {"source_index": 0, "keep": value}
    assert (FilterByBoolStep().process_row(row) is row) is kept


def test_missing_field_dropped() -> None:
    assert FilterByBoolStep().process_row({"source_index": 0}) is None


def test_custom_field_and_value() -> None:
    step = FilterByBoolStep(field="is_duplicate", value=False)
    assert step.process_row({"source_index": 0, "is_duplicate": False}) is not None
    assert step.process_row({"source_index": 1, "is_duplicate": True}) is None
    assert step.output_fields() == []
