"""A consumer-group member that outlives the broker's failures.

Static membership (`group.instance.id`) lets a restarted instance take its partitions back
without a rebalance. Its failure mode: after a broker SIGKILL, librdkafka may declare the
member "fenced by other consumer with same group.instance.id" although no other process holds
the id, and the consumer is dead for good. The error reaches Python as a message with code
_FATAL (not always flagged fatal), its cause only in the text. Here the member then closes
that consumer and joins again with a new one: its partitions are reported lost and come back
through a new assignment. A member fenced again and again within a minute is a real duplicate
of this instance id: that is fatal.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.runtime.transport import RebalanceListener, TopicPartition, TransportFatal

log = logging.getLogger(__name__)

#: Rebuilding a fenced consumer more often than this within a minute is a real duplicate: give up.
MAX_REBUILDS_PER_MIN = 3
#: A member whose group membership is not up and steady for this long gets a new consumer: after
#: a broker frozen (SIGSTOP) past every session, librdkafka's consumer was seen waiting on its
#: group coordinator for good (a JoinGroup "1 out-queue" timed out, then nothing; no partitions,
#: minutes on end) while a new consumer of the same instance id joined at once.
UNJOINED_REBUILD_S = 60.0
#: How often librdkafka reports the group's state (`stats_cb`): the JSON is a few kB.
STATS_INTERVAL_MS = 5000


def fatal(err: KafkaError) -> bool:
    # A message carrying _FATAL does not always have the fatal flag set (seen after a broker
    # SIGKILL: "Static consumer fenced by other consumer with same group.instance.id").
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def tp(p: KafkaPartition) -> TopicPartition:
    return (p.topic, p.partition)


def kafka_partitions(partitions: Iterable[TopicPartition]) -> list[KafkaPartition]:
    return [KafkaPartition(topic, partition) for topic, partition in partitions]


class GroupMember:
    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        member_id: str,
        topics: list[str],
        listener: RebalanceListener | None = None,
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.member_id = member_id
        self.topics = topics
        self.listener = listener
        self._rebuilds: list[float] = []
        #: since when librdkafka has said the membership is not up and steady (None: it is)
        self.unjoined_since: float | None = None
        self._generation = 0
        self.consumer = self._new()

    def _new(self) -> Consumer:
        self.unjoined_since = None
        self._generation += 1
        generation = self._generation

        def on_stats(raw: str) -> None:
            # A replaced consumer still closing (on its own thread) reports too: not heard.
            if generation == self._generation:
                self._on_stats(raw)

        return clients.consumer(
            self.kafka,
            self.group_id,
            **{
                "group.instance.id": self.member_id,
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": on_stats,
            },
        )

    def _on_stats(self, raw: str) -> None:
        """librdkafka's statistics, served from `consume`: only the group's state is kept."""
        try:
            group = json.loads(raw).get("cgrp") or {}
        except (ValueError, AttributeError):
            return
        if group.get("state") == "up" and group.get("join_state") == "steady":
            self.unjoined_since = None
        elif self.unjoined_since is None:
            self.unjoined_since = time.monotonic()

    def subscribe(self) -> None:
        # The range assignor (librdkafka's first default) gives one member the same partition
        # numbers of every topic: the rows a join matches by key meet in one instance.
        self.consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Messages without error; non-fatal errors are logged, a fenced member rejoins."""
        if self.unjoined_since is not None and time.monotonic() - self.unjoined_since > UNJOINED_REBUILD_S:
            # Before consuming, so no message of the old consumer is handed on. Not counted as a
            # fencing: while a broker is away for long, this rebuilds once a minute.
            self._replace(f"not joined to its group for {UNJOINED_REBUILD_S:.0f} s")
        try:
            messages = self.consumer.consume(num_messages=max_messages, timeout=timeout_s)
        except KafkaException as exc:
            self._failed(exc.args[0])
            return []
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif fatal(err):
                self._failed(err)
                return good
            else:
                log.warning("consumer error on %s: %s", self.topics, err)
        return good

    def _failed(self, err: KafkaError) -> None:
        if not fatal(err):
            log.warning("consumer error on %s: %s", self.topics, err)
            return
        # librdkafka has no way to hand the consumer's original code to Python: the text says it.
        if err.code() == KafkaError.FENCED_INSTANCE_ID or "group.instance.id" in err.str():
            self.rebuild(str(err))
            return
        raise TransportFatal(f"consumer: {err}")

    def rebuild(self, why: str) -> None:
        now = time.monotonic()
        self._rebuilds = [t for t in self._rebuilds if now - t < 60] + [now]
        if len(self._rebuilds) > MAX_REBUILDS_PER_MIN:
            raise TransportFatal(f"consumer fenced {len(self._rebuilds)} times in a minute: {why}")
        self._replace(why)

    def _replace(self, why: str) -> None:
        """Join again with a new consumer; what the old one had is reported lost.

        The old one is closed on a thread of its own: a consumer waiting on its coordinator
        blocks in `close()` for as long as it waits (seen: past the watchdog's 90 s). Its
        callbacks are not heard meanwhile, and the new one's static membership fences it.
        """
        log.warning("%s: rebuilding the consumer: %s", self.member_id, why)
        lost = self.assignment()
        old = self.consumer
        self.consumer = self._new()
        threading.Thread(target=self._close, args=(old,), name=f"{self.member_id}-close", daemon=True).start()
        if lost and self.listener is not None:
            self.listener.on_lost(lost)
        self.subscribe()

    def _close(self, consumer: Consumer) -> None:
        try:
            consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("%s: closing the old consumer: %s", self.member_id, exc)

    def assignment(self) -> list[TopicPartition]:
        try:
            return [tp(p) for p in self.consumer.assignment()]
        except (KafkaException, RuntimeError):
            return []

    def close(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close: %s", exc)

    # -- rebalance callbacks ---------------------------------------------------------------------
    # Only the current consumer's are heard: a replaced one closing on its own thread revokes
    # what it had there, which the listener was told of as lost already.
    def _on_assign(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        if consumer is not self.consumer:
            return
        # Taken now (eager protocol), so pauses and resumes asked for in the callback act on them.
        consumer.assign(partitions)
        if self.listener is not None:
            self.listener.on_assigned([tp(p) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        if consumer is self.consumer and self.listener is not None:
            self.listener.on_revoked([tp(p) for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        if consumer is self.consumer and self.listener is not None:
            self.listener.on_lost([tp(p) for p in partitions])
