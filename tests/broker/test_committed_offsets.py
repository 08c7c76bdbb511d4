"""Reading a group's committed offsets waits out a moving coordinator and fails on the rest.

A broker that has just started answers NOT_COORDINATOR until __consumer_offsets is loaded; a
sink that started then exited on it (clean-clone CI, the two-broker-kills test).
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shared.kafka.state import committed_offsets


class _Consumer:
    """Answers with the given errors first, then with the committed offsets."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(p.topic, p.partition, 7) for p in partitions]


@pytest.mark.parametrize(
    "moving",
    [
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TRANSPORT,
    ],
)
def test_a_moving_coordinator_is_waited_out(moving: int) -> None:
    consumer = _Consumer(moving, moving)
    offsets = committed_offsets(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert [(p.topic, p.partition, p.offset) for p in offsets] == [("t", 0, 7)]
    assert consumer.calls == 3


def test_an_error_that_will_not_pass_is_raised_at_once() -> None:
    consumer = _Consumer(KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        committed_offsets(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert consumer.calls == 1
