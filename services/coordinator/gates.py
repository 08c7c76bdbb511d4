"""Quality gates: `min_<metric>` / `max_<metric>` thresholds on any stage's metrics.

`metric` is any metric of the stage (`QualityLayout.metrics()`: total, kept, rejected, p_keep,
the flow counts rows_in/rows_out/rows_dropped/rows_errored/dead_letters, each metric set's metrics
such as exec_pass_rate or exec_error_rate, and `<column>_<stat>` of every numeric column such as
teacher_score_mean or teacher_latency_ms_p95) or an alias the design uses for one
(`judge_score_mean` is `teacher_score_mean`). A gate naming anything else is a configuration
error, one line naming the stage's metrics, reported when the pipeline is loaded.

A failure reads `exec_pass_rate 0.1190 < min_exec_pass_rate 0.5000` (`>` for a max gate), with the
metric under the name the gate used and both numbers to 4 decimals; a metric the data cannot
give (None: a rate of nothing) fails as `<metric> missing (...)`. Failures come in configuration
order.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from services.coordinator.layout import ALIASES

Bound = Literal["min", "max"]


class GateConfigError(ValueError):
    pass


class GateVerdict(TypedDict):
    """The verdict as published on the gates topic and read back by the sink."""

    passed: bool
    failures: list[str]  # in configuration order


def split_gate_name(name: str, known: Collection[str]) -> tuple[Bound, str] | None:
    """("min", "total") for "min_total"; None for a key that names no gate on `known` metrics."""
    bound, _, metric = name.partition("_")
    if metric not in known:
        return None
    if bound == "min":
        return "min", metric
    if bound == "max":
        return "max", metric
    return None


@dataclass(frozen=True)
class Gate:
    name: str  # as configured, e.g. min_exec_pass_rate
    metric: str  # as named in the gate, e.g. exec_pass_rate or judge_score_mean
    bound: Bound
    threshold: float

    def failure(self, metrics: Mapping[str, object]) -> str | None:
        """A readable reason this gate fails on `metrics`, or None when it passes."""
        value = metrics.get(ALIASES.get(self.metric, self.metric))
        if not isinstance(value, int | float) or isinstance(value, bool):
            # A metric the stage cannot compute cannot vouch for the data: fail, and say why.
            return f"{self.metric} missing ({self.name} {self.threshold:.4f})"
        if self.bound == "min" and value < self.threshold:
            return f"{self.metric} {value:.4f} < {self.name} {self.threshold:.4f}"
        if self.bound == "max" and value > self.threshold:
            return f"{self.metric} {value:.4f} > {self.name} {self.threshold:.4f}"
        return None


def parse_gates(
    gates: Mapping[str, Any], known: Collection[str], *, stage: str = "", described: str | None = None
) -> list[Gate]:
    """The gates of a plain mapping (a stage's thresholds) on the metrics `known` there; raises
    GateConfigError in one line: the unknown names and the stage's metrics (`described`, else
    `known` listed), or the first bad threshold."""
    unknown = [str(name) for name in gates if split_gate_name(str(name), known) is None]
    if unknown:
        where = f" on stage {stage}" if stage else ""
        raise GateConfigError(
            f"unknown quality gate(s) {', '.join(unknown)}{where}: a gate is min_<metric> or "
            f"max_<metric>; metrics{where}: {described or ', '.join(known)}"
        )
    parsed = []
    for name, value in gates.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise GateConfigError(f"{name}: the threshold must be a finite number, not {value!r}")
        bound, metric = split_gate_name(name, known) or ("min", "")
        parsed.append(Gate(name, metric, bound, float(value)))
    return parsed


def known_of(metrics: Mapping[str, object]) -> list[str]:
    """The metric names of a metrics mapping, with the aliases of those present."""
    return [*metrics, *(alias for alias, metric in ALIASES.items() if metric in metrics)]


def evaluate_gates(
    gates: Mapping[str, Any] | list[Gate], metrics: Mapping[str, object], *, stage: str = ""
) -> GateVerdict:
    """The verdict of `gates` on a stage's metrics (every name of its layout, None where missing).

    A plain mapping is parsed against the metrics' names first, so a bad one raises GateConfigError.
    """
    parsed = gates if isinstance(gates, list) else parse_gates(gates, known_of(metrics), stage=stage)
    failures = [f for gate in parsed if (f := gate.failure(metrics)) is not None]
    return GateVerdict(passed=not failures, failures=failures)
