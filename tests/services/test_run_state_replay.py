"""A replay's run state: it starts at the stage the replay re-produced, waits for no earlier stage,
and keeps its origin through a snapshot; and the pure helpers the replay command uses."""

from __future__ import annotations

import json

from fastdistill.plan import PipelinePlan
from fastdistill.replay import changed_step, replay_headers, replay_origin
from services.coordinator.run_state import RunState
from shared.pipeline import PipelineSpec

STAGES = ["seeds", "hash", "teacher", "score"]
MARKER = {"source_partition": 0, "source_partitions": 1, "rows_before": 0}
PROGRESS = {"run_id": "r2", "partitions_ended": [0], "input_partitions": 1, "rows_in": 2, "rows_out": 2}


def test_a_replay_ends_when_its_own_stages_have_drained() -> None:
    state = RunState.new("r2", STAGES, dict.fromkeys(STAGES, 1))
    state.add_progress(PROGRESS | {"stage": "score"})  # may arrive before the re-produced input
    state.start_replay(["hash"], ["teacher", "score"], "r1", "teacher")
    state.start_replay(["hash"], ["teacher", "score"], "r1", "teacher")  # every record of the input says so
    assert list(state.stages) == ["hash", "teacher", "score"]
    state.add_rows("hash", [{"source_index": 0}, {"source_index": 1}])
    for stage in ("hash", "teacher", "score"):
        state.add_marker(stage, 0, MARKER)
    assert not state.all_drained()  # the teacher has not reported its final transaction
    state.add_progress(PROGRESS | {"stage": "teacher"})
    assert state.all_drained()

    state.finish({}, now_ms=1)
    restored = RunState.from_json(json.loads(json.dumps(state.to_json())))
    assert restored.replay == {"replay_of": "r1", "from_step": "teacher"}
    assert list(restored.stages) == ["hash", "teacher", "score"]
    assert restored.reports()["replay"] == {"run_id": "r2", "replay_of": "r1", "from_step": "teacher"}
    assert restored.public()["replay"] == state.public()["replay"]


def test_an_ordinary_run_has_no_replay() -> None:
    state = RunState.new("r1", STAGES, dict.fromkeys(STAGES, 1))
    assert state.replay is None and "replay" not in state.reports()


def test_headers_round_trip() -> None:
    assert replay_origin(replay_headers("r1", "teacher")) == ("r1", "teacher")
    assert replay_origin([("other", b"x")]) is None and replay_origin(None) is None


def test_changed_step_is_the_first_whose_own_stage_carries_another_signature() -> None:
    spec = PipelineSpec.load("examples/text2sql/pipeline.yaml")
    plan = PipelinePlan.build(spec)
    chain = [plan.steps[s.id].signature() for s in spec.steps]
    # each stage's records carry the lineage up to and including that stage's step
    lineages = {s.id: chain[: i + 1] for i, s in enumerate(spec.steps)}
    assert changed_step(plan, lineages) is None
    changed = dict(lineages) | {spec.steps[4].id: [*chain[:4], "other"]}
    assert changed_step(plan, changed) == spec.steps[4].id
    missing = {k: v for k, v in lineages.items() if k != spec.steps[-1].id}
    assert changed_step(plan, missing) == spec.steps[-1].id  # a stage the run did not have
