"""Never stall: the broker SIGKILLed twice during a run and restarted on the same data folder,
then frozen (SIGSTOP) past every session and call deadline and woken. The run completes with
the fault-free dataset, every row exactly once; the time until rows flow again after the broker
answers is recorded. A file of its own so that the two test workers share the long e2e files
evenly.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from fastdistill.dev import local_broker
from fastdistill.local_stack import free_port
from fastdistill.runs import run_states, wait_for_release
from fastdistill.supervision import RestartPolicy
from shared.config import KafkaSettings
from tests.e2e.test_stalls import _indexes, _stack
from tests.runtime.harness import write_seeds

pytestmark = pytest.mark.kafka


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
