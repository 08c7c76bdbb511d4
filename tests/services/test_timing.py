from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.coordinator.timing import (
    HIST_STEPS,
    LatencyStats,
    StepTiming,
    Summary,
    bucket_centre,
    bucket_of,
    timing_report,
)
from shared.runtime.progress import LatencyHistogram, Progress

LATENCY = st.floats(min_value=0, max_value=1e4, allow_nan=False)


def _stats(values: list[float]) -> LatencyStats:
    stats = LatencyStats()
    for value in values:
        stats.add(value)
    return stats


def test_hand_computed_stats() -> None:
    report = _stats([0.1, 0.2, 0.3, 0.4]).report()
    assert report["count"] == 4
    assert report["min"] == 0.1 and report["max"] == 0.4
    assert report["mean"] == 0.25  # the exact sum of the four floats rounds to 1.0
    # nearest rank: p50 is the 2nd sample, p90 and p95 the 4th, each to the bucket resolution
    assert report["p50"] == pytest.approx(0.2, rel=0.023)
    assert report["p90"] == report["p95"] == pytest.approx(0.4, rel=0.023)
    assert _stats([5.0, 5.0]).report()["p50"] == 5.0  # clamped into the exact [min, max]


def test_empty_stats_report_none() -> None:
    assert LatencyStats().report() == {
        "count": 0,
        "min": None,
        "max": None,
        "mean": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
    }


def test_bucket_resolution_is_as_documented() -> None:
    bound = 2 ** (1 / (2 * HIST_STEPS))
    for value in (1e-5, 0.0123, 0.2, 1.0, 7.5, 300.0):
        centre = bucket_centre(bucket_of(value))
        assert 1 / bound <= centre / value <= bound
    assert bucket_of(0.0) == 0 and bucket_of(-1.0) == 0


@given(st.lists(LATENCY, min_size=1, max_size=200), st.sampled_from([50, 90, 95]))
def test_percentiles_within_resolution_of_exact_nearest_rank(values: list[float], q: int) -> None:
    exact = sorted(values)[max(1, math.ceil(q / 100 * len(values))) - 1]
    got = _stats(values).percentile(q)
    assert got is not None
    if exact > 1e-6:
        assert got == pytest.approx(exact, rel=2 ** (1 / HIST_STEPS) - 1)


@given(st.lists(LATENCY, max_size=60), st.integers(0, 60), st.randoms(use_true_random=False))
def test_merge_is_order_and_split_independent(values: list[float], cut: int, rnd) -> None:
    whole = _stats(values)
    shuffled = list(values)
    rnd.shuffle(shuffled)
    a, b = _stats(shuffled[:cut]), _stats(shuffled[cut:])
    b.merge(a)
    restored = LatencyStats.from_json(json.loads(json.dumps(b.to_json())))
    assert restored.to_json() == whole.to_json()
    assert restored.report() == whole.report()


def test_summary_mean_is_exact() -> None:
    summary = Summary()
    for value in (1e16, 1.0, -1e16):
        summary.add(value)
    assert summary.mean == pytest.approx(1 / 3)  # a float running sum would give 0


def test_timing_report_and_wall_time() -> None:
    a, b = StepTiming(), StepTiming()
    a.add_progress({"batch_seconds": [1.0, 3.0], "row_seconds": [0.5], "first_ms": 1000, "last_ms": 4000})
    a.add_progress({"batch_seconds": [], "row_seconds": [], "first_ms": 0, "last_ms": 0})  # no info
    b.add_progress({"batch_seconds": [2.0], "first_ms": 2000, "last_ms": 9500})
    report = timing_report("r", {"a": a, "b": b})
    assert report["first_ms"] == 1000 and report["last_ms"] == 9500
    assert report["wall_seconds"] == 8.5
    assert report["steps"]["a"]["batch_seconds"]["mean"] == 2.0
    assert report["steps"]["a"]["wall_seconds"] == 3.0
    assert report["steps"]["b"]["row_seconds"]["count"] == 0
    assert timing_report("r", {})["wall_seconds"] is None


def test_histogram_stays_bounded() -> None:
    stats = _stats([10 ** (e / 10) for e in range(-120, 120)] * 3)  # 1e-12 s .. 1e12 s
    assert len(stats.buckets) <= max(stats.buckets) + 1 <= 600
    assert stats.report()["p50"] == pytest.approx(1.0, rel=0.3)


PROGRESS = st.fixed_dictionaries(
    {
        "batch_seconds": st.lists(LATENCY, max_size=3),
        "row_seconds": st.lists(LATENCY, max_size=5),
        "first_ms": st.integers(0, 10_000),
        "last_ms": st.integers(0, 10_000),
        "queue_ms": st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 50)), max_size=4).map(
            lambda pairs: _histogram(pairs)
        ),
        "e2e_ms": st.one_of(
            st.none(),
            st.lists(st.tuples(st.integers(0, 10**7), st.integers(1, 50)), max_size=4).map(
                lambda pairs: _histogram(pairs)
            ),
        ),
    }
)


@given(st.lists(PROGRESS, max_size=12), st.integers(0, 12))
def test_step_timing_merge_of_halves_equals_whole(records: list[dict], cut: int) -> None:
    def fold(part: list[dict]) -> StepTiming:
        timing = StepTiming()
        for record in part:
            timing.add_progress(record)
        return timing

    whole = fold(records)
    merged = fold(records[cut:])
    merged.merge(StepTiming.from_json(json.loads(json.dumps(fold(records[:cut]).to_json()))))
    assert merged.to_json() == whole.to_json()
    assert timing_report("r", {"s": merged}) == timing_report("r", {"s": whole})


def _histogram(pairs: list[tuple[int, int]]) -> dict[str, object]:
    """A progress record's LatencyHistogram as written by the runtime (ms, rows)."""
    histogram = LatencyHistogram()
    for ms, rows in pairs:
        histogram.add(ms, rows)
    return Progress("r", "s", "p", queue_ms=histogram).to_record()["queue_ms"]  # type: ignore[no-any-return]


def test_per_row_latencies_fold_from_progress_records() -> None:
    timing = StepTiming()
    # two transactions: 10 rows waited 100 ms, 30 rows 200 ms, 10 rows 1000 ms; outputs older
    timing.add_progress({"queue_ms": _histogram([(100, 10), (200, 30)]), "e2e_ms": _histogram([(5000, 40)])})
    timing.add_progress({"queue_ms": _histogram([(1000, 10)]), "e2e_ms": None})
    timing.add_progress({"first_ms": 1})  # a record from before these fields: nothing to add
    report = timing.report()
    queue = report["queue_ms"]
    assert (queue["count"], queue["min"], queue["max"]) == (50, 100.0, 1000.0)
    assert queue["mean"] == (100 * 10 + 200 * 30 + 1000 * 10) / 50
    assert queue["p50"] == pytest.approx(200, rel=0.022)  # rank 25 of 50
    assert queue["p95"] == queue["p99"] == pytest.approx(1000, rel=0.022)
    assert report["end_to_end_ms"]["count"] == 40 and report["end_to_end_ms"]["p99"] == 5000.0
    run = timing_report("r", {"s": timing, "t": StepTiming()}, leaves=["s"])
    assert run["end_to_end_ms"] == report["end_to_end_ms"]
    assert timing_report("r", {"s": timing}, leaves=[])["end_to_end_ms"]["count"] == 0


def test_a_snapshot_from_before_per_row_latencies_restores() -> None:
    timing = StepTiming()
    timing.add_progress({"batch_seconds": [0.5], "first_ms": 1, "last_ms": 2})
    old = timing.to_json()
    del old["queue"], old["e2e"]
    restored = StepTiming.from_json(old)
    assert restored.report()["batch_seconds"] == timing.report()["batch_seconds"]
    assert restored.report()["queue_ms"]["count"] == 0
    restored.add_progress({"queue_ms": _histogram([(7, 3)])})
    assert restored.report()["queue_ms"]["p50"] == 7.0
