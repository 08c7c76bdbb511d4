"""Ends a service process that stopped making progress.

The last resort against a client call that blocks past its own timeout: librdkafka's
`send_offsets_to_transaction(..., timeout)` can block indefinitely while the group
coordinator is unavailable (confluentinc/librdkafka#5456, #5511). The chaos harness met it
after a broker restart: services sat in that call for 10 minutes, their /healthz silent (it
answers from the same event loop), the run stalled. Nothing in the process can cancel that
call. It is also the remedy for an instance that turns its loop but consumes nothing while
its input has records (shared.runtime.liveness). Exiting is safe, since every step is
exactly-once: a restarted instance (the supervisor's job: local stack, compose, k8s)
resumes from the last committed transaction.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

#: The exit status of a stalled process (EX_SOFTWARE), so a supervisor's log tells it apart.
EXIT_STALLED = 70


def loop_stall(last_beat: Callable[[], float], limit_s: float) -> Callable[[], str | None]:
    """A problem check for loops that only need to keep turning (the coordinator, the sink)."""

    def problem() -> str | None:
        stalled = time.monotonic() - last_beat()
        return f"loop stalled for {stalled:.0f} s (limit {limit_s:.0f} s)" if stalled > limit_s else None

    return problem


@contextlib.asynccontextmanager
async def watchdog(
    name: str,
    problem: Callable[[], str | None],
    check_every_s: float = 5.0,
    exit_process: Callable[[int], None] = os._exit,
) -> AsyncIterator[None]:
    """While inside, end the process as soon as `problem()` names one (checked from a thread, so
    a loop blocked in a C call is seen too)."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(check_every_s):
            reason = problem()
            if reason is not None:
                log.critical("%s: %s: exiting", name, reason)
                faulthandler.dump_traceback(all_threads=True)
                exit_process(EXIT_STALLED)
                return

    thread = threading.Thread(target=watch, name=f"{name}-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
