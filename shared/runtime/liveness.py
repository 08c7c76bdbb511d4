"""Is this instance making progress? Judged by what it consumes, not by its loop turning.

A loop can turn forever without consuming: librdkafka kept partitions paused after a
rebalance and the service looked healthy for minutes while its input piled up. So an
instance is stuck when it holds partitions the broker says have unread records, has room
to take them, and has consumed nothing for `stall_after_s`. The broker's word (a fresh
lag measurement, taken during the quiet period) is required: while the broker is down
nothing can be measured and nobody is declared stuck for waiting on it.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.runtime.transport import TopicPartition


class Liveness:
    def __init__(self, stall_after_s: float, clock: Callable[[], float]) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.loop_at = clock()
        self.consumed_at = clock()
        #: the buffer is full: not consuming is then the point (backpressure)
        self.full = False
        self.lag_total: int | None = None
        self._lag_at: float | None = None

    def beat(self) -> None:
        self.loop_at = self.clock()

    def consumed(self) -> None:
        self.consumed_at = self.clock()

    def measured(self, lag: dict[TopicPartition, int] | None, at: float) -> None:
        if lag is None:
            return
        self.lag_total = sum(max(value, 0) for value in lag.values())
        self._lag_at = at

    def wants_fresh_lag(self, assigned: bool) -> bool:
        return assigned and not self.full and self.clock() - self.consumed_at > self.stall_after_s / 2

    def problem(self, loop_limit_s: float) -> str | None:
        """Why the instance is not making progress, or None."""
        now = self.clock()
        if now - self.loop_at > loop_limit_s:
            return f"loop stalled for {now - self.loop_at:.0f} s"
        idle = now - self.consumed_at
        if (
            idle > self.stall_after_s
            and not self.full
            and self._lag_at is not None
            and self._lag_at > self.consumed_at
            and self.lag_total
        ):
            return (
                f"consumed nothing for {idle:.0f} s with {self.lag_total} records readable "
                "and room to take them"
            )
        return None
