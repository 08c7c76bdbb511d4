"""`fastdistill steps` lists the catalogue with params, operational ones marked."""

from __future__ import annotations

from typer.testing import CliRunner

from fastdistill.cli import app


def test_steps_lists_every_catalogue_step_with_its_params() -> None:
    result = CliRunner().invoke(app, ["steps"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in (
        "canonicalize",
        "hash",
        "dedup",
        "text_generation",
        "llm_judge",
        "sql_eval",
        "keep_by_score",
    ):
        assert f"│ {name}" in result.output
    # an LLM step's endpoint params, nested under `llm.`
    assert "llm.max_concurrency: int = 32 (operational)" in result.output
    assert "llm.model: str = 'teacher-sim'" in result.output
    assert "min_score: float = 0.5" in result.output
