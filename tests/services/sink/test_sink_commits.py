"""The sink's commits (fake consumer, no broker): offsets that cannot be committed for
COMMIT_STUCK_S rebuild the consumer, which reads on from where the old one was (nothing read
is skipped or read twice); /healthz and the watchdog say so when a rebuilt one fails too.

The case it covers was met on a real broker frozen (SIGSTOP) for 25 s mid-run: the sink's
consumer answered every commit with "Waiting for coordinator" for minutes, and the run never
released (tests/e2e/test_stalls.py freezes the broker for real).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from fastdistill.plan import PipelinePlan
from fastdistill.services import sink as sink_module
from fastdistill.services.sink import COMMIT_STUCK_S, SinkService
from shared.config import KafkaSettings, ServiceSettings
from shared.pipeline import PipelineSpec
from tests.runtime.harness import write_pipeline


class _Consumer:
    def __init__(self, positions: dict[tuple[str, int], int], stuck: bool) -> None:
        self.positions, self.stuck = positions, stuck
        self.assigned: dict[tuple[str, int], int] = {}
        self.commits: list[list[tuple[str, int, int]]] = []
        self.closed = False

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(p.topic, p.partition, self.positions[(p.topic, p.partition)]) for p in partitions
        ]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = {(p.topic, p.partition): p.offset for p in partitions}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.stuck:
            raise KafkaException(
                KafkaError(KafkaError._WAIT_COORD, "Commit failed: Local: Waiting for coordinator")
            )
        self.commits.append([(p.topic, p.partition, p.offset) for p in offsets])

    def close(self) -> None:
        self.closed = True


class _Producer:
    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture
def sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    path = write_pipeline(tmp_path, "commits", [{"id": "shout", "step": "tests.runtime.steps:Shout"}])
    plan = PipelinePlan.build(PipelineSpec.load(path))
    svc = SinkService(plan, plan.serde(None), KafkaSettings(), ServiceSettings())
    topic = plan.spec.topic("shout")
    # partition 0 read up to 40, partition 1 nothing read yet (started at its committed 7)
    svc.started_at = {(topic, 0): 12, (topic, 1): 7}
    svc.consumer = _Consumer({(topic, 0): 40, (topic, 1): -1001}, stuck=True)
    svc.dlq = _Producer()
    made: list[_Consumer] = []

    def new_consumer(kafka: KafkaSettings, group_id: str) -> _Consumer:
        made.append(_Consumer({(topic, 0): 40, (topic, 1): -1001}, stuck=False))
        return made[-1]

    monkeypatch.setattr(sink_module.clients, "consumer", new_consumer)
    return svc, topic, made


def test_commits_failing_past_the_limit_rebuild_the_consumer_where_the_old_one_was(sink: Any) -> None:
    svc, topic, made = sink
    old = svc.consumer
    svc._commit()  # failing, but not for long: the same consumer tries again
    assert made == [] and svc.problem(300, 300) is None

    svc.committed_at = time.monotonic() - COMMIT_STUCK_S - 1
    svc._commit()
    [new] = made
    assert old.closed and svc.consumer is new
    assert new.assigned == {(topic, 0): 40, (topic, 1): 7}  # read on; nothing skipped, nothing twice
    svc._commit()
    assert new.commits == [[(topic, 0, 40)]]
    assert svc.health()["ok"]


def test_health_and_the_watchdog_say_when_no_commit_succeeds(sink: Any) -> None:
    svc, _, made = sink
    svc.committed_at = time.monotonic() - 2 * COMMIT_STUCK_S - 1
    assert not svc.health()["ok"]
    assert svc.health()["stalled"].startswith("no offsets committed for ")
    assert svc.problem(300, 300) is None  # the watchdog's limit (FD_STALL_LIMIT_S) not reached
    assert svc.problem(300, 2 * COMMIT_STUCK_S) is not None
    assert made == []
