"""The per-run series the coordinator exports to Prometheus, as plain data (the service sets the
gauges). Per run, so a dashboard filtered by pipeline and run shows that run, never a sum of
lifetime counters over every run since the services started.

While a run goes on (after every commit that changed it):
- `fd_run_stage_rows{stage, kind}`: rows in, out, dropped, errored, stopped, dead_lettered at
  each stage, from the exactly-once progress sums (rate() of it is the run's throughput);
- `fd_run_latency_ms{stage, kind, quantile}`: per-row queue (`queue`) and end-to-end
  (`end_to_end`) latency p50/p95/p99; `fd_run_end_to_end_ms{quantile}` at the leaves.
Once it is done:
- `fd_run_quality{stage, metric, final}`: every stage's metrics (generic, flow and metric sets);
  `final="true"` on the run's final stage (the primary leaf), what the quality panels show;
- `fd_run_score{stage, column, stat}` and `fd_run_score_rows{stage, column, bin}`: statistics and
  histogram of each score column, at the stage that adds it (`bin` is the value itself while the
  column has few distinct values, else `low..high`).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.coordinator.layout import COLUMN_STATS
from services.coordinator.run_state import RunState
from services.coordinator.timing import row_latencies

ROW_KINDS = ("in", "out", "dropped", "errored", "stopped", "dead_lettered")
QUANTILES = (("0.5", 50.0), ("0.95", 95.0), ("0.99", 99.0))
#: Score statistics exported (the gateable `<column>_<stat>` names, without the counts).
SCORE_STATS = tuple(s for s in COLUMN_STATS if s not in ("count", "nulls"))


@dataclass(frozen=True)
class Series:
    metric: str
    labels: tuple[tuple[str, str], ...]
    value: float


def _bin_label(low: float, high: float) -> str:
    return f"{low:g}" if low == high else f"{low:.4g}..{high:.4g}"


def run_series(state: RunState, pipeline: str) -> list[Series]:
    """Every series of the run, labels in a fixed order (pipeline, run_id, then the metric's own)."""
    base = (("pipeline", pipeline), ("run_id", state.run_id))
    out: list[Series] = []
    dead = {stage: state.flow(stage)["dead_letters"] or 0 for stage in state.stages}
    for stage, stage_state in state.stages.items():
        counts = stage_state.progress.counts if stage_state.progress else None
        kinds = {
            "in": counts["rows_in"] if counts else None,
            "out": counts["rows_out"] if counts else stage_state.manifest.count,
            "dropped": counts["rows_dropped"] if counts else None,
            "errored": counts["rows_errored"] if counts else None,
            "stopped": counts["rows_stopped"] if counts else None,
            "dead_lettered": dead[stage],
        }
        for kind, value in kinds.items():
            if value is not None:
                out.append(Series("fd_run_stage_rows", (*base, ("stage", stage), ("kind", kind)), value))
        if stage_state.progress is not None:
            timing = stage_state.progress.timing
            for kind, sketch in (("queue", timing.queue), ("end_to_end", timing.e2e)):
                for label, q in QUANTILES:
                    value = sketch.percentile(q)
                    if value is not None:
                        labels = (*base, ("stage", stage), ("kind", kind), ("quantile", label))
                        out.append(Series("fd_run_latency_ms", labels, value))
    end_to_end = row_latencies()
    leaves = [s for s in (state.leaves or [state.final_stage or list(state.stages)[-1]]) if s in state.stages]
    for leaf in leaves:
        progress = state.stages[leaf].progress
        if progress is not None:
            end_to_end.merge(progress.timing.e2e)
    for label, q in QUANTILES:
        value = end_to_end.percentile(q)
        if value is not None:
            out.append(Series("fd_run_end_to_end_ms", (*base, ("quantile", label)), value))
    if state.verdict is not None:
        out += _finished_series(state, base)
    return out


def _finished_series(state: RunState, base: tuple[tuple[str, str], ...]) -> list[Series]:
    out: list[Series] = []
    final = state.final_stage if state.final_stage in state.stages else list(state.stages)[-1]
    for stage, stage_state in state.stages.items():
        quality = stage_state.quality
        column_metrics = {f"{c}_{s}" for c in quality.columns for s in COLUMN_STATS}
        flag = ("final", "true" if stage == final else "false")
        for metric, value in quality.metrics().items():
            # Column statistics of every column of every stage would be hundreds of series per
            # run: the score columns' go out below, the rest stay in quality.json.
            if value is not None and metric not in column_metrics:
                out.append(
                    Series("fd_run_quality", (*base, ("stage", stage), ("metric", metric), flag), value)
                )
        for column in quality.layout.scores:
            stats = quality.column_report(column)
            where = (*base, ("stage", stage), ("column", column))
            for stat in SCORE_STATS:
                if stats[stat] is not None:
                    out.append(Series("fd_run_score", (*where, ("stat", stat)), stats[stat]))
            for entry in quality.histogram(column):
                label = _bin_label(float(entry["low"]), float(entry["high"]))
                out.append(Series("fd_run_score_rows", (*where, ("bin", label)), entry["count"]))
    return out
