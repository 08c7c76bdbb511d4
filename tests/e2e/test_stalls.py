"""Never stall: the faults that once stopped a run for good, on real processes and a real broker.

A step kept full (its rows wait on slow work) is paused by its own backpressure, then
SIGSTOPped past its session timeout: the group takes its partitions away and gives them back
while they are paused. librdkafka keeps the pause across that; the step must resume them and
the run complete with no action (it sat at 717 of 2,724 rows for good before). The broker's
own faults: tests/e2e/test_broker_faults.py (which uses this module's stack).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fastdistill.local_stack import LocalStack
from fastdistill.runs import run_dir, wait_for_release
from shared.config import KafkaSettings
from shared.pipeline import PipelineSpec
from tests.runtime.harness import create_topics, rows_out, write_pipeline, write_seeds

pytestmark = pytest.mark.kafka

SESSION_TIMEOUT_MS = 6000


@contextmanager
def _stack(
    tmp_path: Path, bootstrap: str, steps: list[dict[str, Any]], env: dict[str, str]
) -> Iterator[LocalStack]:
    path = write_pipeline(tmp_path, f"stall-{uuid.uuid4().hex[:8]}", steps)
    create_topics(KafkaSettings(bootstrap_servers=bootstrap), PipelineSpec.load(path))
    base = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)}
    stack = LocalStack(path, tmp_path / "stack", base | env)
    stack.add_pipeline_services()
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))
    except OSError:
        return {}


def _indexes(spec: PipelineSpec, run_id: str, stage: str) -> list[int]:
    lines = (run_dir(spec, run_id) / stage / "data.jsonl").read_text().splitlines()
    return [json.loads(line)["source_index"] for line in lines]


def test_a_backpressured_step_stopped_past_its_session_timeout_resumes_by_itself(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    n = 2_000
    steps = [
        {"id": "shout", "step": "tests.runtime.steps:Shout"},
        {
            "id": "slow",
            "step": "tests.runtime.steps:Slow",
            "params": {"delay_s": 0.02},
            "max_in_flight": 4,
            "max_buffered_rows": 40,
        },
    ]
    # A full buffer pauses after half a second, so the stop lands on paused partitions.
    with _stack(tmp_path, kafka_bootstrap, steps, {"FD_PAUSE_AFTER_FULL_S": "0.5"}) as stack:
        spec = stack.spec
        stack.produce(write_seeds(tmp_path / "seeds.jsonl", n), "stopped")
        slow = stack.services["slow"]
        deadline = time.monotonic() + 120
        while not _health(slow.port).get("paused"):
            assert time.monotonic() < deadline, f"slow never paused: {_health(slow.port)}"
            time.sleep(0.05)
        assert rows_out(slow.port, "slow") < n, "the stop must land mid-run"
        slow.signal(signal.SIGSTOP)
        time.sleep(SESSION_TIMEOUT_MS / 1000 + 10)  # the group drops it, rebalances, waits for it
        slow.signal(signal.SIGCONT)
        result = wait_for_release(spec, "stopped", 240, stack)
        assert result["released"] and result["rows"] == n
        assert _indexes(spec, "stopped", "slow") == list(range(n))
        assert slow.alive(), "it resumed by itself, not by a restart"
