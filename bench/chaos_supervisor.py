"""What a supervisor (Kubernetes, compose's `restart: always`) does for the chaos harness, and no
more: `fastdistill up`'s restart policy (fastdistill/supervision.py) on a thread, never giving
up. A live process is never touched, however stuck it looks: a run that only completes if
someone kills a live process needs a hand, and that is what the harness must find, not hide.
"""

from __future__ import annotations

import threading

from fastdistill.local_stack import LocalStack
from fastdistill.supervision import Exit, RestartPolicy


def pipeline_services(stack: LocalStack) -> list[str]:
    """The stack's pipeline services (steps, sink, coordinator), not its teacher simulators."""
    return [name for name, svc in stack.services.items() if "serve" in svc.argv]


class Supervisor(threading.Thread):
    """Restarts the stack's exited services. Whoever kills or swaps services on purpose (the
    fault director) holds `lock` meanwhile, so a deliberate kill is not taken for an exit."""

    def __init__(self, stack: LocalStack, done: threading.Event) -> None:
        super().__init__(daemon=True, name="chaos-supervisor")
        self.stack, self.done = stack, done
        self.lock = threading.RLock()
        # A crash loop under faults is a finding to count, not a reason to stop the run.
        self.policy = RestartPolicy(give_up_after=None)
        self.error: BaseException | None = None

    @property
    def exits(self) -> list[Exit]:
        return self.policy.exits

    def run(self) -> None:
        try:
            while not self.done.wait(0.2):
                with self.lock:
                    self.policy.revive(self.stack)
        except BaseException as exc:  # reported by the harness, which owns the outcome
            self.error = exc

    def spawn(self, name: str) -> None:
        """(Re)start `name` now, without waiting for it to be healthy: while the broker is away a
        service may not become healthy for a while, and the supervisor must go on watching."""
        with self.lock:
            svc = self.stack.services[name]
            svc.env |= self.stack.env
            svc.start()
