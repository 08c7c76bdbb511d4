"""What a stage's quality report holds, decided once from the pipeline: its numeric columns, the
metric sets that run on it, its score columns; and the metric names gates may use there.

- Numeric columns: every top-level field of the stage's rows typed int, long, float or double
  (nullable or not, logical types included). Fields of nested records are not columns.
- Metric sets: those the pipeline names for the stage (`quality: {metric_sets: {stage: [...]}}`),
  else every registered set whose `needs` the stage's columns cover.
- Score columns: the pipeline's `quality: {score_columns: [...]}`, else every float/double column
  whose name ends in `score`. A stage's report carries a histogram of the score columns it adds
  (those none of its inputs has), which the HTML report and the Grafana export draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.coordinator.metrics import QUALITY_METRICS, metric_set
from shared.pipeline import SEEDS_STAGE, PipelineSpec

_NUMERIC = {"int": False, "long": False, "float": True, "double": True}
#: The generic numbers of every stage.
BASE_METRICS = ("total", "kept", "rejected", "p_keep")
#: Statistics of each numeric column, reported as <column>_<stat>.
COLUMN_STATS = ("count", "nulls", "min", "mean", "p50", "p95", "max")
#: A stage's flow from progress records and dead letters (what the funnel shows).
FLOW_METRICS = ("rows_in", "rows_out", "rows_dropped", "rows_errored", "dead_letters")
#: Names the design gives metrics under a different name: alias -> metric.
ALIASES = {"judge_score_mean": "teacher_score_mean"}


@dataclass(frozen=True)
class QualityLayout:
    #: (column, is float), in schema order
    numeric: tuple[tuple[str, bool], ...] = ()
    sets: tuple[str, ...] = ()
    #: score columns this stage adds: their histogram is part of the report
    scores: tuple[str, ...] = ()

    def metrics(self) -> list[str]:
        """Every metric name of the stage (what `min_<metric>`/`max_<metric>` may name), aliases
        included."""
        names = [*BASE_METRICS, *FLOW_METRICS]
        for name in self.sets:
            names += metric_set(name).metrics
        names += [f"{column}_{stat}" for column, _ in self.numeric for stat in COLUMN_STATS]
        names += [alias for alias, metric in ALIASES.items() if metric in names]
        return names

    def describe(self) -> str:
        """The metric names in one line, a column's statistics folded: `x_{count,...,max}`."""
        names = [*BASE_METRICS, *FLOW_METRICS]
        for name in self.sets:
            names += metric_set(name).metrics
        stats = ",".join(COLUMN_STATS)
        names += [f"{column}_{{{stats}}}" for column, _ in self.numeric]
        names += [alias for alias, metric in ALIASES.items() if metric in self.metrics()]
        return ", ".join(names)

    def to_json(self) -> dict[str, Any]:
        return {
            "numeric": [[column, is_float] for column, is_float in self.numeric],
            "sets": list(self.sets),
            "scores": list(self.scores),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QualityLayout:
        return cls(
            tuple((str(c), bool(f)) for c, f in data["numeric"]),
            tuple(data["sets"]),
            tuple(data.get("scores", ())),
        )


def _numeric_kind(avro_type: Any) -> bool | None:
    """True for float/double, False for int/long, None for anything else."""
    if isinstance(avro_type, str):
        return _NUMERIC.get(avro_type)
    if isinstance(avro_type, dict):
        return _numeric_kind(avro_type.get("type"))
    if isinstance(avro_type, list):
        members = [m for m in avro_type if m != "null"]
        return _numeric_kind(members[0]) if len(members) == 1 else None
    return None


def numeric_columns(fields: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    found = []
    for field in fields:
        kind = _numeric_kind(field["type"])
        if kind is not None:
            found.append((str(field["name"]), kind))
    return found


def _default_sets(columns: set[str]) -> list[str]:
    return [name for name in QUALITY_METRICS.names() if metric_set(name).needs <= columns]


def stage_layouts(
    spec: PipelineSpec, fields: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, QualityLayout], list[str]]:
    """Each stage's layout, and every problem of the pipeline's `quality:` section (one line each)."""
    problems: list[str] = []
    chosen = spec.quality.metric_sets
    for stage in chosen:
        if stage not in spec.stages:
            problems.append(f"quality.metric_sets: {stage!r} is no stage; stages: {', '.join(spec.stages)}")
    numeric = {stage: numeric_columns(f) for stage, f in fields.items()}
    floats = {c for cols in numeric.values() for c, is_float in cols if is_float}
    if spec.quality.score_columns is not None:
        known = {c for cols in numeric.values() for c, _ in cols}
        for column in spec.quality.score_columns:
            if column not in known:
                problems.append(
                    f"quality.score_columns: {column!r} is no numeric column of any stage; numeric "
                    f"columns: {', '.join(sorted(known)) or 'none'}"
                )
        scores = set(spec.quality.score_columns)
    else:
        scores = {c for c in floats if c.endswith("score")}
    layouts: dict[str, QualityLayout] = {}
    for stage, stage_fields in fields.items():
        columns = {str(f["name"]) for f in stage_fields}
        sets = _stage_sets(stage, chosen.get(stage), columns, problems)
        inputs = [] if stage == SEEDS_STAGE else spec.inputs(stage)
        upstream = {str(f["name"]) for i in inputs for f in fields.get(i, [])}
        added = tuple(c for c, _ in numeric[stage] if c in scores and c not in upstream)
        layout = QualityLayout(tuple(numeric[stage]), tuple(sets), added)
        names = layout.metrics()
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            problems.append(
                f"quality of stage {stage!r}: metric name(s) {', '.join(clashes)} given twice (a column "
                "statistic and a metric set's metric): rename the column or choose the sets"
            )
        layouts[stage] = layout
    return layouts, problems


def _stage_sets(stage: str, named: list[str] | None, columns: set[str], problems: list[str]) -> list[str]:
    if named is None:
        return _default_sets(columns)
    sets = []
    for name in named:
        try:
            found = metric_set(name)
        except (KeyError, TypeError) as exc:
            problems.append(f"quality.metric_sets of {stage}: {exc}")
            continue
        missing = sorted(found.needs - columns)
        if missing:
            problems.append(
                f"quality.metric_sets of {stage}: set {name!r} needs column(s) {', '.join(missing)}, "
                "which the stage's rows do not have"
            )
            continue
        sets.append(name)
    return sets
