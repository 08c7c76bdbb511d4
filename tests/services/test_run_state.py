from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.coordinator.layout import QualityLayout
from services.coordinator.run_state import RunState

STAGES = ["seeds", "hash", "score"]
PARTITIONS = {"seeds": 2, "hash": 3, "score": 1}
GATES = {"min_total": 3, "min_exec_pass_rate": 0.5, "max_dead_letters": 2, "min_teacher_score_p50": 0.5}
#: What PipelinePlan.quality_layouts() gives stages of these columns.
INDEX = ("source_index", False)
LAYOUTS = {
    "seeds": QualityLayout((INDEX,)),
    "hash": QualityLayout((INDEX,)),
    "score": QualityLayout((INDEX, ("teacher_score", True)), ("sql",), ("teacher_score",)),
}

Event = tuple[str, Any]


def _marker(source_partition: int, source_partitions: int) -> dict[str, int]:
    return {"source_partition": source_partition, "source_partitions": source_partitions, "rows_before": 0}


def _progress(stage: str, ended: list[int], inputs: int, **counts: Any) -> dict[str, Any]:
    return {
        "run_id": "r",
        "stage": stage,
        "producer": "0",
        "rows_in": 0,
        "rows_out": 0,
        "rows_dropped": 0,
        "rows_errored": 0,
        "batches": 0,
        "batch_seconds": [],
        "row_seconds": [],
        "partitions_ended": ended,
        "input_partitions": inputs,
        "first_ms": 0,
        "last_ms": 0,
    } | counts


def _events(n_rows: int, rnd: random.Random) -> list[Event]:
    """A complete run: rows, progress, dead letters, then markers (a marker follows its partition's rows)."""
    seeds = [{"source_index": i, "task_id": f"t{i}"} for i in range(n_rows)]
    hashed = [row | {"sample_id": f"s{i:03d}"} for i, row in enumerate(seeds)]
    scored = [
        row
        | {
            "exec_pass": i % 3 != 0,
            "gold_match": i % 2 == 0 or None,
            "teacher_score": (i % 3) / 2,
            "keep": i % 4 != 0,
        }
        for i, row in enumerate(hashed)
    ]
    events: list[Event] = []
    for stage, rows in (("seeds", seeds), ("hash", hashed), ("score", scored)):
        events += [("rows", (stage, rows[i : i + 4])) for i in range(0, len(rows), 4)]
    events += [
        (
            "progress",
            _progress(
                "hash",
                [],
                2,
                rows_in=n_rows,
                rows_out=n_rows,
                batches=2,
                batch_seconds=[0.01, 0.02],
                first_ms=1_000,
                last_ms=2_000,
            ),
        ),
        (
            "progress",
            _progress(
                "score",
                [],
                3,
                rows_in=n_rows,
                rows_out=n_rows,
                rows_dropped=1,
                batches=1,
                batch_seconds=[0.5],
                row_seconds=[0.1 * i for i in range(n_rows)],
                first_ms=1_500,
                last_ms=4_000,
            ),
        ),
        ("dead_letter", {"step": "score", "error_type": "ValueError"}),
        ("dead_letter", {"step": "score", "error_type": "ValueError"}),
    ]
    rnd.shuffle(events)
    for stage, upstream in (("seeds", 1), ("hash", 2), ("score", 3)):
        events += [
            ("marker", (stage, p, _marker(s, upstream)))
            for p in range(PARTITIONS[stage])
            for s in range(upstream)
        ]
    events += [("progress", _progress("hash", [0, 1], 2)), ("progress", _progress("score", [0, 1, 2], 3))]
    return events


def _apply(state: RunState, event: Event) -> None:
    kind, payload = event
    if kind == "rows":
        state.add_rows(*payload)
    elif kind == "marker":
        state.add_marker(*payload)
    elif kind == "progress":
        state.add_progress(payload)
    else:
        state.add_dead_letter(payload)


def _run(events: list[Event], snapshot_at: int | None = None) -> RunState:
    state = RunState.new("r", STAGES, PARTITIONS, layouts=LAYOUTS)
    for i, event in enumerate(events):
        if i == snapshot_at:
            state = RunState.from_json(json.loads(json.dumps(state.to_json())))
        assert state.status == "running"
        _apply(state, event)
    assert state.all_drained()
    state.finish({"score": GATES}, now_ms=10_000)
    return state


def test_hand_computed_run() -> None:
    state = _run(_events(6, random.Random(0)))
    public = state.public()
    assert public["status"] == "done"
    assert public["started_ms"] == 1_000 and public["finished_ms"] == 10_000
    assert public["stages"]["seeds"] == {
        "rows_out": 6,
        "rows_seen": 6,
        "drained_partitions": 2,
        "partitions": 2,
    }
    assert public["stages"]["score"] == {
        "rows_in": 6,
        "rows_out": 6,
        "rows_dropped": 1,
        "rows_errored": 0,
        "rows_stopped": 0,
        "batches": 1,
        "rows_seen": 6,
        "drained_partitions": 1,
        "partitions": 1,
    }
    assert public["dead_letters"] == {"score": {"ValueError": 2}}
    # exec_pass for i = 1, 2, 4, 5 of 0..5
    assert state.verdict == {"passed": True, "failures": []}
    assert state.rows_out() == {"seeds": 6, "hash": 6, "score": 6}
    quality = state.final_quality()
    assert quality["exec_pass_rate"] == 4 / 6 and quality["p_keep"] == 4 / 6
    assert quality["gold_match_rate"] == 1.0  # only even rows have gold_match, all True
    assert quality["teacher_score_mean"] == 0.5
    assert quality["teacher_score_p50"] == 0.5 and quality["teacher_score_max"] == 1.0
    assert quality["rows_dropped"] == 1 and quality["dead_letters"] == 2
    assert state.stage_metrics("seeds")["source_index_max"] == 5
    assert state.stage_metrics("seeds")["rows_in"] is None  # nobody counts rows into the seeds
    reports = state.reports()
    assert [m["stage"] for m in reports["manifest"]] == STAGES
    assert (
        reports["manifest"][1]["min_sample_id"] == "s000"
        and reports["manifest"][1]["max_sample_id"] == "s005"
    )
    assert reports["timing"]["wall_seconds"] == 3.0
    assert reports["timing"]["steps"]["hash"]["batch_seconds"]["count"] == 2
    score = reports["quality"][2]
    assert score["flow"] == {
        "rows_in": 6,
        "rows_out": 6,
        "rows_dropped": 1,
        "rows_errored": 0,
        "dead_letters": 2,
    }
    assert score["metric_sets"] == ["sql"] and reports["quality"][0]["metric_sets"] == []
    assert score["columns"]["teacher_score"]["histogram"] == [
        {"low": 0.0, "high": 0.0, "count": 2},
        {"low": 0.5, "high": 0.5, "count": 2},
        {"low": 1.0, "high": 1.0, "count": 2},
    ]
    assert public["reports"] == reports and public["report_html"] == "reports/report.html"
    json.dumps(public)


def test_not_drained_until_markers_and_final_progress_arrived() -> None:
    events = _events(4, random.Random(1))
    state = RunState.new("r", STAGES, PARTITIONS)
    for event in events[:-1]:
        _apply(state, event)
        assert not state.all_drained()
    assert state.public()["reports"] is None and state.verdict is None
    _apply(state, events[-1])
    assert state.all_drained()


def test_failed_gate_and_gate_config_error() -> None:
    state = RunState.new("r", ["seeds"], {"seeds": 1})
    state.add_rows("seeds", [{"source_index": 0}])
    state.add_marker("seeds", 0, _marker(0, 1))
    assert state.all_drained()
    # rows_in of the seeds: nobody counts them, so the gate cannot pass
    state.finish({"seeds": {"min_total": 2, "min_rows_in": 1}}, 1)
    assert state.verdict == {
        "passed": False,
        "failures": ["total 1.0000 < min_total 2.0000", "rows_in missing (min_rows_in 1.0000)"],
    }
    # exec_pass_rate is no metric of a stage without exec_pass (no sql set runs there)
    state.finish({"seeds": {"min_exec_pass_rate": 0.5}}, 1)
    assert state.verdict is not None and not state.verdict["passed"]
    (failure,) = state.verdict["failures"]
    assert failure.startswith(
        "gate configuration error: unknown quality gate(s) min_exec_pass_rate on stage seeds: "
    )
    assert failure.endswith("rows_errored, dead_letters") and "\n" not in failure


def test_progress_of_unknown_stage_is_ignored() -> None:
    state = RunState.new("r", STAGES, PARTITIONS)
    state.add_progress(_progress("sink", [0], 1, rows_out=5))
    assert state.rows_out() == {"seeds": 0, "hash": 0, "score": 0}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.randoms(use_true_random=False), st.data())
def test_snapshot_mid_stream_gives_identical_reports(
    n_rows: int, rnd: random.Random, data: st.DataObject
) -> None:
    events = _events(n_rows, rnd)
    cut = data.draw(st.integers(0, len(events) - 1))
    straight, resumed = _run(events), _run(events, snapshot_at=cut)
    assert resumed.reports() == straight.reports()
    assert resumed.public() == straight.public()
    assert resumed.to_json() == straight.to_json()
    # and arrival order of the data does not matter either
    reordered = _events(n_rows, random.Random(rnd.random()))
    assert _run(reordered).reports() == straight.reports()
