"""Reading what a run became: its state in the runs topic and its files in the sink's folder."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from fastdistill.local_stack import LocalStack
from services.coordinator.run_state import RunView
from services.sink.release import GATE_REJECTED, REJECTED, RELEASED
from shared.config import KafkaSettings
from shared.kafka.state import read_compacted
from shared.pipeline import PipelineSpec

__all__ = ["REJECTED", "RELEASED", "finished", "release_summary", "run_dir", "run_states", "wait_for_release"]


def run_dir(spec: PipelineSpec, run_id: str) -> Path:
    return Path(spec.sink.output_dir) / spec.name / run_id


def finished(spec: PipelineSpec, run_id: str) -> dict[str, Any] | None:
    """The sink's RELEASED/REJECTED record of the run, once it exists, with `released` and the
    run's folder (`dir`)."""
    folder = run_dir(spec, run_id)
    for name in (RELEASED, REJECTED):
        path = folder / name
        if path.exists():
            return {"released": name == RELEASED, "dir": str(folder), **json.loads(path.read_text())}
    return None


def release_summary(result: dict[str, Any]) -> list[str]:
    """What a finished run left for the user (`finished`'s record), one line each: where each
    subset's kept rows are, how many, and how many were rejected; or why nothing was released."""
    folder = Path(result["dir"])
    run = result["run_id"]
    if not result["released"]:
        failures = (result.get("gate") or {}).get("failures") or []
        lines = [
            f"run {run}: REJECTED by the quality gates, nothing released; the rows are kept aside in "
            f"{folder / GATE_REJECTED}/"
        ]
        return lines + [f"  gate: {failure}" for failure in failures]
    subsets = result.get("subsets")
    if not subsets:  # released before named subsets
        return [f"run {run}: {result.get('rows')} rows released in {folder / str(result.get('stage'))}/"]
    lines = []
    for subset in subsets.values():
        splits = subset.get("splits")
        where = ", ".join(f"{name} {n}" for name, n in splits.items()) if splits else None
        lines.append(
            f"run {run}: {subset['kept']} rows kept in {folder / subset['folders']['kept']}/"
            + (f" ({where})" if where else "")
            + f"; {subset['rejected']} rejected in {folder / subset['folders']['rejected']}/"
        )
    card = folder / "README.md"
    if card.exists():
        lines.append(f"dataset card: {card}")
    return lines


def wait_for_release(
    spec: PipelineSpec,
    run_id: str,
    timeout_s: float,
    stack: LocalStack | None = None,
    on_wait: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """The run's `finished` record once the sink wrote it; `on_wait` is called while waiting."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = finished(spec, run_id)
        if result is not None:
            return result
        if stack is not None and (lost := stack.lost()):
            raise RuntimeError(f"run {run_id}: services exited before it finished: {lost}")
        if on_wait is not None:
            on_wait()
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} not finished after {timeout_s}s")


def run_states(spec: PipelineSpec, kafka: KafkaSettings | None = None) -> dict[str, RunView]:
    """Every run's latest state as the coordinator published it."""
    raw = read_compacted(kafka or KafkaSettings(), spec.runs_topic)
    return {key: cast(RunView, json.loads(value)) for key, value in raw.items()}
