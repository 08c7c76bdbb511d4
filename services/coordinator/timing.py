"""Timing aggregates: exact count/min/max/mean plus percentiles from a fixed log histogram.

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


class StepTimingReport(TypedDict):
    batch_seconds: LatencyReport
    row_seconds: LatencyReport
    first_ms: int | None
    last_ms: int | None
    wall_seconds: float | None


class TimingReport(TypedDict):
    run_id: str
    resolution: str
    first_ms: int | None
    last_ms: int | None
    wall_seconds: float | None
    steps: dict[str, StepTimingReport]


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
        )

    def to_json(self) -> dict[str, Any]:
        # JSON object keys are strings; sorted so snapshots of equal states are equal text.
        return super().to_json() | {"buckets": {str(i): self.buckets[i] for i in sorted(self.buckets)}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyStats:
        base = Summary.from_json(data)
        buckets = {int(i): n for i, n in data["buckets"].items()}
        return cls(base.count, base.min, base.max, base.total, buckets)


@dataclass
class StepTiming:
    """Latency and activity window of one step, folded from its progress records."""

    batches: LatencyStats = field(default_factory=LatencyStats)
    rows: LatencyStats = field(default_factory=LatencyStats)
    first_ms: int | None = None
    last_ms: int | None = None

    def add_progress(self, record: dict[str, Any]) -> None:
        for value in record.get("batch_seconds") or ():
            self.batches.add(value)
        for value in record.get("row_seconds") or ():
            self.rows.add(value)
        # 0 is the schema default of records written before these fields existed: no information.
        self._widen(record.get("first_ms") or None, record.get("last_ms") or None)

    def _widen(self, first_ms: int | None, last_ms: int | None) -> None:
        self.first_ms = least(self.first_ms, first_ms)
        self.last_ms = greatest(self.last_ms, last_ms)

    def merge(self, other: StepTiming) -> None:
        self.batches.merge(other.batches)
        self.rows.merge(other.rows)
        self._widen(other.first_ms, other.last_ms)

    def report(self) -> StepTimingReport:
        return StepTimingReport(
            batch_seconds=self.batches.report(),
            row_seconds=self.rows.report(),
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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepTiming:
        return cls(
            LatencyStats.from_json(data["batches"]),
            LatencyStats.from_json(data["rows"]),
            data["first_ms"],
            data["last_ms"],
        )


def _wall(first_ms: int | None, last_ms: int | None) -> float | None:
    return None if first_ms is None or last_ms is None else (last_ms - first_ms) / 1000


def timing_report(run_id: str, steps: dict[str, StepTiming]) -> TimingReport:
    """Per step latency; the run's wall time spans the first to the last progress record."""
    first_ms: int | None = None
    last_ms: int | None = None
    for timing in steps.values():
        first_ms = least(first_ms, timing.first_ms)
        last_ms = greatest(last_ms, timing.last_ms)
    return TimingReport(
        run_id=run_id,
        resolution=RESOLUTION,
        first_ms=first_ms,
        last_ms=last_ms,
        wall_seconds=_wall(first_ms, last_ms),
        steps={stage: timing.report() for stage, timing in steps.items()},
    )
