"""The chaos harness, small: two SIGKILLs of random service instances, one broker SIGKILL (the
JVM killed, restarted on the same data folder), the teacher SIGSTOPped while its backpressure
has paused its partitions, past its session timeout, and a zombie (an instance stopped, a
replacement with the same instance id started, the stopped one woken), with 20% teacher faults,
against a fault-free run of the example's 239 seeds, on the harness's own broker (the shared one
is never touched). `python -m bench.chaos` is the full run
(docs/chaos.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import ChaosOptions, chaos
from fastdistill.local_stack import free_port_pair

pytestmark = pytest.mark.kafka


@pytest.mark.timeout(900)
def test_broker_kill_stopped_step_and_zombie_lose_and_duplicate_no_row(tmp_path: Path) -> None:
    options = ChaosOptions(
        kills=2,
        broker_restarts=0,
        broker_kills=1,
        burst_target=None,
        copies=1,
        port=free_port_pair(),
        # The teacher full while ~230 rows go through: the stop lands on paused partitions.
        teacher_buffer=50,
        timeout_s=600,
    )
    figures = chaos(tmp_path / "chaos", options)
    assert figures.runs_needing_a_hand == 0, figures.needs_hand
    assert figures.rows_lost == 0
    assert figures.rows_duplicated == 0
    assert figures.rows_different == 0
    assert figures.dlq_unexplained == 0, figures.dlq_by_reason
    assert figures.rows_chaos == figures.rows_baseline - figures.dlq_explained
    assert figures.manifest_mismatches == []
    assert figures.faults_skipped == []
    assert figures.kills_survived == 2 and figures.broker_kills == 1
    assert [s is not None for s in figures.recovery_s.values()] == [True]
    stopped = figures.stopped_backpressured
    assert stopped is not None and stopped["paused"], stopped
    assert stopped["alive_after"] and stopped["consumed_again_after_s"] is not None, stopped
    zombie = figures.zombie
    assert zombie is not None and zombie["zombie_exit_code"] not in (None, 0), zombie
    assert zombie["zombie_fenced"] and not zombie["zombie_rebuilt_producer"], zombie
    assert figures.faults_served > 0
