"""Replay on a DAG re-runs one branch and what is below it, nothing else.

Two teachers answer every prompt from two simulator processes (A and B) and a join gathers their
answers. After B's model changes, a replay from teacher_b pays B once per row and A nothing: the
replay re-produces teacher_a's original answers for the join instead of asking again, and
teacher_a skips the replayed input it would otherwise see on the topic it shares with teacher_b.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastdistill.local_stack import LocalStack
from fastdistill.runs import run_dir, run_states, wait_for_release
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec
from tests.e2e.coordinator_stack import PIPELINE, SEEDS

pytestmark = pytest.mark.kafka


def _teacher(teacher: dict[str, Any], step_id: str, base_url: str) -> dict[str, Any]:
    """The example's teacher as `step_id`, asking the simulator at `base_url`."""
    params = teacher["params"] | {"llm": teacher["params"]["llm"] | {"base_url": base_url}}
    return teacher | {"id": step_id, "inputs": ["dedup"], "params": params}


def _requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as resp:
        return int(json.load(resp)["requests"])


def _pipeline(folder: Path, sims: dict[str, str]) -> Path:
    """The example's first three steps, then two teachers (one simulator each) and their join."""
    raw = yaml.safe_load(PIPELINE.read_text())
    steps = {s["id"]: s for s in raw["steps"]}
    teacher = steps["teacher"]
    raw["name"] = f"dagreplay-{uuid.uuid4().hex[:6]}"
    raw["sink"]["output_dir"] = str(folder / "out")
    raw["sink"]["formats"] = ["jsonl"]  # the example's chat format reads `sql`, which the join has not
    raw["gates"] = {}
    raw["steps"] = [
        steps["canonicalize"],
        steps["hash"],
        steps["dedup"],
        _teacher(teacher, "teacher_a", sims["a"]),
        _teacher(teacher, "teacher_b", sims["b"]),
        {
            "id": "both",
            "step": "join",
            "inputs": ["teacher_a", "teacher_b"],
            "params": {"collect": {"generation": "generations", "teacher_model": "models"}},
        },
    ]
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _rows(spec: PipelineSpec, run_id: str) -> dict[str, dict[str, Any]]:
    lines = (run_dir(spec, run_id) / "both" / "data.jsonl").read_text().splitlines()
    return {row["sample_id"]: row for row in map(json.loads, lines)}


def test_a_replay_from_one_branch_pays_that_branch_only(tmp_path: Path, kafka_bootstrap: str) -> None:
    stack = LocalStack(PIPELINE, tmp_path / "stack", {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    try:
        sims = {name: stack.start_teacher_sim(SEEDS, name=f"teacher-sim-{name}") for name in ("a", "b")}
        path = _pipeline(tmp_path, sims)
        stack.pipeline_path = path
        spec = PipelineSpec.load(path)
        clients.ensure_topics(
            clients.admin(KafkaSettings(bootstrap_servers=kafka_bootstrap)), pipeline_topics(spec)
        )
        stack.add_pipeline_services()
        stack.start()
        original = f"dag-{uuid.uuid4().hex[:6]}"
        stack.produce(SEEDS, original)
        assert wait_for_release(spec, original, 300, stack)["released"]
        reaching = run_states(spec)[original]["stages"]["dedup"]["rows_out"]
        assert (_requests(sims["a"]), _requests(sims["b"])) == (reaching, reaching)

        # teacher_b changes model: its service restarts on the new pipeline file
        raw = yaml.safe_load(path.read_text())
        next(s for s in raw["steps"] if s["id"] == "teacher_b")["params"]["llm"]["model"] = "teacher-b2"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        svc = stack.services["teacher_b"]
        svc.signal(signal.SIGTERM)
        assert svc.wait(30) is not None
        stack.restart("teacher_b")

        replay = f"{original}.replay"
        argv = stack.cli(
            "replay", original, "--from", "teacher_b", "--run-id", replay, "--pipeline", str(path)
        )
        done = subprocess.run(argv, env=stack.base_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert wait_for_release(spec, replay, 300, stack)["released"]
        assert (_requests(sims["a"]), _requests(sims["b"])) == (reaching, 2 * reaching)

        state = run_states(spec)[replay]
        assert state["replay"] == {"replay_of": original, "from_step": "teacher_b"}
        assert set(state["stages"]) == {"dedup", "teacher_a", "teacher_b", "both"}
        before, after = _rows(spec, original), _rows(spec, replay)
        assert set(after) == set(before) and len(after) == reaching
        for sample_id, row in after.items():
            assert row["generations"][0] == before[sample_id]["generations"][0]  # A's, re-produced
            assert row["models"] == ["teacher-sim", "teacher-b2"] and row["join_missing"] == []
    finally:
        stack.stop()
