"""An AIMD concurrency limit for calls to a rate-limited server.

Additive increase (+1 after every `increase_every` successes), multiplicative decrease (times factor
on overload). A burst of 429s from requests that were all in flight together is one congestion
signal, not N: each acquisition carries the epoch it started in, and only a request started
after the last decrease may cause another (TCP's one cut per round trip).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from types import TracebackType


class AimdLimiter:
    def __init__(
        self,
        max_limit: int,
        *,
        min_limit: int = 1,
        initial: int | None = None,
        increase_every: int = 8,
        decrease_factor: float = 0.5,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit ({min_limit}) <= max_limit ({max_limit})")
        if increase_every < 1 or not 0 < decrease_factor < 1:
            raise ValueError("increase_every must be >= 1 and 0 < decrease_factor < 1")
        self.max_limit = max_limit
        self.min_limit = min_limit
        self.limit = max(min_limit, min(max_limit, initial if initial is not None else max_limit))
        self.increase_every = increase_every
        self.decrease_factor = decrease_factor
        self.in_flight = 0
        self.epoch = 0
        self.decreases = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    # -- slots ---------------------------------------------------------------------------------
    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch to pass to `on_overload`."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self.epoch
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: hand the slot on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    async def __aenter__(self) -> int:
        return await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- feedback ------------------------------------------------------------------------------
    def on_success(self) -> None:
        self._successes += 1
        if self._successes >= self.increase_every:
            self._successes = 0
            if self.limit < self.max_limit:
                self.limit += 1
                self._wake()

    def on_overload(self, started_epoch: int | None = None) -> bool:
        """Cut the limit unless a cut already happened since `started_epoch`; True if it cut."""
        if started_epoch is not None and started_epoch < self.epoch:
            return False
        self.epoch += 1
        self.decreases += 1
        self._successes = 0
        self.limit = max(self.min_limit, math.floor(self.limit * self.decrease_factor))
        return True

    @property
    def waiting(self) -> int:
        return sum(not f.done() for f in self._waiters)
