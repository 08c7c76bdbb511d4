"""`fastdistill status` rendering: a run's table covers the stages the run has, bars measured
against its first stage (the seeds, or the stage a replay was re-produced on)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from fastdistill.status_view import render_status
from shared.pipeline import PipelineSpec
from tests.deploy.support import PIPELINE


def _render(states: dict[str, dict[str, Any]]) -> str:
    console = Console(record=True, width=200)
    console.print(render_status(PipelineSpec.load(PIPELINE), states))
    return console.export_text()


def _stage(rows_in: int, rows_out: int) -> dict[str, Any]:
    return {"rows_in": rows_in, "rows_out": rows_out, "drained_partitions": 4, "partitions": 4}


def test_a_replay_shows_only_its_stages_and_its_verdict() -> None:
    state = {
        "status": "done",
        "verdict": {"passed": False, "failures": ["min_total 227.0000 < 500.0000"]},
        "stages": {
            "rule_filter": _stage(0, 227),
            "sql_eval": _stage(227, 227),
            "keep_by_score": _stage(227, 200),
        },
    }
    text = _render({"run-b": state})
    assert "sql_eval" in text and "keep_by_score" in text
    assert "canonicalize" not in text and "seeds" not in text
    assert "gate FAILED: min_total 227.0000 < 500.0000" in text


def test_a_running_run_lists_every_stage_it_has() -> None:
    state = {"status": "running", "stages": {"seeds": _stage(0, 239), "canonicalize": _stage(100, 100)}}
    text = _render({"run-a": state})
    assert "running" in text
    assert text.index("seeds") < text.index("canonicalize")
