"""Rendering run states (as the coordinator publishes them) for `fastdistill status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from services.coordinator.run_state import RunView, StageView
from shared.pipeline import SEEDS_STAGE, PipelineSpec


def render_status(spec: PipelineSpec, states: Mapping[str, RunView]) -> Group:
    tables = []
    for run_id, state in sorted(states.items()):
        table = Table(title=f"{spec.name} · {run_id} · {_verdict(state)}", expand=False)
        for column in ("stage", "progress", "in", "out", "dropped", "errored", "drained"):
            table.add_column(column, justify="left" if column in ("stage", "progress") else "right")
        # A run starts at the seeds, a replay at the stage it was re-produced on: bars measure
        # every later stage against what that first stage put out.
        stages = [stage for stage in spec.stages if stage in state["stages"]] or [SEEDS_STAGE]
        first = stages[0]
        total = max(state["stages"].get(first, StageView()).get("rows_out", 0), 1)
        for stage in stages:
            info = state["stages"].get(stage, StageView())
            done = info.get("rows_out", 0) if stage == first else info.get("rows_in", 0)
            table.add_row(
                stage,
                ProgressBar(total=total, completed=min(done, total), width=30),
                str(info.get("rows_in", "")),
                str(info.get("rows_out", 0)),
                str(info.get("rows_dropped", "")),
                str(info.get("rows_errored", "")),
                f"{info.get('drained_partitions', 0)}/{info.get('partitions', '?')}",
            )
        table.caption = _early_stop(state.get("early_stop"))
        tables.append(table)
    return Group(*tables) if tables else Group(Text("no runs yet"))


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
