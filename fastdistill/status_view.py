"""Rendering run states (as the coordinator publishes them) for `fastdistill status`, `runs` and
the live display of `up`.

Each stage's bar measures the rows it took in against what its own inputs put out (a stage
after a filter or dedup is complete when it took every row that reached it, not every seed); a
finished run's bars are complete. Rates are rows per second over the run's elapsed time; the
ETA extrapolates the share of the run done so far, the product of each stage's share along the
DAG (a stage that took half of its input, when that input is half done, is a quarter done).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from services.coordinator.run_state import RunView, StageView
from shared.pipeline import SEEDS_STAGE, PipelineSpec

#: What a service's /healthz says that a person watching a run should know, by service name.
ServiceNotes = Mapping[str, str]


def render_status(
    spec: PipelineSpec,
    states: Mapping[str, RunView],
    now_ms: float | None = None,
    services: ServiceNotes | None = None,
) -> Group:
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    parts: list[RenderableType] = []
    for run_id, state in sorted(states.items(), key=lambda kv: (kv[1].get("started_ms") or 0, kv[0])):
        parts.append(_run_table(spec, run_id, state, now_ms))
        parts += [Text(line, style="yellow") for line in _notes(state, services or {})]
    return Group(*parts) if parts else Group(Text("no runs yet"))


def _run_table(spec: PipelineSpec, run_id: str, state: RunView, now_ms: float) -> Table:
    stages = run_stages(spec, state)
    done = state["status"] != "running"
    elapsed = elapsed_s(state, now_ms)
    table = Table(title=f"{spec.name} · {run_id} · {_verdict(state)}", expand=False)
    for column in ("stage", "progress", "", "in", "out", "dropped", "errored", "rows/s", "drained"):
        table.add_column(column, justify="left" if column in ("stage", "progress") else "right")
    for stage in stages:
        info = state["stages"].get(stage, StageView())
        taken, expected = stage_progress(spec, state, stage, stages[0])
        shown = expected if done else min(taken, expected)
        total = max(expected, 1)
        rate = (taken / elapsed) if elapsed > 0 else 0.0
        table.add_row(
            stage,
            ProgressBar(total=total, completed=min(shown, total) if expected else total * done, width=30),
            f"{100 * shown // total if expected else 100 * done:>3}%",
            str(info.get("rows_in", "")),
            str(info.get("rows_out", 0)),
            str(info.get("rows_dropped", "")),
            str(info.get("rows_errored", "")),
            f"{rate:,.1f}",
            f"{info.get('drained_partitions', 0)}/{info.get('partitions', '?')}",
        )
    table.caption = "  ".join(
        c for c in (_clock(spec, state, now_ms), _early_stop(state.get("early_stop"))) if c
    )
    return table


def run_stages(spec: PipelineSpec, state: RunView) -> list[str]:
    """The stages a run has, upstream first: a run starts at the seeds, a replay at the stage it
    was re-produced on."""
    return [stage for stage in spec.stages if stage in state["stages"]] or [SEEDS_STAGE]


def stage_progress(spec: PipelineSpec, state: RunView, stage: str, first: str) -> tuple[int, int]:
    """(rows the stage took, rows its inputs put out so far); the first stage's are its own output."""
    stages = state["stages"]
    info = stages.get(stage, StageView())
    if stage in (first, SEEDS_STAGE):
        out = int(info.get("rows_out", 0))
        return out, out
    taken = int(info.get("rows_in", 0)) - int(info.get("rows_stopped", 0) or 0)
    expected = sum(int(stages.get(i, StageView()).get("rows_out", 0)) for i in spec.inputs(stage))
    return taken, expected


def share_done(spec: PipelineSpec, state: RunView) -> float:
    """The share of the run done: the least done leaf, each stage's own share times its inputs'."""
    if state["status"] != "running":
        return 1.0
    stages = run_stages(spec, state)
    share = {stages[0]: 1.0}
    for stage in stages[1:]:
        upstream = [share[i] for i in spec.inputs(stage) if i in share]
        if not upstream:
            continue
        taken, expected = stage_progress(spec, state, stage, stages[0])
        own = min(taken / expected, 1.0) if expected else float(min(upstream) >= 1.0)
        share[stage] = min(upstream) * own
    return min((share.get(s, 0.0) for s in spec.leaves if s in stages), default=0.0)


def elapsed_s(state: RunView, now_ms: float) -> float:
    started = state.get("started_ms")
    if not started:
        return 0.0
    end = state.get("finished_ms") if state["status"] != "running" else None
    return max((float(end or now_ms) - float(started)) / 1000, 0.0)


def _clock(spec: PipelineSpec, state: RunView, now_ms: float) -> str:
    elapsed = elapsed_s(state, now_ms)
    if not elapsed:
        return ""
    text = f"elapsed {_duration(elapsed)}"
    if state["status"] != "running":
        return text
    share = share_done(spec, state)
    if share > 0:
        return f"{text}  ETA {_duration(elapsed * (1 - share) / share)} ({100 * share:.0f}% done)"
    return f"{text}  ETA ?"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def _notes(state: RunView, services: ServiceNotes) -> list[str]:
    """Dead letters by step and reason, then what the services say (an endpoint held, rows in flight)."""
    lines = []
    for step, by_type in sorted((state.get("dead_letters") or {}).items()):
        reasons = ", ".join(f"{kind} {n}" for kind, n in sorted(by_type.items(), key=lambda kv: -kv[1]))
        lines.append(f"dead letters of {step}: {reasons} (`fastdistill dlq` shows them)")
    lines += [f"{name}: {note}" for name, note in sorted(services.items())]
    return lines


def _early_stop(early: dict[str, Any] | None) -> str | None:
    if early is None:
        return None
    if early["stopped_at"] is None:
        return f"limit {early['limit']}: {early['final_rows']} rows through so far"
    return (
        f"limit {early['limit']}: stopped at {early['stopped_at']}, {early['final_rows']} rows through "
        f"({early['final_rows_over_limit']} over), seeds consumed {early['seeds_consumed']}, "
        f"needed {early['seeds_needed']}"
    )


def _verdict(state: RunView) -> str:
    verdict = state.get("verdict")
    status: str = state["status"]
    if status == "running" or verdict is None:
        return status
    if verdict["passed"]:
        return "gate PASSED"
    return "gate FAILED: " + "; ".join(verdict["failures"])


def verdict_word(state: RunView) -> str:
    verdict = state.get("verdict")
    if state["status"] == "running" or verdict is None:
        return "-"
    return "passed" if verdict["passed"] else "FAILED"


def run_line(spec: PipelineSpec, run_id: str, state: RunView, now_ms: float) -> str:
    """One line of `fastdistill runs`: id, state, rows (of the final stage), verdict, age."""
    rows = state["stages"].get(spec.primary_leaf, StageView()).get("rows_out", 0)
    since = state.get("finished_ms") or state.get("started_ms")
    age = f"{_duration((now_ms - since) / 1000)} ago" if since else "?"
    return f"{run_id}  {state['status']}  {rows} rows  {verdict_word(state)}  {age}"


def latest(states: Mapping[str, RunView]) -> str | None:
    """The run started last (its id breaks ties)."""
    return max(states, key=lambda k: (states[k].get("started_ms") or 0, k), default=None)
