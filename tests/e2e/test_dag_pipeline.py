"""Pipelines as DAGs on the real broker, every service a process.

- A diamond (fan-out to two branches, joined by key) moves 20,000 rows exactly once, also with
  a SIGKILL of a branch service and of the join mid-run.
- A route sends every row to exactly the branches its function selects (counted per branch by
  the coordinator); a one-to-many step's children have the same ids in two runs and group back
  into their parents; a gate on an inner stage blocks the release of a run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fastdistill.local_stack import LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.runs import run_dir, run_states, wait_for_release
from shared.config import KafkaSettings
from shared.pipeline import PipelineSpec
from tests.runtime.harness import create_topics, read_all, rows_of, wait_rows_out, write_pipeline, write_seeds
from tests.runtime.steps import pick_branch

pytestmark = pytest.mark.kafka

N = 20_000
#: CPU a row costs in each branch: 20,000 rows keep them busy long enough for kills to land mid-run.
ROW_COST_S = 0.0003


@contextmanager
def _stack(tmp_path: Path, bootstrap: str, steps: list[dict[str, Any]], **extra: Any) -> Iterator[LocalStack]:
    sink = {"output_dir": str(tmp_path / "out"), "await_gate": True}
    path = write_pipeline(tmp_path, f"dag-{uuid.uuid4().hex[:8]}", steps, sink=sink, **extra)
    spec = PipelineSpec.load(path)
    create_topics(KafkaSettings(bootstrap_servers=bootstrap), spec)
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SESSION_TIMEOUT_MS": "6000"}
    stack = LocalStack(path, tmp_path / "stack", env)
    stack.add_pipeline_services()
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _dataset(spec: PipelineSpec, run_id: str, stage: str) -> list[dict[str, Any]]:
    lines = (run_dir(spec, run_id) / stage / "data.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


DIAMOND = [
    {"id": "keyed", "step": "tests.runtime.steps:Keyed"},
    {
        "id": "left",
        "step": "tests.runtime.steps:Tag",
        "params": {"tag": "l", "row_cost_s": ROW_COST_S},
        "inputs": ["keyed"],
        "max_buffered_rows": 200,
    },
    {"id": "right", "step": "tests.runtime.steps:Tag", "params": {"tag": "r"}, "inputs": ["keyed"]},
    {"id": "both", "step": "join", "inputs": ["left", "right"], "max_buffered_rows": 200},
]


def test_a_diamond_moves_every_row_exactly_once_through_kills_of_a_branch_and_the_join(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    with _stack(tmp_path, kafka_bootstrap, DIAMOND) as stack:
        spec = stack.spec
        stack.produce(write_seeds(tmp_path / "seeds.jsonl", N), "diamond")
        left = stack.services["left"]
        assert wait_rows_out(left.port, "left", N / 5, timeout_s=120) < N, "the kill must land mid-run"
        stack.kill("left")
        stack.restart("left")
        joined = wait_rows_out(stack.services["both"].port, "both", N / 3, timeout_s=180)
        assert joined < N, "the join's kill must land mid-run"
        stack.kill("both")
        stack.restart("both")
        result = wait_for_release(spec, "diamond", 300, stack)
        rows = _dataset(spec, "diamond", "both")
        indexes = [r["source_index"] for r in rows]
        assert len(indexes) == N, (
            f"{len(indexes) - len(set(indexes))} duplicated, {N - len(set(indexes))} lost"
        )
        assert indexes == list(range(N)) and result["rows"] == N
        assert all(r["tag_l"] == f"l:{r['text']}" and r["tag_r"] == f"r:{r['text']}" for r in rows)
        assert all(r["join_missing"] == [] for r in rows)
        state = run_states(spec)["diamond"]
        assert state["stages"]["left"]["rows_out"] == state["stages"]["right"]["rows_out"] == N
        assert state["stages"]["both"]["rows_in"] == 2 * N and state["stages"]["both"]["rows_out"] == N


ROUTED = [
    {"id": "keyed", "step": "tests.runtime.steps:Keyed", "route": "tests.runtime.steps:pick_branch"},
    {"id": "left", "step": "tests.runtime.steps:Tag", "params": {"tag": "l"}, "inputs": ["keyed"]},
    {"id": "right", "step": "tests.runtime.steps:Tag", "params": {"tag": "r"}, "inputs": ["keyed"]},
    {"id": "fan", "step": "tests.runtime.steps:Fan", "params": {"n": 4}, "inputs": ["right"]},
    {"id": "grouped", "step": "group_generations", "params": {"collect": {"variant": "variants"}}},
]


def test_routes_fan_out_and_grouping_and_a_gate_on_an_inner_stage(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    n, few = 400, 40
    # `right` (an inner stage: fan reads it) gets the odd rows and every tenth: 240 of 400 pass
    # the gate, 24 of 40 do not
    gates = {"right": {"min_total": 100}}
    with _stack(tmp_path, kafka_bootstrap, ROUTED, gates=gates) as stack:
        spec = stack.spec
        seeds = write_seeds(tmp_path / "seeds.jsonl", n)
        for run_id in ("routed-1", "routed-2"):
            stack.produce(seeds, run_id)
        stack.produce(write_seeds(tmp_path / "few.jsonl", few), "routed-few")
        results = {r: wait_for_release(spec, r, 300, stack) for r in ("routed-1", "routed-2", "routed-few")}
        states = run_states(spec)

        # every row went exactly where the route function sent it, per branch
        expected = {"left": 0, "right": 0}
        for i in range(n):
            for branch in pick_branch({"source_index": i}):
                expected[branch] += 1
        for run_id in ("routed-1", "routed-2"):
            stages = states[run_id]["stages"]
            assert {b: stages[b]["rows_in"] for b in expected} == expected
            assert stages["fan"]["rows_out"] == 4 * expected["right"]
            assert stages["grouped"]["rows_out"] == expected["right"]

        # the children have the same ids in both runs; grouping gives each parent its 4 back
        plan = PipelinePlan.build(spec)
        kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
        records = read_all(
            kafka, plan.serde(), spec.topic("fan"), until=lambda r: len(rows_of(r)) >= 8 * expected["right"]
        )
        ids: dict[str, list[str]] = {"routed-1": [], "routed-2": []}
        for _, record in records:
            if record["run_id"] in ids:
                ids[record["run_id"]] += [row["sample_id"] for row in record["rows"]]
        assert (
            sorted(ids["routed-1"]) == sorted(ids["routed-2"])
            and len(set(ids["routed-1"])) == 4 * expected["right"]
        )
        assert all(i.rsplit(":", 1)[1] in {"0", "1", "2", "3"} for i in ids["routed-1"])
        grouped = _dataset(spec, "routed-1", "grouped")
        assert len(grouped) == expected["right"]
        for row in grouped:
            assert row["variants"] == [f"{row['text']}#{i}" for i in range(4)] and row["group_missing"] == []

        # the inner gate decides: released with enough rows on `left`, rejected without
        assert results["routed-1"]["released"] and results["routed-2"]["released"]
        few_result = results["routed-few"]
        assert not few_result["released"]
        assert few_result["gate"]["failures"] == ["right: total 24.0000 < min_total 100.0000"]
