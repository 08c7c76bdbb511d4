"""The poll loop of the coordinator and the sink: turn after turn, a commit every half second.

Unlike a step they do not commit per batch: what they do with a message is idempotent (state
keyed by run, files staged until release), so re-reading a few after a crash costs only time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

COMMIT_EVERY_S = 0.5


class PollLoop:
    def __init__(self) -> None:
        self.stopping = False
        # Read by the watchdog and /healthz: a loop that stops turning is a stalled service.
        self.last_turn_at = time.monotonic()

    def stop(self) -> None:
        self.stopping = True

    def stalled_for(self) -> float:
        return time.monotonic() - self.last_turn_at

    async def run(self, turn: Callable[[], None], commit: Callable[[], None]) -> None:
        last_commit = time.monotonic()
        while not self.stopping:
            self.last_turn_at = time.monotonic()
            turn()
            if time.monotonic() - last_commit > COMMIT_EVERY_S:
                commit()
                last_commit = time.monotonic()
            # Let the metrics/health server and other tasks run between turns.
            await asyncio.sleep(0)
        commit()
