"""Batch mode end to end (issue 14): 2,000 prompts through a text_generation step in `llm.mode:
batch`, every service a process on the real broker, the simulator's Batch API over HTTP.

The teacher is SIGKILLed once every row is in a submitted batch and before any batch completes.
Restarted, it re-reads its uncommitted rows, finds their jobs in its compacted store and polls
the same batches: the simulator sees no new batch, every row is released exactly once, and no
request body is billed twice (the simulator's own counts). Rows the batch fails (2 %) are asked
online, once.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.local_stack import LocalStack
from fastdistill.runs import run_dir, run_states, wait_for_release
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec
from tests.sim import sim_process

pytestmark = pytest.mark.kafka

ROWS = 2000
#: long enough to kill the teacher while every batch is in flight, short for the test's time
BATCH_DELAY_S = 8.0


def _pipeline(folder: Path) -> Path:
    raw = {
        "name": f"batch-{uuid.uuid4().hex[:8]}",
        "partitions": 2,
        "batch_size": 100,
        "seed_schema": "rows/prompt.avsc",
        "seed_model": "services.seeds.model:PromptSeed",
        "steps": [
            {"id": "canonicalize", "step": "canonicalize", "params": {"fields": ["task_id", "instruction"]}},
            {
                "id": "hash",
                "step": "hash",
                "params": {"fields": ["task_id", "canonical_input"], "output": "sample_id"},
            },
            {
                "id": "teacher",
                "step": "text_generation",
                "max_buffered_rows": 4000,
                "params": {
                    "template": "{{ instruction }}",
                    "llm": {
                        "mode": "batch",
                        "batch": {"max_rows": 1000, "window_s": 1.0, "poll_every_s": 0.5, "max_jobs": 3},
                    },
                },
            },
        ],
        "sink": {"output_dir": str(folder / "out"), "formats": ["jsonl"]},
        "gates": {"min_total": ROWS},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _seeds(folder: Path) -> Path:
    path = folder / "seeds.jsonl"
    lines = (
        json.dumps({"task_id": f"b-{i}", "instruction": f"Write a haiku about the number {i}."})
        for i in range(ROWS)
    )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_killed_batch_service_resumes_its_jobs_and_pays_for_no_row_twice(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    path = _pipeline(tmp_path)
    spec = PipelineSpec.load(path)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    config = SimConfig(batch_delay_s=BATCH_DELAY_S, batch_failure_rate=0.02)
    with sim_process(tmp_path, config) as sim:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "OPENAI_BASE_URL": sim.base_url,
        }
        stack = LocalStack(path, tmp_path / "stack", env)
        try:
            stack.add_pipeline_services()
            # rows waiting on a batch (8 s) must not be called a stall; the teacher only, so a
            # busy machine does not make another service's slow rebalance one
            stack.services["teacher"].env["FD_PROGRESS_STALL_S"] = "5"
            stack.start()
            started = time.monotonic()
            stack.produce(_seeds(tmp_path), "batch")
            while (before := sim.stats())["batch"]["rows"].get("submitted", 0) < ROWS:
                assert time.monotonic() - started < 60, before["batch"]
                time.sleep(0.1)
            in_flight = before["batch"]["calls"]
            assert in_flight.get("batch_completed", 0) == 0, "a batch completed before the kill"
            stack.kill("teacher")
            stack.restart("teacher")
            result = wait_for_release(spec, "batch", 120, stack)
        finally:
            stack.stop()
        after = sim.stats()
    assert result["released"], result
    released = [
        json.loads(line)
        for line in (run_dir(spec, "batch") / "teacher" / "data.jsonl").read_text().splitlines()
    ]
    # every row exactly once, each with the simulator's answer to its own prompt
    assert sorted(r["task_id"] for r in released) == sorted(f"b-{i}" for i in range(ROWS))
    assert len({r["sample_id"] for r in released}) == ROWS and all(r["generation"] for r in released)
    assert run_states(spec, kafka)["batch"]["dead_letters"] == {}
    calls, rows = after["batch"]["calls"], after["batch"]["rows"]
    # the same batches polled again after the restart: none created or uploaded anew
    assert (
        calls["batch_create"] == in_flight["batch_create"]
        and calls["file_upload"] == in_flight["file_upload"]
    )
    assert calls["batch_completed"] == calls["batch_create"] and rows["submitted"] == ROWS
    # paid once per row: in a batch, or online for the rows the batch failed
    assert 0 < rows["failed"] < ROWS // 10
    assert after["rows_billed"] == {"batch": ROWS - rows["failed"], "online": rows["failed"]}
    assert after["rows_billed_twice"] == 0
    log = stack.services["teacher"].log_path.read_text()
    assert log.count("resuming batch job") == calls["batch_create"], log[-3000:]
    print(
        f"batch e2e: {ROWS} rows in {calls['batch_create']} batches, killed in flight and resumed; "
        f"{rows['failed']} rows failed in the batch and asked online; billed twice: 0; "
        f"{time.monotonic() - started:.1f} s from produce to release"
    )
