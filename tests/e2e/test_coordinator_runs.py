"""End to end: runs of the example pipeline through every service, the coordinator's reports,
verdicts and the CLI that reads them.

One stack (all services as processes, the teacher simulator, gates the example passes) serves
every test here: a first run, then two runs interleaved on the same topics, then a run during
which the coordinator is SIGKILLed and restarted. Later runs meet the teacher's cache of the
first, which keeps them fast and changes nothing but `teacher_cached`/`teacher_latency_ms`.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastdistill.plan import PipelinePlan
from fastdistill.runs import finished, run_states
from shared.kafka.state import read_compacted
from shared.topic_schema import dataset_columns
from tests.e2e.coordinator_stack import (
    KEPT_ROWS,
    REJECTED_ROWS,
    RELEASED_ROWS,
    SEED_COUNT,
    SEEDS,
    Pipeline,
    pipeline_copy,
    running_pipeline,
)

pytestmark = pytest.mark.kafka

MANIFEST_FIELDS = {"run_id", "stage", "count", "field_hash", "min_sample_id", "max_sample_id", "columns"}
#: Every stage's quality report; the `sql` metric set's on the stages that have `exec_pass`.
QUALITY_FIELDS = {"total", "kept", "rejected", "p_keep", "reject_reasons", "metric_sets", "columns", "flow"}
SQL_FIELDS = {"exec_pass_rate", "exec_error_rate", "gold_match_rate", "gold_error_rate", "exec_errors"}
LATENCY_FIELDS = {"count", "min", "max", "mean", "p50", "p90", "p95"}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("coordinator-runs")
    with running_pipeline(folder, kafka_bootstrap, pipeline_copy(folder)) as pipeline:
        yield pipeline


def _new_run(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def first_run(pipe: Pipeline) -> str:
    run_id = _new_run("first")
    pipe.produce_all(SEEDS, run_id)
    pipe.wait(run_id)
    pipe.wait_state(run_id)
    return run_id


def _final(reports: dict[str, Any], kind: str, stage: str) -> dict[str, Any]:
    return next(r for r in reports[kind] if r["stage"] == stage)


def _without(report: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in keys}


def test_a_run_ends_with_reports_verdict_and_released_dataset(pipe: Pipeline, first_run: str) -> None:
    spec = pipe.spec
    result = finished(spec, first_run)
    assert result is not None and result["released"], result
    # The released data is the kept set; the rest of the final stage is the rejected subset.
    assert result["rows"] == KEPT_ROWS
    subset = result["subsets"][spec.primary_leaf]
    assert (subset["kept"], subset["rejected"]) == (KEPT_ROWS, REJECTED_ROWS)
    assert len(pipe.kept(first_run)) == KEPT_ROWS and all(r["keep"] for r in pipe.kept(first_run))
    assert result["gate"] == {"run_id": first_run, "passed": True, "failures": []}
    rows = pipe.dataset(first_run)
    assert len(rows) == RELEASED_ROWS
    assert [r["source_index"] for r in rows] == sorted(r["source_index"] for r in rows)

    state = pipe.state(first_run)
    assert state["status"] == "done" and state["verdict"] == {"passed": True, "failures": []}
    reports = state["reports"]
    assert pipe.report_files(first_run) == reports  # beside the dataset, the same as published

    assert [m["stage"] for m in reports["manifest"]] == spec.stages
    for manifest in reports["manifest"]:
        assert set(manifest) >= MANIFEST_FIELDS and manifest["run_id"] == first_run
        assert manifest["created_at"] is not None
        if "sample_id" in manifest["columns"]:
            assert manifest["min_sample_id"] <= manifest["max_sample_id"]
    assert _final(reports, "manifest", "seeds")["count"] == SEED_COUNT
    final_manifest = _final(reports, "manifest", spec.primary_leaf)
    assert final_manifest["count"] == RELEASED_ROWS
    assert final_manifest["min_sample_id"] == min(r["sample_id"] for r in rows)

    for quality in reports["quality"]:
        assert set(quality) >= QUALITY_FIELDS and quality["run_id"] == first_run
        with_sql = quality["stage"] in ("sql_eval", "score", "keep_by_score")
        assert (set(quality) >= SQL_FIELDS) == with_sql and (quality["metric_sets"] == ["sql"]) == with_sql
    quality = _final(reports, "quality", spec.primary_leaf)
    assert quality["total"] == RELEASED_ROWS == quality["kept"] + quality["rejected"]
    assert quality["kept"] == sum(r["keep"] for r in rows)
    assert quality["exec_pass_rate"] == pytest.approx(sum(r["exec_pass"] for r in rows) / len(rows))
    assert sum(quality["reject_reasons"].values()) == RELEASED_ROWS
    assert sum(quality["exec_errors"].values()) == sum(not r["exec_pass"] for r in rows)

    timing = reports["timing"]
    assert set(timing["steps"]) == {s.id for s in spec.steps}
    for step in timing["steps"].values():
        assert set(step["batch_seconds"]) >= LATENCY_FIELDS and set(step["row_seconds"]) >= LATENCY_FIELDS
        assert step["batch_seconds"]["count"] > 0
    assert timing["wall_seconds"] > 0
    assert state["stages"]["teacher"]["rows_in"] == timing["steps"]["teacher"]["row_seconds"]["count"]

    verdicts = read_compacted(pipe.kafka, spec.gates_topic)
    assert json.loads(verdicts[first_run]) == {"run_id": first_run, "passed": True, "failures": []}
    metrics = _metrics(pipe)
    assert f'fd_gate_passed{{pipeline="{spec.name}",run_id="{first_run}"}} 1.0' in metrics


def _stable(pipe: Pipeline, state: dict[str, Any], stage: str) -> dict[str, Any]:
    """A stage's quality report without its run id and the statistics of volatile columns (how a
    row was made: its latency, a cache hit), which differ between runs of the same seeds."""
    report = _final(state["reports"], "quality", stage)
    kept = set(dataset_columns(PipelinePlan.build(pipe.spec).fields[stage]))
    return _without(report, "run_id") | {"columns": {c: v for c, v in report["columns"].items() if c in kept}}


def _metrics(pipe: Pipeline) -> str:
    port = pipe.stack.services["coordinator"].port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_status_and_report_commands(pipe: Pipeline, first_run: str) -> None:
    shown = pipe.cli("status", first_run)
    assert shown.returncode == 0, shown.stderr
    assert first_run in shown.stdout and "gate PASSED" in shown.stdout
    for stage in pipe.spec.stages:
        assert stage in shown.stdout
    assert f"{RELEASED_ROWS}" in shown.stdout
    assert first_run in pipe.cli("status").stdout

    missing = pipe.cli("status", "no-such-run")
    assert missing.returncode == 1 and "no run 'no-such-run'" in missing.stderr

    printed = pipe.cli("report", first_run)
    assert printed.returncode == 0, printed.stderr
    state = pipe.state(first_run)
    assert json.loads(printed.stdout) == {"verdict": state["verdict"], **state["reports"]}
    assert pipe.cli("report", "no-such-run").returncode == 1


def test_interleaved_runs_are_kept_apart(pipe: Pipeline, first_run: str, tmp_path: Path) -> None:
    head = tmp_path / "head.jsonl"
    head.write_text("".join(SEEDS.read_text().splitlines(keepends=True)[:120]))
    run_a, run_b = _new_run("whole"), _new_run("head")
    procs = [pipe.produce(SEEDS, run_a), pipe.produce(head, run_b)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    pipe.wait(run_a)
    pipe.wait(run_b)
    first, a, b = (pipe.wait_state(r) for r in (first_run, run_a, run_b))

    # Run A is the first run again: the same counts at every stage and the same quality, but for
    # the statistics of columns saying how a row was made (volatile: its latency, a cache hit).
    for stage in pipe.spec.stages:
        assert a["stages"][stage]["rows_out"] == first["stages"][stage]["rows_out"], stage
        assert _stable(pipe, a, stage) == _stable(pipe, first, stage)
    # Run B saw only its own 120 seeds, and its rows are the first run's rows for those seeds.
    assert _final(b["reports"], "manifest", "seeds")["count"] == 120
    rows_b, rows_first = pipe.dataset(run_b), {r["sample_id"]: r for r in pipe.dataset(first_run)}
    final_b = _final(b["reports"], "quality", pipe.spec.primary_leaf)
    assert len(rows_b) == final_b["total"] == b["stages"][pipe.spec.primary_leaf]["rows_out"]
    assert len({r["sample_id"] for r in rows_b}) == len(rows_b)
    assert max(r["source_index"] for r in rows_b) < 120
    for row in rows_b:
        twin = rows_first[row["sample_id"]]
        assert (row["sql"], row["exec_pass"], row["teacher_score"]) == (
            twin["sql"],
            twin["exec_pass"],
            twin["teacher_score"],
        )
    assert len(pipe.dataset(run_a)) == RELEASED_ROWS
    # Every report names its own run only.
    for run_id, state in ((run_a, a), (run_b, b)):
        for kind in ("manifest", "quality"):
            assert {r["run_id"] for r in state["reports"][kind]} == {run_id}
        assert state["reports"]["timing"]["run_id"] == run_id


def test_coordinator_killed_mid_run_reaches_the_same_reports(
    pipe: Pipeline, first_run: str, tmp_path: Path
) -> None:
    # Another system prompt makes new sample ids: the teacher's cache of the first run does not
    # answer (the simulator answers by question).
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text().replace('"Return SQL only."', '"Return SQL only!"'))
    run_id = _new_run("killed")
    # The teacher is frozen until the coordinator is dead, so the run cannot finish before the
    # kill however fast the rest is; the rest of the run then happens while it is down.
    teacher = pipe.stack.services["teacher"]
    teacher.signal(signal.SIGSTOP)
    try:
        pipe.produce_all(seeds, run_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once the coordinator has committed part of the run
            state = run_states(pipe.spec, pipe.kafka).get(run_id)
            if state is not None and state["stages"]["dedup"]["rows_out"] > 0:
                break
            time.sleep(0.2)
        assert state is not None and state["status"] == "running", state
        pipe.stack.services["coordinator"].signal(signal.SIGKILL)
        pipe.stack.services["coordinator"].wait(10)
    finally:
        teacher.signal(signal.SIGCONT)
    time.sleep(1)
    pipe.stack.restart("coordinator")
    assert pipe.wait(run_id)["released"]
    state = pipe.wait_state(run_id)

    # The same run folded from scratch from the topics: identical reports but for created_at,
    # which is the finish time of whoever computed them.
    fresh = pipe.recompute(run_id)
    fresh.finish({s: pipe.spec.gates_of(s) for s in pipe.spec.stages}, state["finished_ms"], pipe.spec.leaves)
    assert fresh.reports() == state["reports"]
    assert fresh.verdict == state["verdict"]
    assert pipe.report_files(run_id) == state["reports"]
    # And the same data as the uninterrupted first run.
    first = pipe.state(first_run)
    for stage in pipe.spec.stages:
        assert _stable(pipe, state, stage) == _stable(pipe, first, stage)
