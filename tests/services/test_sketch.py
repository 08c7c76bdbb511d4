"""shared.sketch: exact while few distinct values, bucketed within the documented accuracy after,
and identical whatever split and order the values were added and merged in."""

from __future__ import annotations

import itertools
import json
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.runtime.progress import LatencyHistogram
from shared.sketch import (
    EXACT_LIMIT,
    RELATIVE_ERROR,
    STEPS,
    ExactSum,
    Sketch,
    bucket_of,
    bucket_value,
    exact_terms,
)

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _sketch(values: list[float], limit: int = EXACT_LIMIT) -> Sketch:
    sketch = Sketch(limit)
    sketch.add_floats(values)
    return sketch


def test_exact_while_few_distinct_values() -> None:
    sketch = _sketch([0.0, 0.5, 0.5, 1.0, -0.0])
    assert sketch.distinct() == [(0.0, 2), (0.5, 2), (1.0, 1)]  # -0.0 is 0.0
    assert sketch.report() == {"count": 5, "min": 0.0, "mean": 0.4, "p50": 0.5, "p95": 1.0, "max": 1.0}
    assert sketch.percentile(40) == 0.0 and sketch.percentile(41) == 0.5


def test_nan_and_infinities_are_counted_apart() -> None:
    sketch = _sketch([1.0, math.nan, math.inf, -math.inf, 3.0])
    assert sketch.count == 2 and sketch.non_finite == 3
    assert sketch.report()["mean"] == 2.0


def test_switches_to_buckets_past_the_limit_and_keeps_exact_count_min_max_mean() -> None:
    values = [float(i) / 7 for i in range(-50, 200)]
    sketch = _sketch(values)
    assert sketch.distinct() is None and sketch.count == 250
    low, high = sketch.bounds()
    assert (low, high) == (min(values), max(values))
    assert sketch.mean == float(sum(Fraction(v) for v in values) / 250)
    assert sketch.zeros == 1  # 0/7 has a bucket of its own


def test_integers_sum_exactly_beyond_float_precision() -> None:
    sketch = Sketch(exact_limit=0)
    sketch.add_ints([2**62, 1, -(2**62), 2**62])
    assert sketch.mean == float(Fraction(2**62 + 1, 4))


def test_exact_sum_is_order_independent_and_round_trips() -> None:
    values = [1e16, 1.0, -1e16, 0.1, 3, 2.5e-300]
    forward, backward = ExactSum(), ExactSum()
    for v in values:
        forward.add(v)
    for v in reversed(values):
        backward.add(v)
    assert forward.fraction() == backward.fraction() == sum(Fraction(v) for v in values)
    assert ExactSum.from_json(forward.to_json()).fraction() == forward.fraction()
    times = ExactSum()
    times.add_times(0.1, 7)
    assert times.fraction() == 7 * Fraction(0.1)


def test_bucket_resolution_is_as_documented() -> None:
    assert pytest.approx(0.0219, abs=1e-4) == RELATIVE_ERROR
    rnd = random.Random(7)
    for _ in range(2000):
        value = 10 ** rnd.uniform(-300, 300)
        centre = bucket_value(bucket_of(value))
        assert abs(centre - value) <= RELATIVE_ERROR * value * (1 + 1e-9)
    # bucket edges: 2**(k/STEPS) starts bucket k
    assert bucket_of(2.0) == STEPS and bucket_of(1.0) == 0 and bucket_of(0.5) == -STEPS


@settings(max_examples=300)
@given(
    st.lists(FINITE, min_size=1, max_size=300),
    st.sampled_from([0, 4, EXACT_LIMIT]),
    st.sampled_from([50, 95, 99]),
)
def test_percentile_within_the_bound_of_the_exact_nearest_rank(
    values: list[float], limit: int, q: int
) -> None:
    got = _sketch(values, limit).percentile(q)
    exact = _nearest_rank([v + 0.0 for v in values], q)
    assert got is not None
    assert abs(got - exact) <= RELATIVE_ERROR * abs(exact) * (1 + 1e-12)
    if len({v + 0.0 for v in values}) <= limit:
        assert got == exact


@settings(max_examples=300)
@given(
    st.lists(FLOATS, max_size=120),
    st.lists(st.integers(0, 120), max_size=5),
    st.sampled_from([0, 3, EXACT_LIMIT]),
    st.randoms(use_true_random=False),
)
def test_merging_any_split_in_any_order_gives_the_same_sketch(
    values: list[float], cuts: list[int], limit: int, rnd: random.Random
) -> None:
    whole = _sketch(values, limit)
    shuffled = list(values)
    rnd.shuffle(shuffled)
    bounds = [0, *sorted(cuts), len(shuffled)]
    parts = [_sketch(shuffled[lo:hi], limit) for lo, hi in itertools.pairwise(bounds)]
    rnd.shuffle(parts)
    merged = Sketch(limit)
    for part in parts:
        merged.merge(Sketch.from_json(json.loads(json.dumps(part.to_json())), limit))
    assert merged.to_json() == whole.to_json()
    assert merged.report() == whole.report()
    assert merged == whole


@given(st.lists(st.tuples(st.integers(-5, 10**7), st.integers(0, 50)), max_size=40))
def test_progress_histograms_fold_into_the_same_sketch_as_the_latencies(pairs: list[tuple[int, int]]) -> None:
    """What the runtime writes (LatencyHistogram, per message: latency x rows) and the coordinator
    folds (merge_buckets) equals adding every row's latency to a sketch."""
    histogram = LatencyHistogram()
    direct = Sketch(exact_limit=0)
    for ms, rows in pairs:
        histogram.add(ms, rows)
        direct.add_weighted(max(0, ms), rows)
    folded = Sketch(exact_limit=0)
    folded.merge_buckets(
        histogram.count,
        histogram.min_ms,
        histogram.max_ms,
        histogram.sum_ms,
        histogram.zeros,
        dict(zip(histogram.buckets, histogram.counts, strict=True)),
    )
    assert folded.to_json() == direct.to_json()
    assert histogram.count == sum(rows for _, rows in pairs)


def test_histogram_bins_cover_every_value() -> None:
    values = [float(v) for v in range(1000)]
    bins = _sketch(values).histogram(10)
    assert len(bins) == 10 and sum(n for _, _, n in bins) == 1000
    assert bins[0][0] == 0.0 and bins[-1][1] == 999.0
    assert _sketch([2.0, 2.0]).histogram(10) == [(2.0, 2.0, 2)]
    assert Sketch().histogram(10) == []


@settings(max_examples=500)
@given(st.lists(FINITE, max_size=60))
def test_float_sums_are_exact(values: list[float]) -> None:
    total = ExactSum()
    for term in exact_terms(values):
        total.add(term)
    assert total.fraction() == sum((Fraction(v) for v in values), Fraction(0))


def test_float_sums_near_the_largest_float_are_exact() -> None:
    values = [1.7e308, 1.7e308, -1.7e308, 5e-324]
    total = ExactSum()
    for term in exact_terms(values):
        total.add(term)
    assert total.fraction() == sum(Fraction(v) for v in values)
