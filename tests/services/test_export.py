"""The coordinator's per-run Prometheus series: what a run exports, and that exporting them again
replaces (never accumulates) and forgets the oldest runs."""

from __future__ import annotations

import random

from prometheus_client import REGISTRY

from fastdistill.services.coordinator import RUN_GAUGES, RunExport
from services.coordinator.export import Series, run_series
from shared.runtime.progress import LatencyHistogram
from tests.services.test_run_state import _events, _progress, _run


def _by(series: list[Series], metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in series if s.metric == metric}


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return (("pipeline", "p"), ("run_id", "r"), *labels.items())


def test_a_finished_run_exports_its_funnel_quality_and_scores() -> None:
    state = _run(_events(6, random.Random(0)))
    series = run_series(state, "p")
    rows = _by(series, "fd_run_stage_rows")
    assert {k: v for k, v in rows.items() if ("stage", "score") in k} == {
        _labels(stage="score", kind="in"): 6,
        _labels(stage="score", kind="out"): 6,
        _labels(stage="score", kind="dropped"): 1,
        _labels(stage="score", kind="errored"): 0,
        _labels(stage="score", kind="stopped"): 0,
        _labels(stage="score", kind="dead_lettered"): 2,
    }
    # the seeds: rows seen, dead letters of `produce`; nobody counts rows into them
    assert rows[_labels(stage="seeds", kind="out")] == 6 and _labels(stage="seeds", kind="in") not in rows
    quality = _by(series, "fd_run_quality")
    assert quality[_labels(stage="score", metric="exec_pass_rate", final="true")] == 4 / 6
    assert quality[_labels(stage="hash", metric="p_keep", final="false")] == 1.0
    # column statistics stay in quality.json but for the score columns
    assert not [labels for labels in quality if ("metric", "source_index_mean") in labels]
    assert _by(series, "fd_run_score")[_labels(stage="score", column="teacher_score", stat="mean")] == 0.5
    assert _by(series, "fd_run_score_rows") == {
        _labels(stage="score", column="teacher_score", bin="0"): 2,
        _labels(stage="score", column="teacher_score", bin="0.5"): 2,
        _labels(stage="score", column="teacher_score", bin="1"): 2,
    }
    for s in series:  # every series fits its gauge's label names, in order
        assert [name for name, _ in s.labels] == list(RUN_GAUGES[s.metric]._labelnames)


def test_latency_quantiles_come_from_the_progress_histograms() -> None:
    state = _run(_events(4, random.Random(1)))
    queue, e2e = LatencyHistogram(), LatencyHistogram()
    for ms in range(1, 101):
        queue.add(ms, 1)
        e2e.add(1000 + ms, 2)
    state.add_progress(_progress("score", [], 3, queue_ms=_record(queue)))
    state.add_progress(_progress("score", [], 3, e2e_ms=_record(e2e)))
    latency = _by(run_series(state, "p"), "fd_run_latency_ms")
    assert abs(latency[_labels(stage="score", kind="queue", quantile="0.5")] - 50) <= 50 * 0.022
    assert abs(latency[_labels(stage="score", kind="queue", quantile="0.99")] - 99) <= 99 * 0.022
    assert abs(latency[_labels(stage="score", kind="end_to_end", quantile="0.95")] - 1095) <= 1095 * 0.022
    # the run's end to end: its leaves' (the final stage when finish named none)
    end_to_end = _by(run_series(state, "p"), "fd_run_end_to_end_ms")
    assert (
        end_to_end[_labels(quantile="0.95")]
        == latency[_labels(stage="score", kind="end_to_end", quantile="0.95")]
    )


def _record(histogram: LatencyHistogram) -> dict[str, object]:
    return {
        "count": histogram.count,
        "sum_ms": histogram.sum_ms,
        "min_ms": histogram.min_ms,
        "max_ms": histogram.max_ms,
        "zeros": histogram.zeros,
        "buckets": list(histogram.buckets),
        "counts": list(histogram.counts),
    }


def _value(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def test_exporting_again_replaces_series_and_the_oldest_runs_are_forgotten() -> None:
    export = RunExport(keep=2)
    labels = {"pipeline": "export-test", "stage": "s", "kind": "out"}
    export.apply(
        "a",
        [
            Series(
                "fd_run_stage_rows",
                (("pipeline", "export-test"), ("run_id", "a"), ("stage", "s"), ("kind", "out")),
                5,
            )
        ],
    )
    assert _value("fd_run_stage_rows", run_id="a", **labels) == 5
    export.apply(
        "a",
        [
            Series(
                "fd_run_stage_rows",
                (("pipeline", "export-test"), ("run_id", "a"), ("stage", "t"), ("kind", "out")),
                7,
            )
        ],
    )
    assert _value("fd_run_stage_rows", run_id="a", **labels) is None  # gone, not left at 5
    for run in ("b", "c"):
        export.apply(
            run,
            [
                Series(
                    "fd_run_stage_rows",
                    (("pipeline", "export-test"), ("run_id", run), ("stage", "s"), ("kind", "out")),
                    1,
                )
            ],
        )
    assert _value("fd_run_stage_rows", run_id="a", **(labels | {"stage": "t"})) is None  # the oldest run
    assert _value("fd_run_stage_rows", run_id="c", **labels) == 1
    assert list(export.exported) == ["b", "c"]
