"""Endpoint health: a circuit breaker that makes an outage a pause, not a run of dead letters.

An endpoint that refuses connections (or answers a burst of consecutive 5xx) is *down*: one
WARNING line says so with the cause, the step stops taking rows (`hold_reason`, which the
runtime asks before consuming), rows already in flight wait instead of spending their retries,
and a probe (a request that costs no tokens) is sent every 1, 2, 4 ... 10 s until the endpoint
answers; then one WARNING line says it is back and everything resumes. Only state changes are
logged, never each row. Down longer than `give_up_after_s`, the step stops holding and rows fail
with the reason, so a run against a dead endpoint ends instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from shared.llm import LLMError, ServerFailure, Unreachable

log = logging.getLogger(__name__)

#: longest wait between two probes
MAX_PROBE_EVERY_S = 10.0


class EndpointDown(RuntimeError):
    """The endpoint stayed unreachable past the give-up time: the row fails with this reason."""


class EndpointHealth:
    def __init__(
        self,
        label: str,
        probe: Callable[[], Awaitable[None]],
        *,
        server_errors_to_open: int = 5,
        probe_every_s: float = 1.0,
        give_up_after_s: float | None = 600.0,
        on_change: Callable[[bool], None] = lambda up: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self._probe = probe
        self.server_errors_to_open = server_errors_to_open
        self.probe_every_s = probe_every_s
        self.give_up_after_s = give_up_after_s
        self._on_change = on_change
        self.clock = clock
        #: when the endpoint went down (None: up), and why
        self.down_since: float | None = None
        self.cause: str | None = None
        self.outages = 0
        self.probes = 0
        self._server_errors = 0
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def down_for_s(self) -> float:
        return 0.0 if self.down_since is None else self.clock() - self.down_since

    def gave_up(self) -> bool:
        return self.down and self.give_up_after_s is not None and self.down_for_s() >= self.give_up_after_s

    def reason(self) -> str | None:
        """'endpoint X unreachable (connection refused) for 42 s', or None while it answers."""
        if not self.down:
            return None
        return f"endpoint {self.label} unreachable ({self.cause}) for {self.down_for_s():.0f} s"

    def hold_reason(self) -> str | None:
        """Why the step should take no rows now: down and not yet given up on."""
        return None if self.gave_up() else self.reason()

    # -- what requests report ------------------------------------------------------------------
    def on_success(self) -> None:
        self._server_errors = 0

    def on_failure(self, exc: LLMError) -> None:
        if isinstance(exc, Unreachable):
            self._open(str(exc))
        elif isinstance(exc, ServerFailure):
            self._server_errors += 1
            if self._server_errors >= self.server_errors_to_open:
                self._open(f"{self._server_errors} server errors in a row, the last: {exc}")

    async def wait_up(self) -> None:
        """Return at once while the endpoint is up; while it is down, wait for it to come back
        (raising `EndpointDown` once the give-up time has passed)."""
        while self.down:
            if self.gave_up():
                raise EndpointDown(self.reason())
            self._ensure_probe()
            await asyncio.sleep(0.05)

    # -- state changes -------------------------------------------------------------------------
    def _open(self, cause: str) -> None:
        if self.down:
            return
        self.down_since = self.clock()
        self.cause = cause
        self.outages += 1
        give_up = f"{self.give_up_after_s:g} s" if self.give_up_after_s is not None else "never"
        log.warning(
            "endpoint %s unreachable (%s): taking no rows, probing until it answers (rows fail after %s)",
            self.label,
            cause,
            give_up,
        )
        self._on_change(False)
        self._ensure_probe()

    def _close(self) -> None:
        down_for = self.down_for_s()
        self.down_since = None
        self.cause = None
        self._server_errors = 0
        log.warning("endpoint %s answers again after %.0f s: taking rows", self.label, down_for)
        self._on_change(True)

    def _ensure_probe(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # opened outside a loop (a unit test): the next wait_up starts the probe
        task = self._probe_task
        if task is None or task.done() or task.get_loop() is not loop:
            self._probe_task = loop.create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        delay = self.probe_every_s
        while self.down:
            await asyncio.sleep(delay)
            self.probes += 1
            try:
                await self._probe()
            except (Unreachable, ServerFailure) as exc:
                # Still down; a new cause is kept for /healthz, not logged again.
                self.cause = str(exc) if isinstance(exc, Unreachable) else self.cause
                delay = min(delay * 2, MAX_PROBE_EVERY_S)
                continue
            except Exception as exc:  # a probe that fails oddly still says nothing about coming back
                log.debug("probe of %s failed: %r", self.label, exc)
                delay = min(delay * 2, MAX_PROBE_EVERY_S)
                continue
            self._close()

    def close(self) -> None:
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
        self._probe_task = None
