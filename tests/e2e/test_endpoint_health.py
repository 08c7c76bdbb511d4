"""An unreachable teacher endpoint is waited out, not a run of dead letters (issue 17 item 1).

The text-to-SQL example with its teacher pointed at a closed port, every service a process on
the real broker: the run waits, the teacher's /healthz says why (and stays healthy: no stall),
nothing is dead-lettered or committed past the teacher; then the simulator starts on that port
and the run completes, released with every row and no dead letter. One WARNING line says the
endpoint went away and one that it came back.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.local_stack import LocalStack, free_port
from fastdistill.runs import run_states, wait_for_release
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec
from tests.e2e.coordinator_stack import RELEASED_ROWS, SEEDS, pipeline_copy
from tests.sim import start_sim, stop_sim

pytestmark = pytest.mark.kafka


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_closed_port_is_waited_out_and_no_row_is_dead_lettered(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # One retry per row: without the hold, every row would be dead-lettered within a second.
    path = pipeline_copy(tmp_path, max_retries=1, probe_every_s=0.5)
    spec = PipelineSpec.load(path)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
    }
    stack = LocalStack(path, tmp_path / "stack", env)
    sim = None
    try:
        stack.add_pipeline_services()
        # A hold must not be called a stall, however long. The teacher only: on a busy machine
        # a 5 s limit would call another service's slow rebalance a stall.
        stack.services["teacher"].env["FD_PROGRESS_STALL_S"] = "5"
        stack.start()
        stack.produce(SEEDS, "outage")
        teacher = stack.services["teacher"]
        deadline = time.monotonic() + 120
        while (health := _health(teacher.port)[1]).get("held") is None:
            assert time.monotonic() < deadline, f"the teacher never held its input: {health}"
            time.sleep(0.2)
        time.sleep(12)  # more than twice the stall limit, with readable input waiting
        status, health = _health(teacher.port)
        assert status == 200 and health["ok"] is True and health["stalled"] is None, health
        assert "unreachable (connection refused) for" in health["held"], health
        state = run_states(spec, kafka)["outage"]
        assert state["status"] == "running" and state["dead_letters"] == {}, state
        assert state["stages"].get("teacher", {}).get("rows_out", 0) == 0, state["stages"].get("teacher")
        assert not stack.dead()

        sim = start_sim(tmp_path, SimConfig(seeds_path=SEEDS), port)
        result = wait_for_release(spec, "outage", 300, stack)
        subset = result["subsets"][spec.primary_leaf]
        assert result["released"] and subset["kept"] + subset["rejected"] == RELEASED_ROWS, result
        state = run_states(spec, kafka)["outage"]
        assert state["dead_letters"] == {}, state["dead_letters"]
        assert _health(teacher.port)[1]["held"] is None
        log = teacher.log_path.read_text()
        assert log.count("unreachable (connection refused): taking no rows") == 1, log[-3000:]
        assert log.count("answers again after") == 1
        assert log.count("teacher holds its input") == 1
    finally:
        stack.stop()
        if sim is not None:
            stop_sim(sim)
