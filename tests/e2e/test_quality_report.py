"""End to end: quality for any task and per-row timing on the text-to-SQL example.

One run of the example through every service on the real broker (the teacher simulator over
HTTP, real SQLite). Its quality report is checked against an independent computation from the
released dataset and from the stage topics (plain sorting, Fraction sums); its timing report has
per-stage and end-to-end p50/p95/p99 that agree with the run's own clock; gates on inner stages
and on column statistics decide the release; the HTML report and the per-run Prometheus series
exist for the run.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastdistill.plan import PipelinePlan
from fastdistill.runs import run_dir
from services.coordinator.timing import row_latencies
from services.sink.release import GATE_REJECTED
from tests.e2e.coordinator_stack import RELEASED_ROWS, SEEDS, pipeline_copy, running_pipeline
from tests.runtime.harness import read_all

pytestmark = pytest.mark.kafka

#: One gate no run passes (the teacher's p95 latency of a row, an inner stage's column statistic),
#: the others pass: the verdict must name exactly the first, under its stage.
GATES: dict[str, Any] = {
    "min_total": 100,
    "max_exec_error_rate": 0.9,
    "min_teacher_score_p50": 0.0,
    "teacher": {"max_teacher_latency_ms_p95": 0.001, "max_dead_letters": 0},
    "sql_eval": {"min_exec_pass_rate": 0.5},
    "dedup": {"max_rows_dropped": 100},
}
#: The bucket accuracy of percentiles past 64 distinct values (shared.sketch.RELATIVE_ERROR).
REL = 0.022


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _expect_column(got: dict[str, Any], values: list[Any], exact: bool) -> None:
    present = [v for v in values if v is not None]
    assert got["count"] == len(present) and got["nulls"] == len(values) - len(present)
    assert got["min"] == min(present) and got["max"] == max(present)
    assert got["mean"] == float(sum(Fraction(v) for v in present) / len(present))
    for q in (50, 95):
        want = _nearest_rank(present, q)
        if exact:
            assert got[f"p{q}"] == want
        else:
            assert abs(got[f"p{q}"] - want) <= REL * abs(want)


def test_quality_and_timing_reports_of_a_run(tmp_path: Path, kafka_bootstrap: str) -> None:
    path = pipeline_copy(tmp_path, gates=GATES)
    with running_pipeline(tmp_path, kafka_bootstrap, path) as pipe:
        spec, run_id = pipe.spec, f"quality-{uuid.uuid4().hex[:6]}"
        produced_at = int(time.time() * 1000)
        pipe.produce_all(SEEDS, run_id)
        result = pipe.wait(run_id)
        released_at = int(time.time() * 1000)
        state = pipe.wait_state(run_id)
        reports = pipe.report_files(run_id)
        quality = {q["stage"]: q for q in reports["quality"]}
        timing = reports["timing"]

        # -- gates on inner stages and on a column statistic --------------------------------------
        teacher_p95 = quality["teacher"]["columns"]["teacher_latency_ms"]["p95"]
        expected = [f"teacher: teacher_latency_ms_p95 {teacher_p95:.4f} > max_teacher_latency_ms_p95 0.0010"]
        assert state["verdict"] == {"passed": False, "failures": expected}
        assert not result["released"] and result["gate"]["failures"] == expected

        # -- the final stage against the dataset the sink wrote (an independent path) ------------
        rows = pipe.dataset(run_id, f"{GATE_REJECTED}/{spec.primary_leaf}")
        assert len(rows) == RELEASED_ROWS
        final = quality[spec.primary_leaf]
        assert final["metric_sets"] == ["sql"] and quality["teacher"]["metric_sets"] == []
        assert final["total"] == len(rows) and final["kept"] == sum(r["keep"] for r in rows)
        evaluated = [r for r in rows if r["exec_pass"] is not None]
        assert final["exec_pass_rate"] == sum(r["exec_pass"] for r in evaluated) / len(evaluated)
        assert final["exec_error_rate"] == sum(not r["exec_pass"] for r in evaluated) / len(evaluated)
        gold = [r for r in rows if r["gold_match"] is not None]
        assert final["gold_match_rate"] == sum(r["gold_match"] for r in gold) / len(gold)
        assert final["gold_errored"] == sum(r.get("gold_error") is not None for r in rows)
        reasons: dict[str, int] = {}
        for r in rows:
            reasons[r["reject_reason"]] = reasons.get(r["reject_reason"], 0) + 1
        assert final["reject_reasons"] == reasons
        columns = final["columns"]
        assert set(columns) == {
            "source_index",
            "teacher_latency_ms",
            "prompt_tokens",
            "completion_tokens",
            "teacher_score",
        }
        _expect_column(columns["teacher_score"], [r["teacher_score"] for r in rows], exact=True)
        for name in ("source_index", "prompt_tokens", "completion_tokens"):
            values = [r[name] for r in rows]
            _expect_column(columns[name], values, exact=len(set(values)) <= 64)
        # the score column's histogram, at the stage that adds it: one bar per score value
        histogram = quality["score"]["columns"]["teacher_score"]["histogram"]
        counts: dict[float, int] = {}
        for r in rows:
            counts[r["teacher_score"]] = counts.get(r["teacher_score"], 0) + 1
        assert histogram == [{"low": v, "high": v, "count": n} for v, n in sorted(counts.items())]

        # -- a volatile column (not in the dataset files) against the teacher's topic -------------
        plan = PipelinePlan.build(spec)
        records = read_all(
            pipe.kafka,
            plan.serde(),
            spec.topic("teacher"),
            until=lambda recs: sum(len(r["rows"]) for _, r in recs if r["run_id"] == run_id) >= RELEASED_ROWS,
        )
        latencies = [
            row["teacher_latency_ms"] for _, r in records if r["run_id"] == run_id for row in r["rows"]
        ]
        _expect_column(quality["teacher"]["columns"]["teacher_latency_ms"], latencies, exact=False)

        # -- the flow of every stage is the coordinator's progress sums ---------------------------
        for stage in spec.stages:
            flow, counted = quality[stage]["flow"], state["stages"][stage]
            assert flow["rows_out"] == counted["rows_out"]
            if stage != "seeds":
                assert (flow["rows_in"], flow["rows_dropped"]) == (
                    counted["rows_in"],
                    counted["rows_dropped"],
                )
        assert quality["dedup"]["flow"]["rows_dropped"] == quality["seeds"]["total"] - RELEASED_ROWS

        # -- timing: per stage and end to end, p50/p95/p99 ----------------------------------------
        assert set(timing["steps"]) == {s.id for s in spec.steps}
        window_ms = released_at - produced_at
        for stage, step in timing["steps"].items():
            counted = state["stages"][stage]
            queue, e2e = step["queue_ms"], step["end_to_end_ms"]
            assert queue["count"] == counted["rows_in"] - counted["rows_stopped"], stage
            assert e2e["count"] == counted["rows_out"], stage
            for report in (queue, e2e):
                assert 0 <= report["min"] <= report["p50"] <= report["p95"] <= report["p99"] <= report["max"]
            assert e2e["max"] <= window_ms, stage
            if counted["rows_dropped"] == counted["rows_errored"] == 0:
                # a row's output is no younger than the seed behind it was when the row came in
                assert queue["max"] <= e2e["max"], stage
        run_e2e = timing["end_to_end_ms"]
        assert run_e2e == timing["steps"][spec.primary_leaf]["end_to_end_ms"]  # a chain: one leaf
        assert run_e2e["count"] == RELEASED_ROWS and run_e2e["p99"] is not None
        # the same rows pass teacher .. keep_by_score: each row's end-to-end latency only grows
        chain = ["teacher", "clean_sql", "rule_filter", "sql_eval", "score", "keep_by_score"]
        for q in ("min", "p50", "p95", "p99", "max"):
            values = [timing["steps"][s]["end_to_end_ms"][q] for s in chain]
            assert values == sorted(values), (q, values)

        # the stage timings fold from the progress records alone: recompute from the topic
        def teacher_records(recs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
            return [r for _, r in recs if r["run_id"] == run_id and r["stage"] == "teacher" and r["queue_ms"]]

        teacher_in = state["stages"]["teacher"]["rows_in"]
        progress = read_all(
            pipe.kafka,
            plan.serde(),
            spec.progress_topic,
            until=lambda recs: sum(r["queue_ms"]["count"] for r in teacher_records(recs)) >= teacher_in,
        )
        folded = row_latencies()
        for record in teacher_records(progress):
            histogram_record = record["queue_ms"]
            folded.merge_buckets(
                histogram_record["count"],
                histogram_record["min_ms"],
                histogram_record["max_ms"],
                histogram_record["sum_ms"],
                histogram_record["zeros"],
                dict(zip(histogram_record["buckets"], histogram_record["counts"], strict=True)),
            )
        assert folded.percentile(95) == timing["steps"]["teacher"]["queue_ms"]["p95"]

        # -- the HTML report, its path in the run state ---------------------------------------
        assert state["report_html"] == "reports/report.html"
        page = (run_dir(spec, run_id) / state["report_html"]).read_text(encoding="utf-8")
        for stage in spec.stages:
            assert f"<tr><td>{stage}</td>" in page
        assert "teacher_score at score" in page and "gate failed" in page

        # -- per-run series for the dashboards ---------------------------------------------------
        port = pipe.stack.services["coordinator"].port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
        }

        def value(name: str, **labels: str) -> float | None:
            key = tuple(sorted((labels | {"pipeline": spec.name, "run_id": run_id}).items()))
            return samples.get((name, key))

        assert value("fd_run_stage_rows", stage=spec.primary_leaf, kind="out") == RELEASED_ROWS
        assert (
            value("fd_run_stage_rows", stage="dedup", kind="dropped")
            == quality["dedup"]["flow"]["rows_dropped"]
        )
        for score, n in sorted(counts.items()):
            assert value("fd_run_score_rows", stage="score", column="teacher_score", bin=f"{score:g}") == n
        assert (
            value("fd_run_quality", stage="sql_eval", metric="exec_pass_rate", final="false")
            == (quality["sql_eval"]["exec_pass_rate"])
        )
        assert value("fd_run_end_to_end_ms", quantile="0.99") == run_e2e["p99"]
        json.dumps(state)
