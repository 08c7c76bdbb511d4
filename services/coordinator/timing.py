"""Timing aggregates: exact count/min/max/mean plus percentiles from a fixed log histogram.

Per step: `batch_seconds` (each input message, consumed to ready), `row_seconds` (asynchronous
steps: each request), and per row (FastDistill's MarkTime, from the progress records'
histograms, in ms): `queue_ms`, from the Kafka timestamp of the message a row came in to the
transaction that committed its output, and `end_to_end_ms`, from when its seed was produced
(`origin_ms` of the batches) to that transaction. The run's `end_to_end_ms` is that of the rows
reaching the pipeline's leaves. Those per-row latencies use `shared.sketch` buckets (the same
2.2 % accuracy, no range limit) and report p50/p95/p99.

Latency samples arrive without bound (one per batch, many per row), so they are never kept:
each sample lands in a log-spaced bucket. Buckets have a fixed width of 2**(1/16) (about
4.4 %) between `HIST_LOW` and `HIST_HIGH`, and a percentile is reported as the geometric
centre of its bucket clamped to the exact [min, max], so its relative error is at most
about 2.2 %. Samples outside the range land in the end buckets, where the clamp to the
exact min/max still bounds the percentile; at most ~590 buckets exist, whatever the run's
size. Counts per bucket add up, which makes two aggregates mergeable in any order.
Sums are exact fractions (every float is a dyadic rational), so the mean does not depend on
the order in which samples were added either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypedDict

from services.coordinator import greatest, least
from shared.sketch import RELATIVE_ERROR, STEPS, Sketch

#: Buckets per doubling; the relative resolution of a percentile is 2**(1/(2*HIST_STEPS)) - 1.
HIST_STEPS = 16
HIST_LOW = 1e-6
HIST_HIGH = 1e5
_LAST_BUCKET = math.ceil(math.log2(HIST_HIGH / HIST_LOW) * HIST_STEPS)
RESOLUTION = (
    f"log-spaced buckets, {HIST_STEPS} per doubling between {HIST_LOW:g}s and {HIST_HIGH:g}s; "
    f"percentiles within {2 ** (1 / (2 * HIST_STEPS)) - 1:.1%} (clamped to exact min/max)"
)


class LatencyReport(TypedDict):
    count: int
    min: float | None
    max: float | None
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


class RowLatencyReport(TypedDict):
    """Per-row latency in ms."""

    count: int
    min: float | None
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


class StepTimingReport(TypedDict):
    batch_seconds: LatencyReport
    row_seconds: LatencyReport
    queue_ms: RowLatencyReport
    end_to_end_ms: RowLatencyReport
    first_ms: int | None
    last_ms: int | None
    wall_seconds: float | None


class TimingReport(TypedDict):
    run_id: str
    resolution: str
    row_latency_resolution: str
    first_ms: int | None
    last_ms: int | None
    wall_seconds: float | None
    #: rows reaching the leaves: seed produced -> committed by the leaf's step
    end_to_end_ms: RowLatencyReport
    steps: dict[str, StepTimingReport]


ROW_RESOLUTION = (
    f"whole ms in log-spaced buckets, {STEPS} per doubling; percentiles within {RELATIVE_ERROR:.1%} "
    "(clamped to exact min/max); count, min, max and mean exact"
)


def _sum_to_json(total: Fraction) -> str:
    return f"{total.numerator}/{total.denominator}"


@dataclass
class Summary:
    """Count, min, max and exact sum of a stream of numbers."""

    count: int = 0
    min: float | None = None
    max: float | None = None
    total: Fraction = field(default_factory=Fraction)

    def add(self, value: float) -> None:
        value = float(value)
        self.count += 1
        self.min = least(self.min, value)
        self.max = greatest(self.max, value)
        self.total += Fraction(value)

    def merge(self, other: Summary) -> None:
        self.count += other.count
        self.total += other.total
        self.min = least(self.min, other.min)
        self.max = greatest(self.max, other.max)

    @property
    def mean(self) -> float | None:
        return float(self.total / self.count) if self.count else None

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "min": self.min, "max": self.max, "sum": _sum_to_json(self.total)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(data["count"], data["min"], data["max"], Fraction(data["sum"]))


def bucket_of(value: float) -> int:
    if value <= HIST_LOW:
        return 0
    return min(_LAST_BUCKET, 1 + math.floor(math.log2(value / HIST_LOW) * HIST_STEPS))


def bucket_centre(index: int) -> float:
    if index == 0:
        return HIST_LOW
    return HIST_LOW * 2 ** ((index - 0.5) / HIST_STEPS)


@dataclass
class LatencyStats(Summary):
    """A Summary plus a sparse histogram (bucket index -> samples) for percentiles."""

    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, value: float) -> None:
        super().add(value)
        index = bucket_of(float(value))
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def merge(self, other: Summary) -> None:
        super().merge(other)
        assert isinstance(other, LatencyStats)
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (q in 0..100), to the histogram's resolution."""
        if not self.count or self.min is None or self.max is None:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(self.max, max(self.min, bucket_centre(index)))
        return self.max

    def report(self) -> LatencyReport:
        return LatencyReport(
            count=self.count,
            min=self.min,
            max=self.max,
            mean=self.mean,
            p50=self.percentile(50),
            p90=self.percentile(90),
            p95=self.percentile(95),
            p99=self.percentile(99),
        )

    def to_json(self) -> dict[str, Any]:
        # JSON object keys are strings; sorted so snapshots of equal states are equal text.
        return super().to_json() | {"buckets": {str(i): self.buckets[i] for i in sorted(self.buckets)}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyStats:
        base = Summary.from_json(data)
        buckets = {int(i): n for i, n in data["buckets"].items()}
        return cls(base.count, base.min, base.max, base.total, buckets)


def row_latency_report(sketch: Sketch) -> RowLatencyReport:
    low, high = sketch.bounds()
    return RowLatencyReport(
        count=sketch.count,
        min=None if low is None else float(low),
        mean=sketch.mean,
        p50=sketch.percentile(50),
        p95=sketch.percentile(95),
        p99=sketch.percentile(99),
        max=None if high is None else float(high),
    )


def row_latencies() -> Sketch:
    """A sketch of per-row latencies in ms: buckets from the first value (progress records carry
    buckets, which must merge alike)."""
    return Sketch(exact_limit=0)


def _fold_histogram(sketch: Sketch, histogram: dict[str, Any] | None) -> None:
    """A progress record's LatencyHistogram (shared.runtime.progress) into `sketch`."""
    if not histogram or not histogram["count"]:
        return
    buckets: dict[int, int] = {}
    for index, n in zip(histogram["buckets"], histogram["counts"], strict=False):
        buckets[index] = buckets.get(index, 0) + n
    sketch.merge_buckets(
        histogram["count"],
        histogram["min_ms"],
        histogram["max_ms"],
        histogram["sum_ms"],
        histogram["zeros"],
        buckets,
    )


@dataclass
class StepTiming:
    """Latency and activity window of one step, folded from its progress records."""

    batches: LatencyStats = field(default_factory=LatencyStats)
    rows: LatencyStats = field(default_factory=LatencyStats)
    first_ms: int | None = None
    last_ms: int | None = None
    queue: Sketch = field(default_factory=row_latencies)
    e2e: Sketch = field(default_factory=row_latencies)

    def add_progress(self, record: dict[str, Any]) -> None:
        for value in record.get("batch_seconds") or ():
            self.batches.add(value)
        for value in record.get("row_seconds") or ():
            self.rows.add(value)
        _fold_histogram(self.queue, record.get("queue_ms"))
        _fold_histogram(self.e2e, record.get("e2e_ms"))
        # 0 is the schema default of records written before these fields existed: no information.
        self._widen(record.get("first_ms") or None, record.get("last_ms") or None)

    def _widen(self, first_ms: int | None, last_ms: int | None) -> None:
        self.first_ms = least(self.first_ms, first_ms)
        self.last_ms = greatest(self.last_ms, last_ms)

    def merge(self, other: StepTiming) -> None:
        self.batches.merge(other.batches)
        self.rows.merge(other.rows)
        self.queue.merge(other.queue)
        self.e2e.merge(other.e2e)
        self._widen(other.first_ms, other.last_ms)

    def report(self) -> StepTimingReport:
        return StepTimingReport(
            batch_seconds=self.batches.report(),
            row_seconds=self.rows.report(),
            queue_ms=row_latency_report(self.queue),
            end_to_end_ms=row_latency_report(self.e2e),
            first_ms=self.first_ms,
            last_ms=self.last_ms,
            wall_seconds=_wall(self.first_ms, self.last_ms),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches.to_json(),
            "rows": self.rows.to_json(),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "queue": self.queue.to_json(),
            "e2e": self.e2e.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepTiming:
        # queue/e2e came later: a snapshot from before has no per-row latencies yet.
        return cls(
            LatencyStats.from_json(data["batches"]),
            LatencyStats.from_json(data["rows"]),
            data["first_ms"],
            data["last_ms"],
            Sketch.from_json(data["queue"], exact_limit=0) if "queue" in data else row_latencies(),
            Sketch.from_json(data["e2e"], exact_limit=0) if "e2e" in data else row_latencies(),
        )


def _wall(first_ms: int | None, last_ms: int | None) -> float | None:
    return None if first_ms is None or last_ms is None else (last_ms - first_ms) / 1000


def timing_report(run_id: str, steps: dict[str, StepTiming], leaves: list[str] | None = None) -> TimingReport:
    """Per step latency; the run's wall time spans the first to the last progress record, its
    end-to-end latency is that of the rows of the `leaves` (default: every step's last in order)."""
    first_ms: int | None = None
    last_ms: int | None = None
    for timing in steps.values():
        first_ms = least(first_ms, timing.first_ms)
        last_ms = greatest(last_ms, timing.last_ms)
    end_to_end = row_latencies()
    for stage in leaves if leaves is not None else list(steps)[-1:]:
        if stage in steps:
            end_to_end.merge(steps[stage].e2e)
    return TimingReport(
        run_id=run_id,
        resolution=RESOLUTION,
        row_latency_resolution=ROW_RESOLUTION,
        first_ms=first_ms,
        last_ms=last_ms,
        wall_seconds=_wall(first_ms, last_ms),
        end_to_end_ms=row_latency_report(end_to_end),
        steps={stage: timing.report() for stage, timing in steps.items()},
    )
