from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.coordinator.layout import FLOW_METRICS, QualityLayout
from services.coordinator.quality import QualityAgg

#: A stage like the example's `score`: source_index, tokens (nullable int), a latency and the score.
SCORED = QualityLayout(
    (("source_index", False), ("tokens", False), ("latency_ms", True), ("teacher_score", True)),
    ("sql",),
    ("teacher_score",),
)
PLAIN = QualityLayout((("source_index", False),))

ROW = st.fixed_dictionaries(
    {"source_index": st.integers(0, 10**12)},
    optional={
        "keep": st.one_of(st.none(), st.booleans()),
        "exec_pass": st.one_of(st.none(), st.booleans()),
        "gold_match": st.one_of(st.none(), st.booleans()),
        "teacher_score": st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)),
        "latency_ms": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        "tokens": st.one_of(st.none(), st.integers(-(2**31), 2**31)),
        "reject_reason": st.sampled_from(["ok", "too_short", "empty_output"]),
        "exec_error": st.one_of(st.none(), st.sampled_from(["", "no such table: t", "syntax error"])),
        "gold_error": st.one_of(st.none(), st.sampled_from(["", "timeout: no answer in 10000 ms"])),
    },
)


def _agg(rows: list[dict[str, Any]], layout: QualityLayout = SCORED) -> QualityAgg:
    agg = QualityAgg(layout)
    agg.add_rows(rows)
    return agg


def test_hand_computed_report() -> None:
    rows: list[dict[str, Any]] = [
        {"keep": True, "exec_pass": True, "gold_match": True, "teacher_score": 1.0, "reject_reason": "ok"},
        {
            "keep": False,
            "exec_pass": False,
            "gold_match": False,
            "teacher_score": 0.0,
            "reject_reason": "too_short",
            "exec_error": "no such table: x",
        },
        {"keep": True, "exec_pass": True, "gold_match": None, "teacher_score": 0.5, "reject_reason": "ok"},
        {"exec_pass": None, "teacher_score": None},  # no keep: counts as kept
        # A broken gold: not a gold evaluation, its own count.
        {"keep": False, "exec_pass": True, "gold_match": None, "gold_error": "no such table: y"},
    ]
    rows = [
        {"source_index": i, "tokens": 10 * i or None, "latency_ms": 2.5 * i} | row
        for i, row in enumerate(rows)
    ]
    report = _agg(rows).report("r", "keep_by_score")
    assert report == {
        "run_id": "r",
        "stage": "keep_by_score",
        "total": 5,
        "kept": 3,
        "rejected": 2,
        "p_keep": 0.6,
        "reject_reasons": {"ok": 2, "too_short": 1},
        "metric_sets": ["sql"],
        "exec_evaluated": 4,
        "exec_passed": 3,
        "exec_pass_rate": 3 / 4,
        "exec_error_rate": 1 / 4,
        "gold_evaluated": 2,
        "gold_matched": 1,
        "gold_match_rate": 0.5,
        "gold_errored": 1,
        "gold_error_rate": 1 / 3,
        "exec_errors": {"no such table: x": 1},
        "gold_errors": {"no such table: y": 1},
        "columns": {
            "source_index": _stats(5, 0, 0.0, 2.0, 2.0, 4.0, 4.0),
            "tokens": _stats(4, 1, 10.0, 25.0, 20.0, 40.0, 40.0),
            "latency_ms": _stats(5, 0, 0.0, 5.0, 5.0, 10.0, 10.0),
            "teacher_score": _stats(3, 2, 0.0, 0.5, 0.5, 1.0, 1.0)
            | {
                "histogram": [
                    {"low": 0.0, "high": 0.0, "count": 1},
                    {"low": 0.5, "high": 0.5, "count": 1},
                    {"low": 1.0, "high": 1.0, "count": 1},
                ]
            },
        },
    }
    metrics = _agg(rows).metrics()
    assert metrics["teacher_score_mean"] == 0.5 and metrics["tokens_nulls"] == 1
    assert metrics["latency_ms_p95"] == 10.0 and metrics["exec_error_rate"] == 0.25


def _stats(
    count: int, nulls: int, low: float, mean: float, p50: float, p95: float, high: float
) -> dict[str, Any]:
    return {
        "count": count,
        "nulls": nulls,
        "non_finite": 0,
        "min": low,
        "mean": mean,
        "p50": p50,
        "p95": p95,
        "max": high,
    }


def test_numeric_columns_equal_an_independent_computation() -> None:
    """Past 64 distinct values: count, min, max and mean exact, percentiles within 2.2 %."""
    rnd = random.Random(5)
    rows = [
        {"source_index": i, "latency_ms": rnd.lognormvariate(5, 1), "tokens": (i * 7919) % 1000 - 300}
        for i in range(5000)
    ]
    stats = _agg(rows).report("r", "s")["columns"]
    for column in ("latency_ms", "tokens", "source_index"):
        values = [r[column] for r in rows]
        got = stats[column]
        assert got["count"] == len(values) and got["nulls"] == 0
        assert got["min"] == min(values) and got["max"] == max(values)
        assert got["mean"] == float(sum(Fraction(v) for v in values) / len(values))
        for q, key in ((50, "p50"), (95, "p95")):
            exact = sorted(values)[math.ceil(q / 100 * len(values)) - 1]
            assert abs(got[key] - exact) <= 0.022 * abs(exact)
        median = statistics.median_low(values)
        assert abs(got["p50"] - median) <= 0.022 * abs(median)


def test_a_stage_without_the_sql_columns_has_no_sql_metrics() -> None:
    agg = _agg([{"source_index": 0}, {"source_index": 1}], PLAIN)
    report = agg.report("r", "seeds")
    assert report["metric_sets"] == [] and "exec_pass_rate" not in report
    assert report["columns"]["source_index"]["p50"] == 0.0
    assert agg.metrics()["p_keep"] == 1.0
    assert QualityAgg(PLAIN).metrics()["p_keep"] is None
    assert QualityAgg(PLAIN).metrics()["source_index_mean"] is None


def test_metrics_are_the_layouts_names() -> None:
    """What the aggregate reports is what the layout (and so the gate parser) knows, flow aside."""
    for layout in (SCORED, PLAIN, QualityLayout()):
        names = [n for n in layout.metrics() if n not in FLOW_METRICS and n != "judge_score_mean"]
        assert list(_agg([{"source_index": 1}], layout).metrics()) == names


def test_sql_rates_are_none_without_evaluations() -> None:
    metrics = _agg([{"source_index": 0, "exec_pass": None, "gold_match": None}]).metrics()
    assert metrics["exec_pass_rate"] is None and metrics["exec_error_rate"] is None
    assert metrics["gold_errored"] == 0 and metrics["gold_error_rate"] is None


def test_long_error_texts_are_truncated() -> None:
    report = _agg([{"source_index": 0, "exec_error": "x" * 1000, "gold_error": "y" * 500}]).report("r", "s")
    assert list(report["exec_errors"]) == ["x" * 200] and list(report["gold_errors"]) == ["y" * 200]


@given(
    st.lists(ROW, max_size=40), st.lists(st.integers(0, 40), max_size=4), st.randoms(use_true_random=False)
)
def test_merging_any_split_gives_the_same_aggregate(
    rows: list[dict[str, Any]], cuts: list[int], rnd: random.Random
) -> None:
    whole = _agg(rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    bounds = [0, *sorted(cuts), len(shuffled)]
    merged = QualityAgg(SCORED)
    for lo, hi in itertools.pairwise(bounds):
        merged.merge(QualityAgg.from_json(json.loads(json.dumps(_agg(shuffled[lo:hi]).to_json()))))
    assert merged.to_json() == whole.to_json()
    assert merged.report("r", "s") == whole.report("r", "s")


def test_snapshot_is_json_text_and_round_trips() -> None:
    agg = _agg(
        [{"source_index": 3, "keep": False, "teacher_score": 0.1, "exec_error": "boom", "exec_pass": False}]
    )
    text = json.dumps(agg.to_json())
    restored = QualityAgg.from_json(json.loads(text))
    assert restored == agg and restored.layout == SCORED
    assert json.dumps(restored.to_json()) == text


def test_snapshot_of_the_fixed_sql_report_restores_its_counts() -> None:
    """What the coordinator stored before quality had layouts (main at 99b31d9)."""
    old = {
        "total": 4,
        "kept": 3,
        "exec_evaluated": 3,
        "exec_passed": 2,
        "gold_evaluated": 2,
        "gold_matched": 1,
        "scores": {"count": 3, "min": 0.0, "max": 1.0, "sum": "3/2"},
        "reject_reasons": {"ok": 3, "too_short": 1},
        "exec_errors": {"no such table: x": 1},
    }
    restored = QualityAgg.from_json(old, SCORED)
    metrics = restored.metrics()
    assert (metrics["total"], metrics["kept"], metrics["exec_pass_rate"], metrics["gold_match_rate"]) == (
        4,
        3,
        2 / 3,
        0.5,
    )
    assert metrics["gold_errored"] == 0
    assert restored.report("r", "s")["exec_errors"] == {"no such table: x": 1}
    # its teacher-score summary had no histogram: the columns say they start at the restore
    assert restored.report("r", "s")["columns_partial"] is True
    restored.add_rows([{"source_index": 9, "teacher_score": 0.5}])
    assert restored.metrics()["teacher_score_count"] == 1
    assert QualityAgg.from_json(old).layout == QualityLayout(sets=("sql",))


def test_an_aggregate_of_another_layout_merges_what_both_have() -> None:
    """Statistics a step of another pipeline version put in a progress record: no exception (the
    coordinator would stop on that record at every restart), the common part merged, marked."""
    mine = _agg([{"source_index": 1, "exec_pass": True, "teacher_score": 1.0}])
    theirs = _agg([{"source_index": 5, "keep": False}], PLAIN)
    mine.merge(theirs)
    metrics = mine.metrics()
    assert (metrics["total"], metrics["kept"], metrics["source_index_max"]) == (2, 1, 5.0)
    assert metrics["exec_evaluated"] == 1 and mine.report("r", "s")["columns_partial"] is True
