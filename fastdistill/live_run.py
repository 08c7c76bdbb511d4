"""The live display of one run (`status --watch`, `up` while it waits): the run's table from the
runs topic, and what the stack's services say (an endpoint held, rows in flight), redrawn at
most once a second."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.live import Live

from fastdistill.local_stack import LocalStack
from fastdistill.runs import run_states
from fastdistill.status_view import render_status
from services.coordinator.run_state import RunView
from shared.config import KafkaSettings
from shared.pipeline import PipelineSpec

#: Seconds between two reads of the runs topic and the services' /healthz.
REDRAW_S = 1.0


class RunDisplay:
    def __init__(
        self,
        spec: PipelineSpec,
        run_id: str,
        kafka: KafkaSettings,
        console: Console,
        stack: LocalStack | None = None,
    ) -> None:
        self.spec, self.run_id, self.kafka, self.stack = spec, run_id, kafka, stack
        self.live = Live(console=console, refresh_per_second=4, transient=False)
        self.state: RunView | None = None
        self._drawn = 0.0

    def __enter__(self) -> RunDisplay:
        self.live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.redraw()
        self.live.stop()

    def tick(self) -> RunView | None:
        """Redraw if a second passed; the run's latest state (None before the coordinator has it)."""
        if time.monotonic() - self._drawn >= REDRAW_S:
            self.redraw()
        return self.state

    def redraw(self) -> None:
        self._drawn = time.monotonic()
        self.state = run_states(self.spec, self.kafka).get(self.run_id, self.state)
        if self.state is None:
            return
        notes = self.stack.service_notes() if self.stack is not None else {}
        self.live.update(render_status(self.spec, {self.run_id: self.state}, services=notes))
