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


def test_bars_measure_each_stage_against_its_own_input_and_eta_the_share_done() -> None:
    """After dedup (239 -> 227) a finished run is complete, not 227/239; a running one's ETA
    extrapolates the share done along the chain."""
    from fastdistill.status_view import share_done

    spec = PipelineSpec.load(PIPELINE)
    stages = {"seeds": _stage(0, 239), "canonicalize": _stage(239, 239), "hash": _stage(239, 239)}
    stages |= {"dedup": _stage(239, 227)}
    stages |= {s: _stage(227, 227) for s in spec.stages[4:]}
    done = {"status": "done", "started_ms": 1_000, "finished_ms": 11_000, "stages": stages}
    text = _render({"run-a": done})
    assert text.count("100%") == len(spec.stages) and "elapsed 10s" in text and "22.7" in text
    half = dict(stages) | {spec.stages[-1]: _stage(100, 100)}
    running = {"status": "running", "started_ms": 1_000, "stages": half}
    assert abs(share_done(spec, running) - 100 / 227) < 1e-9
    text = Console(record=True, width=200)
    text.print(render_status(spec, {"run-a": running}, now_ms=11_000))
    assert "ETA 13s (44% done)" in text.export_text()
