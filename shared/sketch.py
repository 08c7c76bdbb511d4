"""A mergeable distribution sketch: exact count, min, max and sum, plus percentiles.

Used for every numeric column of a stage's rows (the coordinator's quality report) and for
per-row latencies (progress records, the timing report). Two aggregates built from any split
of the same values, merged in any order, are identical (their `to_json` is equal), so a
coordinator restored from a snapshot reaches exactly the report of one never interrupted.

- Up to `EXACT_LIMIT` distinct values the sketch keeps every distinct value with its count:
  percentiles are exact (scores, flags stored as numbers, small integers stay here).
- Past that it keeps signed log-spaced buckets, `STEPS` per doubling, with no range limit (an
  index per power-of-two fraction: ±1e-300 and ±1e300 alike); a percentile is its bucket's
  geometric centre clamped to the exact [min, max], so it is within `RELATIVE_ERROR` (2.2 %) of
  the exact nearest-rank value. Zero is a bucket of its own, so it is exact.
- Sums are exact integers scaled by a power of two (every finite float is a dyadic rational), so
  the mean does not depend on the order in which values were added. NaN and ±inf are not
  values of the distribution: they are counted apart (`non_finite`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, TypedDict

#: Buckets per doubling of |value|.
STEPS = 16
#: Largest relative error of a percentile read from buckets (half a bucket, geometrically).
RELATIVE_ERROR = 2 ** (1 / (2 * STEPS)) - 1
#: Distinct values kept exactly before switching to buckets.
EXACT_LIMIT = 64
ACCURACY = (
    f"exact up to {EXACT_LIMIT} distinct values, else log-spaced buckets ({STEPS} per doubling): "
    f"percentiles within {RELATIVE_ERROR:.1%} of the exact nearest-rank value, clamped to the exact "
    "min/max; count, min, max and mean exact"
)

Number = int | float


def bucket_of(magnitude: Number) -> int:
    """The bucket of a value > 0: floor(log2(value) * STEPS), any magnitude."""
    return math.floor(math.log2(magnitude) * STEPS)


def bucket_value(index: int) -> float:
    """The geometric centre of a bucket (of positive values); inf past the largest float (the
    caller clamps to the exact max)."""
    whole, part = divmod(index, STEPS)
    try:
        return math.ldexp(2 ** ((part + 0.5) / STEPS), whole)
    except OverflowError:
        return math.inf


def _rank(q: float, count: int) -> int:
    """Nearest rank (1-based) of percentile `q` (0..100) among `count` values."""
    return max(1, math.ceil(q / 100 * count))


def exact_terms(values: Sequence[Number]) -> list[Number]:
    """A few floats whose exact sum is the exact sum of `values` (finite).

    Each round takes the correctly rounded sum of what is left (math.fsum, in C) and subtracts it,
    until nothing is left: two or three rounds for ordinary data, against a Python-level exact
    addition per value (7x slower). Where fsum overflows, the values themselves are the terms.
    """
    work = list(values)
    terms: list[Number] = []
    try:
        # Each round leaves a residual at least 2**-52 times smaller, so a double's exponent range
        # (2**-1074 .. 2**1024) ends it within ~40 rounds.
        for _ in range(64):
            total = math.fsum(work)
            if total == 0.0:
                return terms
            terms.append(total)
            work.append(-total)
    except OverflowError:
        pass
    return list(values)


class ExactSum:
    """Sum of ints and finite floats as an integer over 2**shift: exact and order-independent."""

    __slots__ = ("numerator", "shift")

    def __init__(self, numerator: int = 0, shift: int = 0) -> None:
        self.numerator = numerator
        self.shift = shift

    def add(self, value: Number) -> None:
        if type(value) is int:
            self.numerator += value << self.shift
            return
        numerator, denominator = value.as_integer_ratio()
        shift = denominator.bit_length() - 1
        if shift > self.shift:
            self.numerator <<= shift - self.shift
            self.shift = shift
        self.numerator += numerator << (self.shift - shift)

    def add_int(self, total: int) -> None:
        self.numerator += total << self.shift

    def add_times(self, value: Number, times: int) -> None:
        """`value` added `times` times."""
        if type(value) is int:
            self.add_int(value * times)
            return
        numerator, denominator = value.as_integer_ratio()
        self.merge(ExactSum(numerator * times, denominator.bit_length() - 1))

    def merge(self, other: ExactSum) -> None:
        if other.shift > self.shift:
            self.numerator <<= other.shift - self.shift
            self.shift = other.shift
        self.numerator += other.numerator << (self.shift - other.shift)

    def fraction(self) -> Fraction:
        return Fraction(self.numerator, 1 << self.shift)

    def to_json(self) -> str:
        total = self.fraction()
        return f"{total.numerator}/{total.denominator}"

    @classmethod
    def from_json(cls, text: str) -> ExactSum:
        total = Fraction(text)
        return cls(total.numerator, total.denominator.bit_length() - 1)


class SketchReport(TypedDict):
    count: int
    min: float | None
    mean: float | None
    p50: float | None
    p95: float | None
    max: float | None


class Sketch:
    """See the module doc. `exact_limit=0` keeps buckets from the first value (latencies)."""

    __slots__ = ("count", "exact", "exact_limit", "max", "min", "neg", "non_finite", "pos", "total", "zeros")

    def __init__(self, exact_limit: int = EXACT_LIMIT) -> None:
        self.exact_limit = exact_limit
        self.count = 0
        self.non_finite = 0
        #: value -> count while exact; None once in buckets
        self.exact: Counter[Number] | None = Counter() if exact_limit > 0 else None
        # Bucket mode only (derived from `exact` otherwise):
        self.min: Number | None = None
        self.max: Number | None = None
        self.total = ExactSum()
        self.zeros = 0
        self.pos: Counter[int] = Counter()
        self.neg: Counter[int] = Counter()

    # -- input ---------------------------------------------------------------------------------
    def add_floats(self, values: list[float]) -> None:
        """Floats (a double column): NaN and ±inf counted apart, -0.0 read as 0.0."""
        finite = [v + 0.0 for v in values if v - v == 0.0]
        self.non_finite += len(values) - len(finite)
        self._add(finite, floats=True)

    def add_ints(self, values: list[int]) -> None:
        """Integers (an int or long column)."""
        self._add(values, floats=False)

    def _add(self, values: Sequence[Number], floats: bool) -> None:
        if not values:
            return
        self.count += len(values)
        if self.exact is not None:
            self.exact.update(values)
            if len(self.exact) > self.exact_limit:
                self._to_buckets()
            return
        self._bucket(values, floats)

    def add_weighted(self, value: int, weight: int) -> None:
        """`weight` copies of a non-negative integer (a latency in ms shared by a batch's rows)."""
        if weight <= 0:
            return
        if self.exact is not None:
            self.count += weight
            self.exact[value] += weight
            if len(self.exact) > self.exact_limit:
                self._to_buckets()
            return
        self.count += weight
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        self.total.add_int(value * weight)
        if value == 0:
            self.zeros += weight
        else:
            self.pos[bucket_of(value)] += weight

    def _bucket(self, values: Sequence[Number], floats: bool) -> None:
        low, high = min(values), max(values)
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        if not floats:
            self.total.add_int(sum(values))  # type: ignore[arg-type]
        else:
            for term in exact_terms(values):
                self.total.add(term)
        if low > 0:  # the common case: one pass
            self.pos.update([bucket_of(v) for v in values])
            return
        self.pos.update([bucket_of(v) for v in values if v > 0])
        self.neg.update([bucket_of(-v) for v in values if v < 0])
        self.zeros += values.count(0)

    def _to_buckets(self) -> None:
        exact, self.exact = self.exact, None
        assert exact is not None
        for value, n in exact.items():
            self.min = value if self.min is None else min(self.min, value)
            self.max = value if self.max is None else max(self.max, value)
            self.total.add_times(value, n)
            if value > 0:
                self.pos[bucket_of(value)] += n
            elif value < 0:
                self.neg[bucket_of(-value)] += n
            else:
                self.zeros += n

    def merge(self, other: Sketch) -> None:
        if other.exact_limit != self.exact_limit:
            raise ValueError(
                f"cannot merge sketches of exact limits {self.exact_limit} and {other.exact_limit}"
            )
        self.non_finite += other.non_finite
        if other.exact is not None:
            if self.exact is not None:
                self.count += other.count
                self.exact.update(other.exact)
                if len(self.exact) > self.exact_limit:
                    self._to_buckets()
                return
            theirs = Sketch(self.exact_limit)
            theirs.merge(other)  # a copy, turned to buckets below
            theirs._to_buckets()
            other = theirs
        elif self.exact is not None:
            self._to_buckets()
        self.count += other.count
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)
        self.total.merge(other.total)
        self.zeros += other.zeros
        self.pos.update(other.pos)
        self.neg.update(other.neg)

    def merge_buckets(
        self, count: int, low: int, high: int, total: int, zeros: int, buckets: dict[int, int]
    ) -> None:
        """Fold a histogram of non-negative integers built elsewhere with `bucket_of` (a
        progress record's latencies); only for a bucket-only sketch (`exact_limit=0`)."""
        if self.exact is not None:
            raise ValueError("merge_buckets needs a sketch with exact_limit=0")
        if count <= 0:
            return
        self.count += count
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        self.total.add_int(total)
        self.zeros += zeros
        self.pos.update(buckets)

    # -- output --------------------------------------------------------------------------------
    def bounds(self) -> tuple[Number | None, Number | None]:
        if self.exact is not None:
            return (min(self.exact), max(self.exact)) if self.exact else (None, None)
        return self.min, self.max

    @property
    def mean(self) -> float | None:
        if not self.count:
            return None
        if self.exact is not None:
            total = sum((Fraction(v) * n for v, n in self.exact.items()), Fraction(0))
            return float(total / self.count)
        return float(self.total.fraction() / self.count)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile, q in 0..100 (see the module doc for its accuracy)."""
        if not self.count:
            return None
        rank = _rank(q, self.count)
        seen = 0
        if self.exact is not None:
            for value in sorted(self.exact):
                seen += self.exact[value]
                if seen >= rank:
                    return float(value)
            return float(max(self.exact))  # unreachable: counts add up to count
        low, high = self.min, self.max
        assert low is not None and high is not None
        for index in sorted(self.neg, reverse=True):
            seen += self.neg[index]
            if seen >= rank:
                return float(min(high, max(low, -bucket_value(index))))
        seen += self.zeros
        if seen >= rank:
            return 0.0
        for index in sorted(self.pos):
            seen += self.pos[index]
            if seen >= rank:
                return float(min(high, max(low, bucket_value(index))))
        return float(high)

    def report(self) -> SketchReport:
        low, high = self.bounds()
        return SketchReport(
            count=self.count,
            min=None if low is None else float(low),
            mean=self.mean,
            p50=self.percentile(50),
            p95=self.percentile(95),
            max=None if high is None else float(high),
        )

    def histogram(self, bins: int) -> list[tuple[float, float, int]]:
        """(low, high, count) of `bins` equal-width bins over [min, max] (the last one closed);
        from buckets each bucket's count goes to the bin of its centre. A single value: one bin."""
        low, high = self.bounds()
        if low is None or high is None:
            return []
        if low == high:
            return [(float(low), float(high), self.count)]
        width = (high - low) / bins
        counts = [0] * bins

        def put(value: float, n: int) -> None:
            counts[min(bins - 1, max(0, int((value - low) / width)))] += n

        if self.exact is not None:
            for value, n in self.exact.items():
                put(value, n)
        else:
            for index, n in self.neg.items():
                put(-bucket_value(index), n)
            put(0.0, self.zeros)
            for index, n in self.pos.items():
                put(bucket_value(index), n)
        return [(low + i * width, low + (i + 1) * width, n) for i, n in enumerate(counts)]

    def distinct(self) -> list[tuple[float, int]] | None:
        """(value, count) in value order while exact, else None."""
        if self.exact is None:
            return None
        return [(float(v), self.exact[v]) for v in sorted(self.exact)]

    # -- snapshot ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"count": self.count, "non_finite": self.non_finite}
        if self.exact is not None:
            data["exact"] = [[v, self.exact[v]] for v in sorted(self.exact)]
            return data
        return data | {
            "min": self.min,
            "max": self.max,
            "sum": self.total.to_json(),
            "zeros": self.zeros,
            # JSON keys are strings; sorted so that equal states are equal text.
            "pos": {str(i): self.pos[i] for i in sorted(self.pos)},
            "neg": {str(i): self.neg[i] for i in sorted(self.neg)},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], exact_limit: int = EXACT_LIMIT) -> Sketch:
        sketch = cls(exact_limit)
        sketch.count = data["count"]
        sketch.non_finite = data.get("non_finite", 0)
        if "exact" in data:
            sketch.exact = Counter({v: n for v, n in data["exact"]})
            return sketch
        sketch.exact = None
        sketch.min, sketch.max = data["min"], data["max"]
        sketch.total = ExactSum.from_json(data["sum"])
        sketch.zeros = data["zeros"]
        sketch.pos = Counter({int(i): n for i, n in data["pos"].items()})
        sketch.neg = Counter({int(i): n for i, n in data["neg"].items()})
        return sketch

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sketch) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Sketch({self.to_json()!r})"
