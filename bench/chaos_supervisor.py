"""What a supervisor (Kubernetes, compose's `restart: always`) does for the chaos harness, and no
more: a service process that EXITED is started again. A live process is never touched, however
stuck it looks: a run that only completes if someone kills a live process needs a hand, and
that is what the harness must find, not hide.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from fastdistill.local_stack import LocalStack, ServiceProcess, free_port

#: A process that ends this soon after its start is started again only after this pause, as
#: Kubernetes' CrashLoopBackOff would (its first steps are 10 s; a local harness wants less).
RESTART_BACKOFF_S = 2.0
#: A line that says why a process ended: the watchdog's CRITICAL, an error, a traceback's last line.
_REASON = re.compile(r"CRITICAL|ERROR|Error:|Exception:|Fatal:|fenced", re.IGNORECASE)


@dataclass(frozen=True)
class Exit:
    name: str
    code: int | None
    #: epoch seconds it was found exited
    at: float
    reason: str


def pipeline_services(stack: LocalStack) -> list[str]:
    """The stack's pipeline services (steps, sink, coordinator), not its teacher simulators."""
    return [name for name, svc in stack.services.items() if "serve" in svc.argv]


def log_since(svc: ServiceProcess, offset: int) -> str:
    try:
        with open(svc.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def log_size(svc: ServiceProcess) -> int:
    try:
        return svc.log_path.stat().st_size
    except OSError:
        return 0


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


class Supervisor(threading.Thread):
    """Restarts the stack's exited services. Whoever kills or swaps services on purpose (the
    fault director) holds `lock` meanwhile, so a deliberate kill is not taken for an exit."""

    def __init__(self, stack: LocalStack, done: threading.Event) -> None:
        super().__init__(daemon=True, name="chaos-supervisor")
        self.stack, self.done = stack, done
        self.lock = threading.RLock()
        self.exits: list[Exit] = []
        self.error: BaseException | None = None
        #: per service: when its process was last started, and its log's size then
        self._spawned: dict[str, tuple[float, int]] = {}

    def run(self) -> None:
        try:
            while not self.done.wait(0.2):
                with self.lock:
                    self._revive()
        except BaseException as exc:  # reported by the harness, which owns the outcome
            self.error = exc

    def spawn(self, name: str) -> None:
        """(Re)start `name` now, without waiting for it to be healthy: while the broker is away a
        service may not become healthy for a while, and the supervisor must go on watching."""
        with self.lock:
            svc = self.stack.services[name]
            svc.env |= self.stack.env
            self._spawned[name] = (time.monotonic(), log_size(svc))
            svc.start()

    def _revive(self) -> None:
        now = time.monotonic()
        for name in self.stack.dead():
            svc = self.stack.services[name]
            started, offset = self._spawned.get(name, (0.0, 0))
            if now - started < RESTART_BACKOFF_S:
                continue
            text = log_since(svc, offset)
            assert svc.proc is not None
            self.exits.append(Exit(name, svc.proc.returncode, time.time(), exit_reason(text)))
            if "address already in use" in text.lower():
                # Another process took its port first: a new one (not a fault of the service).
                svc.port = free_port()
                svc.env["FD_METRICS_PORT"] = str(svc.port)
            svc.restarts += 1
            self.spawn(name)
