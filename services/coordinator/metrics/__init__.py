"""Quality metric sets: task-specific numbers a stage's quality report carries beyond the
generic ones (counts, keep rate, reject reasons, statistics of every numeric column).

A metric set is a class registered under a name in `QUALITY_METRICS`, by an entry point of the
group `fastdistill.quality_metrics` (how the built-in `sql` set is registered, and how a package
outside this repository adds one) or with `@QUALITY_METRICS.register(name)`. It declares the
columns it `needs`: by default a set runs on every stage whose rows have all of them; a pipeline
may name the sets of a stage instead (`quality: {metric_sets: {<stage>: [<set>, ...]}}`).

A set's aggregate folds rows, merges with another of its kind in any order with the same result
(the coordinator restores it from snapshots), and reports `metrics` (numbers: what gates
`min_<metric>`/`max_<metric>` refer to) and `tallies` (text -> rows, e.g. error messages).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

from shared.registry import Registry

Row = dict[str, Any]
MetricValue = int | float | None


class MetricSet(ABC):
    #: Columns a stage must have for this set to run there by default.
    needs: ClassVar[frozenset[str]]
    #: The numbers it reports, in report order (gate names are min_/max_ + these).
    metrics: ClassVar[tuple[str, ...]]
    #: Its count maps in the report (text -> rows).
    tallies: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def add_rows(self, rows: list[Row]) -> None: ...

    @abstractmethod
    def merge(self, other: Self) -> None: ...

    @abstractmethod
    def values(self) -> dict[str, MetricValue]:
        """Every name of `metrics`, None where this data cannot say (e.g. a rate of nothing)."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Every name of `tallies`, keys sorted."""
        return {}

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_json(cls, data: dict[str, Any]) -> Self: ...


QUALITY_METRICS: Registry[type[MetricSet]] = Registry("fastdistill.quality_metrics", "quality metric set")

#: Error texts can embed whole queries; the cap bounds the size of a tally's keys.
MAX_TEXT_CHARS = 200


def tally(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def merge_tally(into: dict[str, int], other: dict[str, int]) -> None:
    for key, n in other.items():
        tally(into, key, n)


def rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def metric_set(name: str) -> type[MetricSet]:
    """The registered set `name`; raises UnknownName (naming the known sets) or TypeError."""
    found = QUALITY_METRICS.get(name)
    if not (isinstance(found, type) and issubclass(found, MetricSet)):
        raise TypeError(f"quality metric set {name!r} is {found!r}, not a MetricSet subclass")
    return found
