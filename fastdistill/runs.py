"""Reading what a run became: its state in the runs topic and its files in the sink's folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastdistill.local_stack import LocalStack
from shared.config import KafkaSettings
from shared.kafka.state import read_compacted
from shared.pipeline import PipelineSpec

RELEASED = "RELEASED.json"
REJECTED = "REJECTED.json"


def run_dir(spec: PipelineSpec, run_id: str) -> Path:
    return Path(spec.sink.output_dir) / spec.name / run_id


def finished(spec: PipelineSpec, run_id: str) -> dict[str, Any] | None:
    """The sink's RELEASED/REJECTED record of the run, once it exists."""
    for name in (RELEASED, REJECTED):
        path = run_dir(spec, run_id) / name
        if path.exists():
            return {"released": name == RELEASED, **json.loads(path.read_text())}
    return None


def wait_for_release(
    spec: PipelineSpec, run_id: str, timeout_s: float, stack: LocalStack | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = finished(spec, run_id)
        if result is not None:
            return result
        if stack is not None and stack.dead():
            raise RuntimeError(f"run {run_id}: services exited before it finished: {stack.dead()}")
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} not finished after {timeout_s}s")


def run_states(spec: PipelineSpec, kafka: KafkaSettings | None = None) -> dict[str, dict[str, Any]]:
    """Every run's latest state as the coordinator published it."""
    raw = read_compacted(kafka or KafkaSettings(), spec.runs_topic)
    return {key: json.loads(value) for key, value in raw.items()}
