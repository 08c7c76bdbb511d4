"""Early stop in the run state: when a limited run is due to stop, which rows it releases, and
what its over-fetch figures say; all of it survives a snapshot."""

from __future__ import annotations

import json

from services.coordinator.run_state import RunState

STAGES = ["seeds", "teacher", "final"]
PARTITIONS = dict.fromkeys(STAGES, 2)


def _progress(stage: str, rows_in: int, rows_stopped: int) -> dict[str, object]:
    return {"run_id": "r", "stage": stage, "rows_in": rows_in, "rows_stopped": rows_stopped}


def test_a_limited_run_stops_at_its_limit_and_keeps_the_lowest_indexes() -> None:
    state = RunState.new("r", STAGES, PARTITIONS)
    state.set_limit(3)
    state.add_rows("final", [{"source_index": i} for i in (9, 4)])
    assert not state.reached_limit()
    state.add_rows("final", [{"source_index": i} for i in (7, 1)])
    assert state.reached_limit()
    state.stopped_ms = 1_000
    assert not state.reached_limit()  # stopped once
    state.add_rows("final", [{"source_index": 2}])
    state.add_progress(_progress("teacher", 10, 4))
    state.add_progress(_progress("final", 6, 1))

    restored = RunState.from_json(json.loads(json.dumps(state.to_json())))
    assert restored.taken == [1, 2, 4]
    early = restored.early_stop()
    assert early == {
        "limit": 3,
        "stopped_at": "1970-01-01T00:00:01.000+00:00",
        "final_rows": 5,
        "released_rows": 3,
        "final_rows_over_limit": 2,
        "seeds_needed": 5,
        "seeds_consumed": 6,
        "seeds_over_fetch": 1,
        "rows_processed": {"teacher": 6, "final": 5},
        "rows_stopped": {"teacher": 4, "final": 1},
    }
    assert restored.reports()["early_stop"] == early


def test_a_run_without_limit_has_no_early_stop_and_an_old_snapshot_still_loads() -> None:
    state = RunState.new("r", STAGES, PARTITIONS)
    state.add_rows("final", [{"source_index": 0}])
    assert not state.reached_limit() and state.early_stop() is None
    assert "early_stop" not in state.reports()
    snapshot = state.to_json()
    for key in ("limit", "stopped_ms", "taken"):
        del snapshot[key]
    assert RunState.from_json(snapshot).early_stop() is None
