"""When to pause input partitions, kept per partition so it stays right across rebalances.

A full buffer first just stops consuming (librdkafka's prefetch is bounded, and each
pause/resume costs about a second of fetch stall). Held longer than `after_s`, the
partitions are paused, so that consume() can go on serving rebalance callbacks without
taking records.

librdkafka keeps a partition's pause flag across a revoke and a re-assign. A bookkeeping of
"paused or not" for the whole consumer therefore goes wrong on the first rebalance while
paused: the partitions come back still paused, nobody resumes them, and the step never
consumes again while its loop keeps turning (seen in a fault test: a SIGSTOPped teacher
lost and regained its partitions and sat on 190 unread offsets for good). Here every
partition is tracked on its own: a newly assigned partition is paused if the step is in a
long hold and explicitly resumed otherwise, and revoked or lost ones are forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.runtime.transport import TopicPartition


@dataclass
class PauseDecision:
    pause: list[TopicPartition] = field(default_factory=list)
    resume: list[TopicPartition] = field(default_factory=list)


@dataclass
class PauseControl:
    after_s: float
    assigned: set[TopicPartition] = field(default_factory=set)
    paused: set[TopicPartition] = field(default_factory=set)
    full_since: float | None = None
    #: how often a full buffer held consuming back, and how often a long hold paused partitions
    holds: int = 0
    pauses: int = 0

    def holding_long(self, now: float) -> bool:
        return self.full_since is not None and now - self.full_since > self.after_s

    def update(self, full: bool, now: float) -> PauseDecision:
        """The pauses and resumes the buffer's state asks for now."""
        if not full:
            self.full_since = None
            resume = sorted(self.paused)
            self.paused.clear()
            return PauseDecision(resume=resume)
        if self.full_since is None:
            self.full_since = now
            self.holds += 1
        if not self.holding_long(now):
            return PauseDecision()
        pause = sorted(self.assigned - self.paused)
        if pause and not self.paused:
            self.pauses += 1
        self.paused.update(pause)
        return PauseDecision(pause=pause)

    def on_assigned(self, partitions: list[TopicPartition], now: float) -> PauseDecision:
        self.assigned.update(partitions)
        if self.holding_long(now):
            self.paused.update(partitions)
            return PauseDecision(pause=sorted(partitions))
        # Resumed even if never paused here: the flag may be left over from before a revoke.
        return PauseDecision(resume=sorted(partitions))

    def on_removed(self, partitions: list[TopicPartition]) -> None:
        self.assigned.difference_update(partitions)
        self.paused.difference_update(partitions)

    @property
    def any_paused(self) -> bool:
        return bool(self.paused)
