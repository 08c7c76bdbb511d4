"""rule_filter: never drops; sets keep and reject_reason from the stripped length."""

from __future__ import annotations

import pytest

from services.rule_filter import RuleFilterStep


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty_output"),
        ("", "empty_output"),
        ("   \n\t", "empty_output"),
        ("SELECT", "too_short"),
        ("  SELECT 1  ", "ok"),  # 8 chars once stripped
        ("SELECT 1;", "ok"),
        ("x" * 21, "too_long"),
        ("x" * 20, "ok"),
    ],
)
def test_reasons(value: str | None, reason: str) -> None:
    step = RuleFilterStep(field="sql", min_chars=8, max_chars=20)
    out = step.process_row({"source_index": 0, "sql": value})
    assert out is not None
    assert out["reject_reason"] == reason
    assert out["keep"] is (reason == "ok")
    assert out["sql"] == value  # the text itself is untouched


def test_missing_field_is_empty_output() -> None:
    out = RuleFilterStep(field="sql").process_row({"source_index": 0})
    assert out is not None and (out["keep"], out["reject_reason"]) == (False, "empty_output")


def test_defaults_accept_one_char() -> None:
    out = RuleFilterStep(field="t").process_row({"source_index": 0, "t": "x"})
    assert out is not None and out["keep"] is True


def test_non_string_is_an_error() -> None:
    with pytest.raises(TypeError):
        RuleFilterStep(field="t").process_row({"source_index": 0, "t": 5})


def test_params_validated() -> None:
    with pytest.raises(ValueError):
        RuleFilterStep(field="t", min_chars=10, max_chars=5)
    with pytest.raises(ValueError):
        RuleFilterStep(field="t", min_chars=-1)


def test_output_fields() -> None:
    fields = {f["name"]: f for f in RuleFilterStep(field="t").output_fields()}
    assert fields["keep"]["type"] == "boolean" and fields["keep"]["default"] is True
    assert set(fields) == {"keep", "reject_reason"}
