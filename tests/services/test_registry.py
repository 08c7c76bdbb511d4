"""The step catalogue: names, construction, readable errors, and the example pipeline's params."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.registry import STEPS, build_step
from services.teacher.step import TeacherStep
from shared.step import Step

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "text2sql" / "pipeline.yaml"
CATALOGUE = {
    "canonicalize", "hash", "dedup", "teacher", "clean_sql", "rule_filter",
    "filter_by_bool", "sql_eval", "score", "keep_by_score",
}  # fmt: skip


def test_catalogue_names() -> None:
    assert set(STEPS) == CATALOGUE
    assert STEPS["teacher"] is TeacherStep
    for name, step_class in STEPS.items():
        assert issubclass(step_class, Step) and step_class.name == name


def test_build_step_validates_params() -> None:
    step = build_step("rule_filter", {"field": "sql", "min_chars": 8})
    assert step.params.model_dump()["min_chars"] == 8
    with pytest.raises(ValueError):
        build_step("rule_filter", {"field": "sql", "min_char": 8})


def test_unknown_step_lists_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        build_step("sql_evaluate", {})
    message = str(info.value)
    assert message.startswith("unknown step 'sql_evaluate'; known steps: canonicalize, clean_sql")
    assert "teacher" in message


def test_example_pipeline_builds_with_these_params() -> None:
    spec = yaml.safe_load(PIPELINE.read_text())
    for entry in spec["steps"]:
        step = build_step(entry["step"], entry.get("params") or {})
        for field in step.output_fields():
            assert {"name", "type"} <= set(field)
