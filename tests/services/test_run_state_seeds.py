"""The coordinator never declares a run done while any of its seed rows is unaccounted for: the
seeds' end markers carry `rows_before` (what `produce` wrote), and the seeds stage must have
counted exactly that many rows, whatever the other stages say."""

from __future__ import annotations

import json

from services.coordinator.run_state import RunState

STAGES = ["seeds", "hash"]
PARTITIONS = {"seeds": 2, "hash": 1}


def _seed_marker(rows: int) -> dict[str, int]:
    return {"source_partition": 0, "source_partitions": 1, "rows_before": rows}


def _progress(rows: int) -> dict[str, object]:
    return {"run_id": "r", "stage": "hash", "rows_in": rows, "rows_out": rows, "partitions_ended": [0, 1]}


def _state_with_everything_but(missing: int, produced: int = 10) -> RunState:
    """Every marker and the last progress in, `missing` of the `produced` seed rows not (yet) read."""
    state = RunState.new("r", STAGES, PARTITIONS)
    state.add_rows("seeds", [{"source_index": i} for i in range(produced - missing)])
    for partition in range(2):
        state.add_marker("seeds", partition, _seed_marker(produced))
    state.add_marker("hash", 0, {"source_partition": 0, "source_partitions": 2, "rows_before": 0})
    state.add_marker("hash", 0, {"source_partition": 1, "source_partitions": 2, "rows_before": 0})
    state.add_progress(_progress(produced - missing) | {"input_partitions": 2})
    return state


def test_markers_drained_but_seed_rows_missing_is_not_done() -> None:
    state = _state_with_everything_but(missing=3)
    assert not state.seeds_accounted() and not state.all_drained()
    state.add_rows("seeds", [{"source_index": i} for i in range(7, 10)])
    assert state.seeds_accounted() and state.all_drained()


def test_more_seed_rows_than_produced_is_not_done() -> None:
    """Two copies of one run id (what the registry now refuses): the second copy's rows are
    counted against one produce's total, so the run is never declared done half-way."""
    state = _state_with_everything_but(missing=0)
    assert state.all_drained()
    state.add_rows("seeds", [{"source_index": 0}])
    assert not state.all_drained()


def test_the_expectation_survives_a_snapshot() -> None:
    state = _state_with_everything_but(missing=2)
    restored = RunState.from_json(json.loads(json.dumps(state.to_json())))
    assert restored.seeds_expected == 10 and not restored.all_drained()
    restored.add_rows("seeds", [{"source_index": 8}, {"source_index": 9}])
    assert restored.all_drained()


def test_markers_that_state_no_count_and_replays_are_not_checked() -> None:
    state = RunState.new("r", ["seeds"], {"seeds": 1})
    state.add_rows("seeds", [{"source_index": 0}, {"source_index": 1}])
    state.add_marker("seeds", 0, _seed_marker(0))  # the field's default: not stated
    assert state.seeds_expected is None and state.all_drained()
    # A replay's markers count per partition, not the run: its input stage is not checked.
    replay = RunState.new("r2", ["seeds"], {"seeds": 2})
    replay.start_replay(["seeds"], [], "r1", "canonicalize")
    replay.add_rows("seeds", [{"source_index": 0}, {"source_index": 1}])
    replay.add_marker("seeds", 0, _seed_marker(1))
    replay.add_marker("seeds", 1, _seed_marker(1))
    assert replay.all_drained()


def test_a_snapshot_from_before_the_check_restores() -> None:
    data = _state_with_everything_but(missing=0).to_json()
    del data["seeds_expected"]
    assert RunState.from_json(data).seeds_expected is None
