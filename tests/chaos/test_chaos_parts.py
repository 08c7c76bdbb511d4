"""The chaos harness's pure parts, without a broker: when faults fire, what a process's log says
about why it ended, how log lines are grouped by fault, and what makes a chaos run fail."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from bench.chaos import Figures
from bench.chaos_faults import plan_faults
from bench.chaos_logs import by_fault


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def test_faults_fire_in_order_the_stop_first_and_the_broker_kills_last() -> None:
    faults = plan_faults(random.Random(1), 20, 2, "teacher", "sql_eval", "teacher", broker_restarts=1)
    kinds = [f.kind for f in faults if f.kind != "kill"]
    assert kinds == ["stop_backpressured", "zombie", "burst", "broker_restart", "broker_kill", "broker_kill"]
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    assert sum(1 for f in faults if f.kind == "kill") == 20
    assert all(0 <= f.at < 0.9 for f in faults)
    assert plan_faults(random.Random(1), 20, 2, "teacher", "sql_eval", "teacher", 1) == faults


def test_log_lines_are_counted_under_the_fault_they_followed(tmp_path: Path) -> None:
    start = 1_800_000_000.0
    (tmp_path / "score.log").write_text(
        f"{_stamp(start + 1)} WARNING shared.runtime.runner: score lost [0, 1]\n"
        f"{_stamp(start + 12)} WARNING shared.kafka.transactions: fd.p.score-score: rebuilding the "
        "transactional producer: send_offsets_to_transaction did not return within 15 s\n"
        f"{_stamp(start + 13)} WARNING shared.runtime.runner: transaction of score aborted, re-reading "
        "from the last commit: send_offsets_to_transaction did not return within 15 s\n"
        "%3|1800000013.000|FAIL|rdkafka#producer-2| not one of ours\n"
    )
    (tmp_path / "teacher.log").write_text(
        f"{_stamp(start + 20)} CRITICAL shared.runtime.watchdog: teacher: loop stalled for 45 s: exiting\n"
    )
    groups = by_fault(tmp_path, [("broker_kill broker at 50%", start + 10)], start)
    assert [g["after"] for g in groups] == ["before any fault", "broker_kill broker at 50%"]
    lost = {"service": "score", "what": "partitions lost", "reason": "[N, N]", "count": 1}
    assert groups[0]["events"] == [lost]
    after = {(e["service"], e["what"]): e["reason"] for e in groups[1]["events"]}
    assert after == {
        ("score", "producer rebuilt"): "send_offsets_to_transaction did not return within N s",
        ("score", "transaction aborted"): "send_offsets_to_transaction did not return within N s",
        ("teacher", "watchdog exit"): "loop stalled for N s",
    }


def _figures() -> Figures:
    return Figures(
        seeds=10,
        kills_survived=1,
        kills_by_service={"score": 1},
        broker_restarts=0,
        broker_kills=1,
        recovery_s={"broker_kill 1": 12.0},
        stopped_backpressured={"paused": [0], "consumed_again_after_s": 2.0, "alive_after": True},
        zombie={"zombie_exit_code": 1, "zombie_fenced": True, "zombie_rebuilt_producer": False},
        burst=None,
        faults_skipped=[],
        exits=[],
        runs_needing_a_hand=0,
        needs_hand=[],
        rows_baseline=10,
        rows_chaos=10,
        rows_lost=0,
        rows_duplicated=0,
        rows_different=0,
        dlq_explained=0,
        dlq_unexplained=0,
        dlq_by_reason={},
        teacher_calls_paid_twice=0,
        teacher_requests=12,
        faults_served=2,
        manifest_mismatches=[],
        seconds_baseline=1.0,
        seconds_chaos=2.0,
    )


def test_a_run_fails_on_a_hand_a_slow_recovery_or_a_zombie_that_lives_on() -> None:
    good = _figures()
    assert good.ok and good.problems() == []
    assert not replace(good, runs_needing_a_hand=1, needs_hand=["stuck"]).ok
    assert not replace(good, rows_duplicated=1).ok
    assert not replace(good, recovery_s={"broker_kill 1": 61.0}).ok
    assert not replace(good, recovery_s={"broker_kill 1": None}).ok
    assert not replace(good, faults_skipped=["zombie at 25%"]).ok
    assert not replace(good, zombie={"zombie_exit_code": None, "zombie_fenced": False}).ok
    rebuilt = {"zombie_exit_code": 1, "zombie_fenced": True, "zombie_rebuilt_producer": True}
    assert not replace(good, zombie=rebuilt).ok
    assert not replace(good, stopped_backpressured={"paused": [0], "consumed_again_after_s": None}).ok
