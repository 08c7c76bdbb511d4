"""Ends a service process whose loop stopped turning.

The last resort against a client call that blocks past its own timeout: librdkafka's
`send_offsets_to_transaction(..., 30)` can block indefinitely while the group coordinator is
unavailable (confluentinc/librdkafka#5456, #5511). The chaos harness met it after a broker
restart: services sat in that call for 10 minutes, their /healthz silent (it answers from the
same event loop), the run stalled. Nothing in the process can cancel that call; exiting is safe,
since every step is exactly-once: a restarted instance resumes from the last committed
transaction. The limit defaults to librdkafka's `max.poll.interval.ms` (300 s): by then the
group has dropped the member anyway and its next transaction would be fenced.
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


@contextlib.asynccontextmanager
async def watchdog(
    name: str,
    last_beat: Callable[[], float],
    limit_s: float,
    exit_process: Callable[[int], None] = os._exit,
) -> AsyncIterator[None]:
    """While inside, end the process when `time.monotonic() - last_beat()` exceeds `limit_s`."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(min(5.0, limit_s / 4)):
            stalled = time.monotonic() - last_beat()
            if stalled > limit_s:
                log.critical("%s: loop stalled for %.0f s (limit %.0f s): exiting", name, stalled, limit_s)
                faulthandler.dump_traceback(all_threads=True)
                exit_process(EXIT_STALLED)
                return

    thread = threading.Thread(target=watch, name=f"{name}-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
