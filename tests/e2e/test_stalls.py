"""Never stall: the faults that once stopped a run for good, on real processes and a real broker.

1. A step kept full (its rows wait on slow work) is paused by its own backpressure, then
   SIGSTOPped past its session timeout: the group takes its partitions away and gives them back
   while they are paused. librdkafka keeps the pause across that; the step must resume them
   and the run complete with no action (it sat at 717 of 2,724 rows for good before).
2. The broker is SIGKILLed twice during a run and restarted on the same data folder, then
   frozen (SIGSTOP) past every session and call deadline and woken: the run completes with the
   fault-free dataset, every row exactly once, and the time until rows flow again after the
   broker answers is recorded.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fastdistill.dev import local_broker
from fastdistill.local_stack import LocalStack, free_port
from fastdistill.runs import run_dir, run_states, wait_for_release
from fastdistill.supervision import RestartPolicy
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


def test_broker_kills_and_a_freeze_mid_run_lose_nothing_and_the_run_completes(tmp_path: Path) -> None:
    n = 6_000
    port = free_port()
    data_dir = tmp_path / "broker"
    broker = local_broker.up(port, data_dir)
    steps = [
        {"id": "shout", "step": "tests.runtime.steps:Shout"},
        # ~80 rows/s: every fault lands mid-run however fast the machine is
        {"id": "slow", "step": "tests.runtime.steps:Slow", "params": {"delay_s": 0.05}, "max_in_flight": 4},
        {"id": "stamp", "step": "tests.runtime.steps:Stamp"},
    ]
    recoveries: list[float] = []
    try:
        with _stack(tmp_path, broker.bootstrap, steps, {"FD_STALL_LIMIT_S": "90"}) as stack:
            # What a supervisor does (`up`'s policy): the watchdog ends a service stuck in a
            # client call, and it is started again.
            stack.restart_policy = RestartPolicy(give_up_after=None)
            spec = stack.spec
            stack.produce(write_seeds(tmp_path / "seeds.jsonl", n), "crashes")
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            seen = [0]

            def committed() -> int:
                """Rows the last stage committed for the run (the coordinator's exactly-once sum)."""
                assert stack.lost() == []
                try:
                    stages = run_states(spec, kafka).get("crashes", {}).get("stages", {})
                    seen[0] = int(stages.get("stamp", {}).get("rows_out", seen[0]))
                except Exception:  # the broker is away: nothing new can be known
                    pass
                return seen[0]

            for fault, at in (("kill", n / 4), ("kill", n / 2), ("freeze", 3 * n / 4)):
                deadline = time.monotonic() + 180
                while (now := committed()) < at:
                    assert time.monotonic() < deadline, f"no progress before the broker {fault} ({now} rows)"
                    time.sleep(0.2)
                before = committed()
                assert before < n, f"the {fault} must land mid-run"
                if fault == "kill":
                    local_broker.stop_hard(port, data_dir)
                    time.sleep(3)
                    local_broker.up(port, data_dir)
                else:
                    # past the session timeout (6 s) and every transactional call's deadline
                    jvm = local_broker.pid(port, data_dir)
                    assert jvm is not None
                    os.kill(jvm, signal.SIGSTOP)
                    time.sleep(25)
                    os.kill(jvm, signal.SIGCONT)
                answered = time.monotonic()
                deadline = answered + 180
                while committed() <= before:
                    assert time.monotonic() < deadline, f"rows did not flow again after the broker {fault}"
                    time.sleep(0.2)
                recoveries.append(time.monotonic() - answered)
            deadline = time.monotonic() + 300
            while True:
                committed()
                try:
                    result = wait_for_release(spec, "crashes", 5)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "the run did not complete after the broker faults"
            assert result["released"] and result["rows"] == n
            assert _indexes(spec, "crashes", "stamp") == list(range(n))
    finally:
        local_broker.stop_hard(port, data_dir)
        report = {"recovery_s_after_broker_answers (kill, kill, freeze)": [round(r, 1) for r in recoveries]}
        (tmp_path / "recovery.json").write_text(json.dumps(report))
        print(f"broker faults: {report}")  # shown with -s; kept in the test's folder too
