"""A group member whose membership stays down gets a new consumer (fake consumer, no broker).

After a broker frozen (SIGSTOP) past every session, a step's consumer waited on its group
coordinator for good: no partitions, `/healthz` ok, the run stuck at 4,600 of 6,000 rows
(tests/e2e/test_stalls.py freezes a real broker). librdkafka's statistics say the group's state;
a member not up and steady for UNJOINED_REBUILD_S is rebuilt before its next consume.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from shared.config import KafkaSettings
from shared.kafka import group as group_module
from shared.kafka.group import UNJOINED_REBUILD_S, GroupMember


class _Consumer:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.subscribed: list[str] = []
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.subscribed = topics

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []

    def assignment(self) -> list[Any]:
        return []

    def close(self) -> None:
        self.closed = True


def _stats(state: str, join_state: str) -> str:
    return json.dumps({"name": "c", "cgrp": {"state": state, "join_state": join_state}})


@pytest.fixture
def member(monkeypatch: pytest.MonkeyPatch) -> tuple[GroupMember, list[_Consumer], list[float]]:
    made: list[_Consumer] = []
    now = [1000.0]

    def consumer(kafka: KafkaSettings, group_id: str, **conf: Any) -> _Consumer:
        made.append(_Consumer(conf))
        return made[-1]

    monkeypatch.setattr(group_module.clients, "consumer", consumer)
    monkeypatch.setattr(group_module.time, "monotonic", lambda: now[0])
    member = GroupMember(KafkaSettings(), "g", "g-1", ["t"])
    member.subscribe()
    return member, made, now


def test_a_membership_down_past_the_limit_gets_a_new_consumer(member: Any) -> None:
    group, made, now = member
    stats = made[0].conf["stats_cb"]
    assert made[0].conf["statistics.interval.ms"] > 0
    stats(_stats("up", "wait-join"))  # a rebalance begins
    now[0] += UNJOINED_REBUILD_S - 1
    group.consume(10, 0)
    assert len(made) == 1  # an ordinary rebalance is left alone
    now[0] += 2
    group.consume(10, 0)
    assert len(made) == 2 and made[0].closed and made[1].subscribed == ["t"]
    assert group.unjoined_since is None


def test_a_steady_member_with_no_partitions_is_left_alone(member: Any) -> None:
    group, made, now = member
    made[0].conf["stats_cb"](_stats("wait-coord", "init"))
    now[0] += 30
    made[0].conf["stats_cb"](_stats("up", "steady"))  # joined (an idle standby has no partitions)
    now[0] += 10 * UNJOINED_REBUILD_S
    group.consume(10, 0)
    assert len(made) == 1


def test_rebuilds_for_a_long_outage_are_not_counted_as_fencings(member: Any) -> None:
    group, made, now = member
    for i in range(5):  # more than MAX_REBUILDS_PER_MIN, which would be fatal for fencings
        made[-1].conf["stats_cb"](_stats("wait-coord", "init"))
        now[0] += UNJOINED_REBUILD_S + 1
        group.consume(10, 0)
        assert len(made) == i + 2
    made[-1].conf["stats_cb"]("not json")  # ignored


def test_a_replaced_consumer_stuck_in_close_blocks_nothing_and_is_not_heard(member: Any) -> None:
    group, made, now = member
    release = threading.Event()
    old = made[0]
    old.close = lambda: release.wait(30)  # type: ignore[method-assign]
    heard: list[str] = []
    group.listener = _Listener(heard)
    old.conf["stats_cb"](_stats("wait-coord", "init"))
    now[0] += UNJOINED_REBUILD_S + 1
    started = time.perf_counter()
    group.consume(10, 0)  # rebuilt: the old one's close hangs on its own thread
    assert time.perf_counter() - started < 5 and len(made) == 2
    group._on_revoke(old, [])  # type: ignore[arg-type]
    old.conf["stats_cb"](_stats("wait-coord", "init"))
    assert heard == [] and group.unjoined_since is None
    group._on_revoke(made[1], [])  # type: ignore[arg-type]
    assert heard == ["revoked"]
    release.set()


class _Listener:
    def __init__(self, heard: list[str]) -> None:
        self.heard = heard

    def on_assigned(self, partitions: list[Any]) -> None:
        self.heard.append("assigned")

    def on_revoked(self, partitions: list[Any]) -> None:
        self.heard.append("revoked")

    def on_lost(self, partitions: list[Any]) -> None:
        self.heard.append("lost")
