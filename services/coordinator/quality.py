"""The quality report of a stage, for any task.

Generic, on every stage:
- total, kept, rejected, p_keep = kept / total; only `keep is False` rejects, so rows without
  `keep` (stages before a filter) or with `keep` None count as kept; `reject_reasons` counts
  rows per `reject_reason` (rows without one are not counted).
- `columns`: per numeric column of the stage's schema (services.coordinator.layout) count (non-null
  finite values), nulls, non_finite (NaN, ±inf), min, mean, p50, p95, max, from a mergeable
  `shared.sketch.Sketch` (exact while a column has at most 64 distinct values, else within 2.2 %);
  the stage's score columns also carry a `histogram`.
- the metrics of each metric set that runs on the stage (`metric_sets`; e.g. `sql`: exec and gold
  rates, error texts), flat in the report as before.

`metrics()` is every number gates may name on the stage: the generic four, each set's metrics
and `<column>_<stat>` for every numeric column (e.g. `teacher_score_mean`, `teacher_latency_ms_p95`).
A number the data cannot give (a rate of nothing, the mean of an empty column) is None, which a
gate reports as missing rather than as a failure of the data.
"""

from __future__ import annotations

from typing import Any

from services.coordinator.layout import COLUMN_STATS, QualityLayout
from services.coordinator.metrics import MetricSet, MetricValue, merge_tally, metric_set, rate, tally
from services.coordinator.metrics.sql import SqlMetrics
from shared.sketch import Sketch

#: Bins of a score column's histogram in the report (while its values are not few enough to list).
HISTOGRAM_BINS = 10
#: A score column with at most this many distinct values lists each one as its own bin.
HISTOGRAM_DISTINCT = 20

Row = dict[str, Any]


class QualityAgg:
    def __init__(self, layout: QualityLayout | None = None) -> None:
        self.layout = layout or QualityLayout()
        self.total = 0
        self.kept = 0
        self.reject_reasons: dict[str, int] = {}
        self.columns = {column: Sketch() for column, _ in self.layout.numeric}
        self.nulls = dict.fromkeys(self.columns, 0)
        self.sets: dict[str, MetricSet] = {name: metric_set(name)() for name in self.layout.sets}
        #: restored from a snapshot written before column statistics existed: rows seen before
        #: the restore are missing from `columns`
        self.columns_partial = False

    def add_rows(self, rows: list[Row]) -> None:
        # Column-wise: list comprehensions and Counter.update run in C, a per-row loop does not.
        self.total += len(rows)
        self.kept += len(rows) - [row.get("keep") for row in rows].count(False)
        for reason in [row.get("reject_reason") for row in rows]:
            if reason is not None:
                tally(self.reject_reasons, str(reason))
        for column, is_float in self.layout.numeric:
            values = [row.get(column) for row in rows]
            present = [v for v in values if v is not None]
            self.nulls[column] += len(values) - len(present)
            if is_float:
                self.columns[column].add_floats(present)
            else:
                self.columns[column].add_ints(present)
        for metrics in self.sets.values():
            metrics.add_rows(rows)

    def merge(self, other: QualityAgg) -> None:
        """Add `other` (the same stage's rows, elsewhere). Of another layout (a step of another
        version of the pipeline, statistics in a progress record) only the columns and sets both
        have are merged, and the report says its columns are partial: never an exception, which
        would stop the coordinator on that record at every restart."""
        self.total += other.total
        self.kept += other.kept
        merge_tally(self.reject_reasons, other.reject_reasons)
        for column, sketch in self.columns.items():
            theirs = other.columns.get(column)
            if theirs is not None and theirs.exact_limit == sketch.exact_limit:
                sketch.merge(theirs)
                self.nulls[column] += other.nulls[column]
        for name, metrics in self.sets.items():
            if name in other.sets and type(other.sets[name]) is type(metrics):
                metrics.merge(other.sets[name])
        self.columns_partial |= other.columns_partial or other.layout != self.layout

    # -- output --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, MetricValue]:
        values: dict[str, MetricValue] = {
            "total": self.total,
            "kept": self.kept,
            "rejected": self.total - self.kept,
            "p_keep": rate(self.kept, self.total),
        }
        for metrics in self.sets.values():
            values |= metrics.values()
        for column in self.columns:
            stats = self.column_report(column)
            values |= {f"{column}_{stat}": stats[stat] for stat in COLUMN_STATS}
        return values

    def column_report(self, column: str) -> dict[str, Any]:
        sketch = self.columns[column]
        stats = sketch.report()
        return {
            "count": stats["count"],
            "nulls": self.nulls[column],
            "non_finite": sketch.non_finite,
            "min": stats["min"],
            "mean": stats["mean"],
            "p50": stats["p50"],
            "p95": stats["p95"],
            "max": stats["max"],
        }

    def histogram(self, column: str) -> list[dict[str, float | int]]:
        """Each distinct value while there are few (low == high), else equal-width bins."""
        sketch = self.columns[column]
        distinct = sketch.distinct()
        if distinct is not None and len(distinct) <= HISTOGRAM_DISTINCT:
            return [{"low": v, "high": v, "count": n} for v, n in distinct]
        return [{"low": lo, "high": hi, "count": n} for lo, hi, n in sketch.histogram(HISTOGRAM_BINS)]

    def report(self, run_id: str, stage: str) -> dict[str, Any]:
        report: dict[str, Any] = {
            "run_id": run_id,
            "stage": stage,
            "total": self.total,
            "kept": self.kept,
            "rejected": self.total - self.kept,
            "p_keep": rate(self.kept, self.total),
            "reject_reasons": dict(sorted(self.reject_reasons.items())),
            "metric_sets": list(self.sets),
        }
        for metrics in self.sets.values():
            report |= metrics.values() | metrics.counts()
        columns: dict[str, Any] = {}
        for column in self.columns:
            columns[column] = self.column_report(column)
            if column in self.layout.scores:
                columns[column]["histogram"] = self.histogram(column)
        report["columns"] = columns
        if self.columns_partial:
            report["columns_partial"] = True
        return report

    # -- snapshot ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "layout": self.layout.to_json(),
            "total": self.total,
            "kept": self.kept,
            "reject_reasons": dict(sorted(self.reject_reasons.items())),
            "columns": {column: sketch.to_json() for column, sketch in self.columns.items()},
            "nulls": dict(self.nulls),
            "sets": {name: metrics.to_json() for name, metrics in self.sets.items()},
        }
        if self.columns_partial:
            data["columns_partial"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], layout: QualityLayout | None = None) -> QualityAgg:
        """From `to_json`; a snapshot of the fixed SQL report that came before takes `layout`
        (the stage's today; default the `sql` set alone) and keeps its counts."""
        if "layout" not in data:
            return cls._from_legacy(data, layout or QualityLayout(sets=("sql",)))
        agg = cls(QualityLayout.from_json(data["layout"]))
        agg.total, agg.kept = data["total"], data["kept"]
        agg.reject_reasons = dict(data["reject_reasons"])
        agg.columns = {column: Sketch.from_json(sketch) for column, sketch in data["columns"].items()}
        agg.nulls = dict(data["nulls"])
        agg.sets = {name: metric_set(name).from_json(value) for name, value in data["sets"].items()}
        agg.columns_partial = bool(data.get("columns_partial", False))
        return agg

    @classmethod
    def _from_legacy(cls, data: dict[str, Any], layout: QualityLayout) -> QualityAgg:
        agg = cls(layout)
        agg.total, agg.kept = data["total"], data["kept"]
        agg.reject_reasons = dict(data["reject_reasons"])
        if "sql" in agg.sets:
            agg.sets["sql"] = SqlMetrics.from_json(data)
        # The old teacher-score summary had no histogram: the columns start from here.
        agg.columns_partial = bool(agg.columns) and agg.total > 0
        return agg

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QualityAgg) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"QualityAgg({self.to_json()!r})"
