"""`length`: how long the `generation` texts of a stage are, in characters.

Runs by default on every stage whose rows have a `generation` column (its `needs`), or where a
pipeline names it (`quality: {metric_sets: {<stage>: [length]}}`). Gates may name its metrics,
e.g. `min_length_chars_mean: 20`. Null texts are not counted; empty ones are, and counted apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from services.coordinator.metrics import MetricSet, MetricValue, Row, rate

COLUMN = "generation"


@dataclass
class LengthMetrics(MetricSet):
    needs: ClassVar[frozenset[str]] = frozenset({COLUMN})
    # Prefixed with the set's name: a metric may not share a name with a column statistic.
    metrics: ClassVar[tuple[str, ...]] = (
        "length_texts",
        "length_chars_min",
        "length_chars_mean",
        "length_chars_max",
        "length_empty_rate",
    )

    texts: int = 0
    chars: int = 0
    empty: int = 0
    shortest: int | None = None
    longest: int | None = None

    def add_rows(self, rows: list[Row]) -> None:
        for row in rows:
            text = row.get(COLUMN)
            if not isinstance(text, str):
                continue
            n = len(text)
            self.texts += 1
            self.chars += n
            self.empty += n == 0
            self.shortest = n if self.shortest is None else min(self.shortest, n)
            self.longest = n if self.longest is None else max(self.longest, n)

    def merge(self, other: LengthMetrics) -> None:
        # Sums, minima and maxima: any merge order gives the same numbers (the coordinator
        # merges the stage's partial aggregates as they come, and restores them from snapshots).
        self.texts += other.texts
        self.chars += other.chars
        self.empty += other.empty
        self.shortest = _pick(min, self.shortest, other.shortest)
        self.longest = _pick(max, self.longest, other.longest)

    def values(self) -> dict[str, MetricValue]:
        return {
            "length_texts": self.texts,
            "length_chars_min": self.shortest,
            "length_chars_mean": self.chars / self.texts if self.texts else None,
            "length_chars_max": self.longest,
            "length_empty_rate": rate(self.empty, self.texts),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "chars": self.chars,
            "empty": self.empty,
            "shortest": self.shortest,
            "longest": self.longest,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LengthMetrics:
        return cls(**data)


def _pick(choose: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return a if b is None else b
    return choose(a, b)
