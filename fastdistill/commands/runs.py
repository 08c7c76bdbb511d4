"""`fastdistill status` (one run, live with --watch) and `fastdistill runs` (one line a run)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fastdistill.broker_check import answering_kafka
from fastdistill.errors import UserError
from fastdistill.live_run import RunDisplay
from fastdistill.pipeline_file import load_spec
from fastdistill.runs import run_states
from fastdistill.status_view import latest, render_status, run_line
from services.coordinator.run_state import RunView
from shared.config import KafkaSettings
from shared.kafka import control
from shared.kafka.topic_end import TopicEndNotReached
from shared.pipeline import PipelineSpec

#: How long `status --watch RUN` waits for a run nobody has heard of before saying there is none:
#: `produce` in another terminal takes a few seconds to start and commit on a loaded machine, and
#: the coordinator publishes the run a second or two after that.
UNKNOWN_RUN_WAIT_S = 10.0
#: How long it waits for the coordinator to publish a run that was produced (registered on the
#: control topic): a coordinator that is restarting, or behind, takes that long at most.
PRODUCED_RUN_WAIT_S = 120.0

PipelineOpt = Annotated[
    Path | None, typer.Option("--pipeline", "-p", help="pipeline YAML (default: FD_PIPELINE)")
]


def status(
    run_id: Annotated[str | None, typer.Argument(help="one run (default: the latest)")] = None,
    pipeline: PipelineOpt = None,
    watch: Annotated[bool, typer.Option(help="a live display until the run is finished")] = False,
) -> None:
    """A run's progress per stage (rows against the stage's own input, rows/s, elapsed, ETA), its
    dead letters by reason, and the gate verdict once it is finished."""
    spec = load_spec(pipeline)
    kafka = answering_kafka()
    states = run_states(spec, kafka)
    if run_id is None:
        run_id = latest(states)
        if run_id is None:
            Console(stderr=True).print(f"no runs yet in {spec.runs_topic}", highlight=False, soft_wrap=True)
            return
    deadline = time.monotonic() + (UNKNOWN_RUN_WAIT_S if watch else 0)
    produced = False
    while run_id not in states:
        if time.monotonic() >= deadline:
            if produced or not watch or not _registered(spec, kafka, run_id):
                raise UserError(_no_run(spec, run_id, produced), code=1)
            produced = True
            deadline = time.monotonic() + PRODUCED_RUN_WAIT_S
            Console(stderr=True).print(
                f"run {run_id!r} is produced; waiting for the coordinator to publish it", highlight=False
            )
        time.sleep(0.5)
        states = run_states(spec, kafka)
    if not watch:
        Console(width=_width()).print(render_status(spec, {run_id: states[run_id]}))
        return
    with RunDisplay(spec, run_id, kafka, Console()) as display:
        while (display.tick() or states[run_id])["status"] == "running":
            time.sleep(0.2)


def _no_run(spec: PipelineSpec, run_id: str, produced: bool = False) -> str:
    if produced:
        return (
            f"run {run_id!r} was produced, but the coordinator has not published it in "
            f"{PRODUCED_RUN_WAIT_S:.0f} s: is `fastdistill serve coordinator` running?"
        )
    return f"no run {run_id!r} in pipeline {spec.name!r} (`fastdistill runs` lists its runs)"


def _registered(spec: PipelineSpec, kafka: KafkaSettings, run_id: str) -> bool:
    """Whether `produce` committed the run (its registration is on the control topic)."""
    try:
        return control.is_registered(kafka, spec.control_topic, run_id, timeout_s=10)
    except TopicEndNotReached:
        return False  # another produce's transaction still open: not known to be produced


def runs(pipeline: PipelineOpt = None) -> None:
    """Every run of the pipeline, one line each: id, state, rows of the final stage, verdict, age."""
    spec = load_spec(pipeline)
    states = run_states(spec, answering_kafka())
    if not states:
        Console(stderr=True).print(f"no runs yet in {spec.runs_topic}", highlight=False, soft_wrap=True)
        return
    now_ms = time.time() * 1000
    order: list[tuple[str, RunView]] = sorted(
        states.items(), key=lambda kv: (kv[1].get("started_ms") or 0, kv[0])
    )
    for run_id, state in order:
        print(run_line(spec, run_id, state, now_ms))


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(runs)


def _width() -> int | None:
    """The terminal's width; into a pipe or a file, wide enough for the whole table (rich would
    assume 80 columns and cut stage names short)."""
    return None if sys.stdout.isatty() else 160
