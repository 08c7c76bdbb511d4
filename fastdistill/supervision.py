"""What `fastdistill up` does for its processes that compose's `restart: unless-stopped` does for
its containers (and the chaos harness does as a supervisor): a process that EXITED is started
again after a short pause; one that keeps ending soon after its start (a crash loop: a broken
pipeline, a bad key) is left down and reported with the line of its log that says why.

A service ends itself on purpose when it cannot go on: its watchdog after FD_STALL_LIMIT_S
without a turn of its loop, a producer fenced by a newer instance, the broker away past its
deadlines. Restarting it is safe: every step is exactly-once and resumes from its last
committed transaction. A live process is never touched, however stuck it looks: that is the
watchdog's call, made inside the process from what the process knows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastdistill.local_stack import LocalStack

#: How long after its start an exited process waits before it is started again (Kubernetes'
#: CrashLoopBackOff starts at 10 s; a local stack wants less).
RESTART_BACKOFF_S = 2.0
#: An exit this soon after the start counts towards a crash loop ...
QUICK_EXIT_S = 30.0
#: ... and this many of them in a row make one.
CRASH_LOOP_EXITS = 5

#: A line that says why a process ended: the watchdog's CRITICAL, an error, a traceback's last line.
_REASON = re.compile(r"CRITICAL|ERROR|Error:|Exception:|Fatal:|fenced", re.IGNORECASE)


@dataclass(frozen=True)
class Exit:
    name: str
    code: int | None
    #: epoch seconds it was found exited
    at: float
    reason: str
    #: False: left down, the last of a crash loop
    restarted: bool = True


def exit_reason(text: str) -> str:
    """The line of a process's log that says why it ended: the watchdog's CRITICAL line if any (a
    thread dump follows it), else the last error-like line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    critical = [line for line in lines if " CRITICAL " in line]
    if critical:
        return critical[-1][:300]
    for line in reversed(lines[-200:]):
        if _REASON.search(line) and not line.startswith("File "):
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


@dataclass
class RestartPolicy:
    """Starts a stack's exited processes again; `give_up_after` quick exits in a row (None:
    never) leave a process down."""

    give_up_after: int | None = CRASH_LOOP_EXITS
    backoff_s: float = RESTART_BACKOFF_S
    quick_exit_s: float = QUICK_EXIT_S
    #: told of every exit found, restarted or not (`up` prints it)
    on_exit: Callable[[Exit], object] | None = None
    exits: list[Exit] = field(default_factory=list)
    #: the processes left down, with the exit that made it a crash loop
    given_up: dict[str, Exit] = field(default_factory=dict)
    _quick_exits: dict[str, int] = field(default_factory=dict)

    def revive(self, stack: LocalStack) -> list[Exit]:
        """Start again every exited process whose pause is over; the exits found this time."""
        now = time.monotonic()
        found = []
        for name in stack.dead():
            svc = stack.services[name]
            ran_s = now - svc.started_at
            if name in self.given_up or ran_s < self.backoff_s:
                continue
            assert svc.proc is not None
            lost_port = svc.lost_its_port() and not svc.is_simulator
            # Losing the port to another process is no fault of the service's: not a quick exit.
            quick = ran_s < self.quick_exit_s and not lost_port
            self._quick_exits[name] = self._quick_exits.get(name, 0) + 1 if quick else 0
            loops = self.give_up_after is not None and self._quick_exits[name] >= self.give_up_after
            reason = exit_reason(svc.log_since_start())
            exit = Exit(name, svc.proc.returncode, time.time(), reason, restarted=not loops)
            found.append(exit)
            if self.on_exit is not None:
                self.on_exit(exit)
            if loops:
                self.given_up[name] = exit
                continue
            if lost_port:
                svc.move_port()
            svc.restarts += 1
            # Not waited healthy: while the broker is away a service may not be for a while.
            svc.env |= stack.env
            svc.start()
        self.exits += found
        return found
